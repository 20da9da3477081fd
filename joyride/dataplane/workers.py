"""One data-plane worker per rx queue (issue 17), under the one control plane.

Each worker is a thread that runs its own ``DataPlane``: its queue's AF_XDP socket, the
flows whose frames arrive there, its own epoll, timer wheel and application sockets.
The threads are C's (``workers.c``, ``dp_workers_*`` in ``dataplane.h``): no Python runs
in them and they never take the GIL; they share nothing, so the data path takes no
lock. Flows stay on their worker; listeners are every worker's (``listen`` goes to each
plane).

The control plane (the service loop's thread: the engine, the TCP core, the pumps)
touches a plane only while its worker is parked. ``run`` is the one hand-over, and it
stops the world: it lets every worker run, sleeps until one of them has work for
Python (frames it declined, flows it handed back) or the control plane's own
descriptors wake, then asks every worker to park (a write to the eventfd its loop
watches: the loop ends its round and returns) and waits until each has. Everything
Python does between two ``run`` calls therefore sees every plane at rest, exactly as
with one plane in the loop's own thread; a futex word per worker, written with release
and read with acquire, orders the two sides (``workers.c``). Python runs rarely (issue
16's gate: at most one call per hundred requests), so stopping every worker for it
costs little; the design for many queues is in docs/dataplane.md, "Workers".

Where a flow lives: the worker whose queue its frames arrive on (the NIC's RSS or, on
veth, the peer's transmit hash). The control plane hands a connection to the plane that
last gave it a segment or gave it back (``note_rx``, ``handbacks``). When a peer moves a
flow to another queue (Linux re-picks its transmit queue whenever nothing is in
flight), the new worker does not know it and declines its segments; the engine then
takes the flow back from the old worker (``Engine.strays``) and gives it to the new one.

This class offers ``DataPlane``'s interface, routed: per flow to its worker, per
listener to all, statistics summed with a per-worker breakdown. The workers share one
table of shared-memory channels (``dp_share_channels``, ``channels.c``): an
application's arena is mapped once, a claim is taken by whichever worker runs the
connection, and a flow that moves keeps its channel.
"""

from __future__ import annotations

import os
import types
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, Final

from joyride.dataplane.plane import (
    Born,
    BornView,
    ChannelState,
    ConnectPolicy,
    DataPlane,
    Failure,
    ListenSpec,
    Released,
    ffi,
    lib,
)
from joyride.engine.engine import Engine
from joyride.engine.nic import Buffer, RxDescriptors
from joyride.tcp.connection import TcpConnection
from joyride.wire.frame import tcp_flow_of

#: Flows whose worker is remembered for their next hand-over to C; older ones go to the
#: first worker that gives them a frame again.
HOME_MEMORY: Final = 1 << 16

Key = tuple[bytes, int, bytes, int]

#: Counters of what the planes share (their table of channels): each plane reports the
#: whole, so they are not summed.
SHARED_COUNTERS: Final = ("chan_bell_pushes", "chan_bell_wakes", "chan_tokens")


class Workers:
    """Several planes, one per queue, each run by its worker; ``DataPlane``'s interface."""

    def __init__(self, planes: Sequence[DataPlane]) -> None:
        if not planes:
            raise ValueError("workers need at least one plane")
        self.planes = list(planes)
        self.mtu = self.planes[0].mtu
        self.has_door = False  # embedded mode's bell is a single plane's
        group = lib.dp_workers_new(ffi.new("struct dp *[]", [p.ptr for p in self.planes]),
                                   len(self.planes))
        if group == ffi.NULL:
            err = ffi.errno
            raise OSError(err, f"starting {len(self.planes)} data-plane workers: "
                               f"{os.strerror(err)}")
        # Parked threads never touch their planes, so the planes and the group may be
        # freed in either order; close() frees the group at once.
        self._group: Any = ffi.gc(group, lib.dp_workers_free)
        self._stat = ffi.new("struct dp_worker_stats *")
        self._home: OrderedDict[Key, int] = OrderedDict()
        self._rx_index = 0  # the plane whose declined frames the engine reads now
        self.stops = 0  # the world stopped for Python
        self.migrated = 0  # flows a peer moved to another queue, taken to its worker

    # -- the loop ----------------------------------------------------------------------

    def watch(self, fd: int) -> None:
        """``run`` returns when ``fd`` is readable (the control plane's own poller)."""
        rc = int(lib.dp_workers_watch(self._group, fd))
        if rc < 0:
            raise OSError(-rc, f"watching the control plane's poller: {os.strerror(-rc)}")

    def run(self, timeout: float | None) -> int:
        """Let every worker run until one has work for Python, the watched descriptor is
        readable or ``timeout`` seconds pass (0: each runs a round); then park them
        all (``dp_workers_run``, without the GIL). The DP_WAKE_* bits of all of them."""
        ms = -1 if timeout is None else max(0, int(timeout * 1000 + 0.999))
        rc = int(lib.dp_workers_run(self._group, ms))
        self.stops += 1
        if rc < 0:
            raise OSError(-rc, f"a data-plane worker's loop: {os.strerror(-rc)}")
        return rc

    def worker_counts(self, index: int) -> dict[str, int]:
        """How often worker ``index``'s loop was let run, and returned asking for Python."""
        lib.dp_workers_stats(self._group, index, self._stat)
        return {"runs": int(self._stat.runs), "asks": int(self._stat.asks)}

    def door_wakes(self, on: bool) -> None:
        pass  # no door: has_door is False

    def close(self) -> None:
        """End the workers' threads (parked: ``run`` always leaves them so)."""
        if self._group is not None:
            ffi.release(self._group)  # dp_workers_free, now
            self._group = None

    # -- flows ---------------------------------------------------------------------------

    def note_rx(self, keys: Iterable[Key]) -> None:
        """Segments of these 4-tuples just came from the plane the engine reads (a timer's
        work is not among them): that is where C should run their flows."""
        for key in keys:
            self._remember(key, self._rx_index)

    def _remember(self, key: Key, index: int) -> None:
        home = self._home
        home[key] = index
        home.move_to_end(key)
        if len(home) > HOME_MEMORY:
            home.popitem(last=False)

    def _owner(self, conn: TcpConnection) -> DataPlane | None:
        for plane in self.planes:
            if plane.owns(conn):
                return plane
        return None

    def owns(self, conn: TcpConnection) -> bool:
        return self._owner(conn) is not None

    def adopt(self, conn: TcpConnection, src_mac: bytes, dst_mac: bytes,
              app_fd: int = -1, channel: ChannelState | None = None) -> bool:
        index = self._home.get(Engine.key_of(conn), 0)
        return self.planes[index].adopt(conn, src_mac, dst_mac, app_fd, channel)

    def connect(self, config: Any, key: Key, src_mac: bytes, dst_mac: bytes, iss: int,
                ts_offset: int, *, uid: int, claims: bool, now: float) -> tuple[int, int]:
        """On the first worker's plane, whose queue a reply most often reaches; one that
        reaches another worker is forwarded while the flow is in SYN-SENT
        (dp_forward_declined), as a passive open's ACK is."""
        got = self.planes[0].connect(config, key, src_mac, dst_mac, iss, ts_offset,
                                     uid=uid, claims=claims, now=now)
        self._remember(key, 0)
        return got

    def failures(self) -> list[Failure]:
        return [f for plane in self.planes for f in plane.failures()]

    # OP_CONNECT answered in C: by the first worker's plane, where active opens go.

    def sessions_listen(self, fd: int) -> None:
        self.planes[0].sessions_listen(fd)

    def sessions(self) -> list[tuple[int, bytes]]:
        return self.planes[0].sessions()

    def connect_policy(self, policy: ConnectPolicy | None) -> None:
        self.planes[0].connect_policy(policy)

    def connect_route(self, ip: bytes, local_ip: bytes, dst_mac: bytes,
                      expires: float) -> None:
        self.planes[0].connect_route(ip, local_ip, dst_mac, expires)

    def connect_routes_clear(self) -> None:
        self.planes[0].connect_routes_clear()

    def port_hold(self, port: int, delta: int) -> None:
        self.planes[0].port_hold(port, delta)

    def release(self, conn: TcpConnection, now: float | None = None) -> Released | None:
        plane = self._owner(conn)
        return plane.release(conn, now) if plane is not None else None

    def handbacks(self, now: float | None = None) -> list[Released | Born]:
        out: list[Released | Born] = []
        for index, plane in enumerate(self.planes):
            for got in plane.handbacks(now):
                self._remember(got.key if isinstance(got, Born) else Engine.key_of(got.conn), index)
                out.append(got)
        return out

    def claim(self, key: Key) -> Born | None:
        for index, plane in enumerate(self.planes):
            born = plane.claim(key)
            if born is not None:
                self._remember(key, index)
                return born
        return None

    def peek_key(self, key: Key) -> Any:
        for plane in self.planes:
            tcb = plane.peek_key(key)
            if tcb is not None:
                return tcb
        return None

    def reuse_time_wait(self, key: Key, now: float) -> int | None:
        for plane in self.planes:
            iss = plane.reuse_time_wait(key, now)
            if iss is not None:
                return iss
        return None

    def born_flows(self) -> list[BornView]:
        return [view for plane in self.planes for view in plane.born_flows()]

    def ended_counts(self) -> Any:
        """The planes' ``struct dp_counts`` summed, field by field."""
        counts = [plane.ended_counts() for plane in self.planes]
        return types.SimpleNamespace(**{
            name: sum(int(getattr(c, name)) for c in counts)
            for name, _ in ffi.typeof("struct dp_counts").fields})

    def peek(self, conn: TcpConnection) -> Any:
        plane = self._owner(conn)
        return plane.peek(conn) if plane is not None else None

    def view(self, conn: TcpConnection) -> dict[str, Any] | None:
        plane = self._owner(conn)
        return plane.view(conn) if plane is not None else None

    @property
    def flows(self) -> int:
        return sum(plane.flows for plane in self.planes)

    def unsettled(self) -> bool:
        return any(plane.unsettled() for plane in self.planes)

    # -- listening (every worker's) ------------------------------------------------------

    def listen(self, spec: ListenSpec, *, syn_backlog: int) -> None:
        for plane in self.planes:
            plane.listen(spec, syn_backlog=syn_backlog)

    def unlisten(self, port: int) -> None:
        for plane in self.planes:
            plane.unlisten(port)

    def set_path_mss(self, ip: bytes, mss: int, expires: float) -> None:
        for plane in self.planes:
            plane.set_path_mss(ip, mss, expires)

    # -- statistics and the tap ----------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        each = [plane.stats() for plane in self.planes]
        total: dict[str, Any] = {name: sum(s[name] for s in each) for name in each[0]}
        for name in SHARED_COUNTERS:  # every plane reports the one table's
            total[name] = each[0][name]
        total["stops"] = self.stops
        total["migrated"] = self.migrated
        total["workers"] = [{**s, **self.worker_counts(i)} for i, s in enumerate(each)]
        return total

    def port_counters(self, index: int) -> dict[str, int]:
        """Queue ``index`` (in the service's order) is a port of worker ``index % n``,
        its ``index // n``-th: the service deals the queues out in turn."""
        n = len(self.planes)
        return self.planes[index % n].port_counters(index // n)

    def capture(self, taps: Any) -> None:
        """``taps``: a ``tap.Taps`` with one tap per worker (None: stop), as a tap has one
        producer."""
        for index, plane in enumerate(self.planes):
            plane.capture(None if taps is None else taps.members[index])

    # -- the NIC Python shares (DeclineNic) ----------------------------------------------

    def _declining(self) -> DataPlane:
        """The plane whose declined frames the engine reads: the one it is reading while
        any are left (``DeclineNic``'s cursor is into that plane's buffer, which it
        clears once every frame is taken), else the first with some."""
        current = self.planes[self._rx_index]
        if current.declined_count():
            return current
        for index, plane in enumerate(self.planes):
            if plane.declined_count():
                self._rx_index = index
                return plane
        return self.planes[self._rx_index]

    def declined(self) -> RxDescriptors | None:
        return self._declining().declined()

    def declined_count(self) -> int:
        return self.planes[self._rx_index].declined_count()

    def declined_clear(self) -> None:
        self.planes[self._rx_index].declined_clear()

    def transmit(self, frames: Sequence[Buffer]) -> int:
        """Python's frames leave by the queue of their flow's worker (the world is
        stopped while Python runs): a flow's frames then leave in order whoever sends
        them, and that plane's GSO ordering mark (``py_mark``, dataplane.h) covers
        them. A frame of no known flow goes by the first worker's queue."""
        by_plane: dict[int, list[Buffer]] = {}
        for frame in frames:
            key = tcp_flow_of(frame)
            index = self._home.get(key, 0) if key is not None else 0
            by_plane.setdefault(index, []).append(frame)
        return sum(self.planes[index].transmit(batch) for index, batch in by_plane.items())

    def kick(self) -> None:
        for plane in self.planes:
            plane.kick()
