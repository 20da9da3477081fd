"""The service's data path: the engine over every rx queue, applications, pumps.

One ``Datapath`` per service. The service loop waits on everything at once (the
queues' AF_XDP descriptors, the application socket, every connection's socket, the
engine's next deadline) and calls ``step`` after each wake-up; ``step`` does a bounded
amount of work and never blocks on an application: every socket is non-blocking, a
full application socket simply waits for EVENT_WRITE while its bytes stay in TCP.

Listeners (``OP_LISTEN``) are registrations of the applications' own unix listeners;
a connection is delivered by connecting a fresh unix socket, bound to the name that
spells its 4-tuple, to one of them (``protocol`` explains why). Registrations are
keyed by port; several (forked or separate same-uid processes) share one engine
listener round robin.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import ipaddress
import itertools
import logging
import os
import select
import selectors
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from joyride import sockopts
from joyride.dataplane.plane import (
    CLAIM_WAIT,
    DP_SYN_SENT,
    UNRUNNABLE_STATES,
    WAKE_DOOR,
    WAKE_SESSION,
    Born,
    ChannelState,
    ConnectPolicy,
    DataPlane,
    DeclineNic,
    ListenSpec,
    Released,
    any_readable,
)
from joyride.dataplane.workers import Workers
from joyride.engine.engine import Engine, EngineError
from joyride.engine.network import NetworkView
from joyride.engine.nic import MultiNic, Nic
from joyride.service import apps, pathmtu, protocol
from joyride.service.pump import BUDGET, Pump
from joyride.steer.ports import PortSet
from joyride.tcp.config import TcpConfig
from joyride.tcp.connection import (
    TcpConnection,
    hot_counters,
    names_segment_in_flight,
    path_mss,
)
from joyride.tcp.counters import Counters
from joyride.tcp.failure import failure_errno
from joyride.tcp.listener import Listener
from joyride.tcp.state import TcpState
from joyride.wire.addr import packed, text
from joyride.wire.icmp import TooBig
from joyride.wire.seq import Seq

log = logging.getLogger(__name__)

POLLS_PER_STEP: Final = 16  # engine batches per step before applications get a turn
ACCEPTS_PER_STEP: Final = 64
SPIN: Final = 0.0002  # seconds to keep polling after traffic (waking a vCPU: ~60 µs)
RETRY_DELIVERY: Final = 0.002  # an application's full backlog is retried this often
SWEEP_PERIOD: Final = 1.0  # seconds between checks for listeners that went away
# A path MSS learnt from a router's report holds this long for the destination's new
# connections (the kernel's route PMTU: net.ipv4.route.mtu_expires, 10 minutes), for
# at most this many destinations (the oldest go first).
PATH_MSS_TTL: Final = 600.0
PATH_MSS_KEPT: Final = 4096
PENDING_PER_PORT: Final = 64  # accepted connections awaiting a backlog slot
MAX_WAITING_SESSIONS: Final = 256  # connected applications that have not sent a request
FLOWS_SHOWN: Final = 16  # connections detailed by ``stats`` (the rest are only counted)
FAILED_KEPT: Final = 1024  # failed connections whose error OP_GETINFO may still report
# How long C may answer connects to a destination after the control plane last did
# (plane.connect_route): the control plane then checks it again, and refreshes its
# next hop's neighbour entry as its own connects there do.
CONNECT_ROUTE_TTL: Final = 1.0
# TCP states whose FIN is out and not yet acknowledged (a graceful stop waits for them).
_FIN_UNACKED: Final = frozenset({TcpState.FIN_WAIT_1, TcpState.CLOSING, TcpState.LAST_ACK})
FIONREAD: Final = 0x541B  # SIOCINQ: bytes waiting in a socket's receive queue


def pop_due(watch: dict[Any, float], now: float) -> list[Any]:
    """The keys of ``watch`` whose time is ``now`` or earlier, taken out of it."""
    due = [key for key, when in watch.items() if when <= now]
    for key in due:
        del watch[key]
    return due


def _remote_address(ip: bytes) -> bool:
    """May the service connect to ``ip`` for an application (``OP_CONNECT``)? Not to
    loopback, the unspecified or a multicast address, nor to a v4-mapped one (an
    AF_INET6 socket reaching an IPv4 peer: left to the kernel)."""
    address = ipaddress.ip_address(ip)
    return not (address.is_loopback or address.is_unspecified or address.is_multicast
                or (isinstance(address, ipaddress.IPv6Address)
                    and address.ipv4_mapped is not None))


@dataclass
class Registration:
    """An application's unix listener for one TCP port."""

    name: str
    port: int
    uid: int
    verified: bool = False  # SO_PEERCRED of the listener checked on a delivery
    reuseport: bool | None = False  # SO_REUSEPORT set (None: unknown, re-adopted)
    channels: bool = False  # its application claims ring mode (protocol.FLAG_CHANNELS)
    # The application socket's family (names spell its connections in that form) and
    # the IP versions of the connections it takes (protocol.ParsedName.families).
    family: int = socket.AF_INET
    families: frozenset[int] = frozenset({4})
    # Socket options set on the listener (OP_SETOPT), for what it is delivered.
    options: list[tuple[int, int, int]] = field(default_factory=list)


@dataclass
class PortListeners:
    port: int
    uid: int
    listener: Listener
    registrations: list[Registration] = field(default_factory=list)
    pending: deque[TcpConnection] = field(default_factory=deque)  # accepted, undelivered

    @property
    def families(self) -> frozenset[int]:
        """The IP versions some registration takes connections of."""
        return frozenset().union(*(r.families for r in self.registrations))
    rr: int = 0
    retry_at: float = 0.0
    # The C data plane opens this port's connections itself (docs/dataplane.md,
    # "Connections born in C") with this specification, or None: Python does.
    in_c: ListenSpec | None = None


class Datapath:
    def __init__(self, nics: Sequence[Nic], network: NetworkView, *, ports: PortSet,
                 ephemeral: PortSet, app_socket: socket.socket, group: int | None,
                 config: TcpConfig | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 plane: DataPlane | Workers | None = None,
                 icmp: Sequence[pathmtu.ReportSocket] = ()) -> None:
        self.nic = MultiNic(nics)
        # Path MTU reports, read from raw ICMP sockets (joyride.service.pathmtu).
        self.icmp = list(icmp)
        # The C data plane (docs/dataplane.md), when given: it owns the queues and runs
        # established connections; the engine sees only what it declines. ``Workers``:
        # one plane per queue, each in its own thread (joyride.dataplane.workers).
        self.plane = plane
        self.workers = plane if isinstance(plane, Workers) else None
        # The plane whose shared-memory channels the pumps use. Workers share one table
        # of channels (dp_share_channels), which the pumps reach through the first
        # plane, as they touch it only while every worker is parked.
        self.chan_plane = plane if isinstance(plane, DataPlane) else \
            plane.planes[0] if isinstance(plane, Workers) else None
        self.network = network
        self.ports = ports
        self.ephemeral = ephemeral
        self.group = group
        span = next(iter(ephemeral.ranges()), None)
        ephemeral_range = range(span[0], span[1] + 1) if span else range(0)
        tcp = config or TcpConfig(mss=max(88, min(1460, network.mtu - 40)), nodelay=True)
        self.engine = Engine(self.nic if plane is None else DeclineNic(plane), network, tcp,
                             ephemeral_ports=ephemeral_range,
                             clock=clock)
        self.clock = clock
        if plane is not None:
            self.engine.strays = self._stray
        self.app_socket = app_socket
        self.counters: Counters = Counters()
        self.by_port: dict[int, PortListeners] = {}
        self.pumps: dict[TcpConnection, Pump] = {}
        # Blocking OP_CONNECTs in their handshake: the session to answer, and whether
        # ring mode is granted (protocol.FLAG_CHANNELS).
        self.connecting: dict[TcpConnection, tuple[socket.socket, bool]] = {}
        self._sel: selectors.BaseSelector | None = None
        self._ready: set[Pump] = set()
        self._door_waiters: set[Pump] = set()  # Pump.door_waits: _door_pumps
        # Their sockets, watched for the application's hang-up alone (EPOLLRDHUP, not
        # EPOLLIN: the bytes there are a blocked writer's filler), which selectors
        # cannot say: a close with bytes unread must reset at once, not when the peer
        # next opens its window (_watch_hangup).
        self._hangups = select.epoll()
        self._hangup_pumps: dict[int, Pump] = {}
        self._waiting: dict[socket.socket, float] = {}  # sessions before their request
        self._names = itertools.count()
        self._busy_until = 0.0
        self._claim_waiting: set[Pump] = set()  # pumps whose delivery waits for a claim
        self._next_sweep = 0.0
        # OP_GETINFO: errors of failed connections the application has not read yet
        # (by connection name), and the live connections whose error it has read.
        self._failed: OrderedDict[str, tuple[int, int]] = OrderedDict()  # (errno, uid)
        self._routes_in_c = False  # C answers connects too (_connects_in_c)
        # Options the owners of active opens C runs set while those were in SYN-SENT
        # (_apply_pending); C keeps each one's owner (dp_tcb.app_uid).
        self._pending_options: dict[tuple[bytes, int, bytes, int],
                                    list[tuple[int, int, int]]] = {}
        self._error_reported: set[TcpConnection] = set()
        self.pump_budget = BUDGET  # chunks each way per pump per step
        # A process that registered a listener, watched through a pidfd: its exit
        # sweeps the registrations at once (``_on_listener_exit``), not a second later.
        self._listener_pids: dict[int, int] = {}  # pid -> pidfd
        # Connections in C with an MSS probe to make (RFC 4821 §7), and when.
        self._pmtu_watch: dict[TcpConnection, float] = {}
        # Destinations' learnt path MSS (with options) and until when (``learn_path``).
        self._paths: OrderedDict[bytes, tuple[int, float]] = OrderedDict()

    # -- wiring into the service loop ------------------------------------------------------

    def register(self, sel: selectors.BaseSelector) -> None:
        self._sel = sel
        if self.plane is not None:
            # Its loop returns when one of our descriptors wakes (an epoll selector is one).
            self.plane.watch(sel.fileno())  # type: ignore[attr-defined]
        else:
            for fd in self.nic.filenos():
                sel.register(fd, selectors.EVENT_READ, self._on_queue)
        if self.plane is not None:
            # Its loop accepts the sessions and answers the connects it can
            # (sessions.c); the rest come here (WAKE_SESSION, _sessions_from_c).
            self._connects_in_c()
            self.plane.sessions_listen(self.app_socket.fileno())
        else:
            sel.register(self.app_socket, selectors.EVENT_READ, self._on_app_socket)
        for source in self.icmp:
            sel.register(source.sock, selectors.EVENT_READ, self._on_icmp(source))
        sel.register(self._hangups.fileno(), selectors.EVENT_READ, self._on_hangups)
        self.adopt_listeners()

    def timeout(self, ceiling: float) -> float:
        """How long the loop may sleep: 0 while traffic flows, else until a deadline."""
        now = self.clock()
        if self._ready or (now < self._busy_until and self.plane is None):
            # Python spins briefly after traffic (a sleeping vCPU is slow to wake);
            # with the C data plane the spinning, if any, is its loop's.
            return 0.0
        wait = ceiling
        deadline = self.engine.next_deadline()
        if deadline is not None:
            wait = min(wait, max(0.0, deadline - now))
        if any(pl.pending for pl in self.by_port.values()):
            wait = min(wait, RETRY_DELIVERY)
        for pump in self._claim_waiting:
            wait = min(wait, max(0.0, pump.channel.claim_by - now))
        return wait

    def wait(self, sel: selectors.BaseSelector, timeout: float) -> list[Any]:
        """The service loop's wait: the selector's, or, with the C data plane, its loop
        (which serves established connections meanwhile) until Python has work."""
        if self.plane is None:
            return sel.select(timeout)
        door_pumps = self._door_pumps()
        if self.plane.has_door:
            # This process's own application rings a door, not its sockets (embedded
            # mode, joyride.dataplane.hub): Python's ring-mode pumps hear it through C.
            self.plane.door_wakes(bool(door_pumps))
        events = sel.select(0)
        if events:
            # C gets its round even when Python has work: a descriptor that stays
            # ready (an application's socket at EOF) must not keep the rx ring unread,
            # since the ACKs that Python's connections wait for may be in it.
            woke = self.plane.run(0)
        else:
            woke = self.plane.run(timeout)
            events = sel.select(0)
        if woke & WAKE_DOOR and door_pumps:
            self._ready.update(door_pumps)
            self.counters["door_wakes"] += 1
        if woke & WAKE_SESSION:
            self._sessions_from_c()
        return events

    def _connects_in_c(self) -> None:
        """Let C answer OP_CONNECTs alone (sessions.c) on what this control plane
        would answer them with (_start_connect, _connect_in_c): this configuration,
        these keys, this ephemeral range, this --group; the ports the engine uses are
        held from it, and each destination is told once the control plane has opened a
        connection there itself (``connect_route``)."""
        assert self.plane is not None
        engine, plane = self.engine, self.plane
        ports = engine.ephemeral_ports
        if not ports or engine.config.keepalive:
            return  # every connect goes the engine's way (_connect_in_c says no)
        lo, hi = ports[0], ports[-1]
        try:
            plane.connect_policy(ConnectPolicy(
                engine.config, self.network.mac, *engine.connect_keys(), (lo, hi),
                self.group,
                channels=self.chan_plane is not None and not self.chan_plane.has_door))
        except OSError as exc:  # a configuration C does not run: Python answers all
            log.info("connects stay the control plane's: %s", exc)
            return
        self._routes_in_c = True

        def port_watch(port: int, delta: int) -> None:
            if lo <= port <= hi:
                try:
                    plane.port_hold(port, delta)
                except OSError:  # a release never held: a bug, counted (never a crash)
                    self.counters["port_hold_error"] += 1

        held_listeners: set[int] = set()

        def listener_watch(port: int, families: frozenset[int]) -> None:
            # Told as a listener starts, changes its families, or stops (none).
            if families and port not in held_listeners:
                held_listeners.add(port)
                port_watch(port, 1)
            elif not families and port in held_listeners:
                held_listeners.discard(port)
                port_watch(port, -1)

        for key in [*engine.connections, *engine.time_wait]:
            port_watch(key[1], 1)
        for port, families in engine.listener_families.items():
            listener_watch(port, families)
        engine.port_watch = port_watch
        engine.serving_listeners.append(listener_watch)
        engine.address_listeners.append(lambda _addresses: plane.connect_routes_clear())

    def _sessions_from_c(self) -> None:
        """The sessions C accepted and left to us: answered as our own accept's."""
        assert self.plane is not None
        for fd, raw in self.plane.sessions():
            session = socket.socket(fileno=fd)
            if raw:
                self._answer(session, raw)
            else:
                self._handle_session(session)

    def _door_pumps(self) -> list[Pump]:
        """The pumps a door's ring is for (C wakes Python for it: ``door_wakes``). With
        a door of this process's own (embedded mode, joyride.dataplane.hub), whose
        application rings it rather than its sockets: every ring-mode pump Python runs
        (their connections handed back by C). Else the pumps asleep on their arena's
        door while their writer is blocked (``Pump.door_waits``)."""
        if self.plane is not None and self.plane.has_door:
            return [p for p in self.pumps.values() if p.channel.chan and not p.conn.parked]
        live = [p for p in self._door_waiters
                if p.door_waits and not p.conn.parked and self.pumps.get(p.conn) is p]
        if len(live) != len(self._door_waiters):
            for pump in self._door_waiters.difference(live):
                self._watch_hangup(pump, False)
            self._door_waiters = set(live)
        return live

    def _watch_hangup(self, pump: Pump, on: bool) -> None:
        """Watch a door-waiting pump's socket for its hang-up alone (``_hangups``)."""
        fd = pump.sock.fileno()
        if on == (self._hangup_pumps.get(fd) is pump):
            return
        if on:
            with contextlib.suppress(OSError):  # a socket closed meanwhile: nothing to hear
                self._hangups.register(fd, select.EPOLLRDHUP)
                self._hangup_pumps[fd] = pump
        elif self._hangup_pumps.pop(fd, None) is not None:
            with contextlib.suppress(OSError):
                self._hangups.unregister(fd)

    def _on_hangups(self, _mask: int) -> None:
        """An application whose pump waits on the door hung up: the pump looks (its
        idle step sees the hang-up and takes the normal way, drain and all)."""
        for fd, _events in self._hangups.poll(0):
            pump = self._hangup_pumps.get(fd)
            if pump is None:
                continue
            self._watch_hangup(pump, False)  # level-triggered: heard once is enough
            self._ready.add(pump)
            self.counters["door_hangups"] += 1

    def _on_queue(self, _mask: int) -> None:
        pass  # step() polls every queue

    def _on_icmp(self, source: pathmtu.ReportSocket) -> Callable[[int], None]:
        def ready(_mask: int) -> None:
            # A bug in handling a report is counted and logged, never fatal (the
            # selector loop calls this, outside step()'s guard).
            try:
                pathmtu.drain(source, self.path_too_big, self._count)
            except Exception:
                self.counters["internal_error"] += 1
                if self.counters["internal_error"] <= 3:
                    log.exception("path MTU report failed (counted; further failures "
                                  "are logged only three times)")
        return ready

    def _count(self, name: str) -> None:
        self.counters[name] += 1

    def path_too_big(self, report: TooBig) -> None:
        """A router's "packet too big" about one of our segments: its connection (taken
        from C first: the MSS is the control plane's to change) decides whether to
        believe it (``TcpConnection.path_too_big``)."""
        key = (report.local_ip, report.local_port, report.remote_ip, report.remote_port)
        conn = self.engine.connections.get(key)
        if (conn is None or conn.parked) and self.plane is not None:
            # A flow C runs is checked where it is (RFC 5927 §4.1) before it is moved:
            # a report that names no segment in flight must not take flows out of C.
            tcb = self.plane.peek_key(key)
            if tcb is not None and not names_segment_in_flight(
                    Seq(report.seq), Seq(int(tcb.snd_una)), Seq(int(tcb.snd_nxt))):
                self.counters["path_too_big_stale"] += 1
                return
            conn = self._connection(key, 0)  # C opened it: it is Python's from now on
        if conn is None:
            self.counters["path_too_big_no_connection"] += 1
            return
        if conn.parked:
            self._reclaim(conn)
        if conn.path_too_big(report.mtu, Seq(report.seq), self.clock()):
            self.counters["path_too_big_applied"] += 1
            self.learn_path(conn.remote_ip, path_mss(report.mtu, len(conn.remote_ip) == 16))
        self.engine.mark(conn)

    def learn_path(self, ip: bytes, mss: int) -> None:
        """Remember ``ip``'s path MSS for ``PATH_MSS_TTL``, as the kernel keeps a route's
        PMTU: the destination's next connections start at it (C's too) instead of each
        losing its first full-sized flight to the router."""
        expires = self.clock() + PATH_MSS_TTL
        self._paths[ip] = (mss, expires)
        self._paths.move_to_end(ip)
        while len(self._paths) > PATH_MSS_KEPT:
            self._paths.popitem(last=False)
        if self.plane is not None:
            self.plane.set_path_mss(ip, mss, expires)

    def _fit_learnt_path(self, conn: TcpConnection) -> None:
        """An established connection of Python's starts at its destination's learnt
        path MSS, if any (C's own births are fitted in C: ``dp_path_mss``)."""
        learnt = self._paths.get(conn.remote_ip)
        now = self.clock()
        if learnt is not None and now < learnt[1] and conn.clamp_to_path(learnt[0], now):
            self.counters["path_mss_learnt_applied"] += 1

    def _on_pump(self, pump: Pump) -> Callable[[int], None]:
        def ready(_mask: int) -> None:
            self._ready.add(pump)
        return ready

    # -- one iteration ---------------------------------------------------------------------

    def step(self) -> None:
        """One bounded iteration; a bug in it is counted and logged, never fatal."""
        self.counters["steps"] += 1
        try:
            self._step()
        except Exception:
            self.counters["internal_error"] += 1
            if self.counters["internal_error"] <= 3:
                log.exception("data path iteration failed (counted; further failures "
                              "are logged only three times)")
            with contextlib.suppress(Exception):
                self.nic.release()

    def _step(self) -> None:
        touched: set[TcpConnection] = set()
        busy = False
        if self.plane is not None:
            busy = self._take_back(touched)
        for _ in range(POLLS_PER_STEP):
            activity = self.engine.poll()
            if not activity.connections and not activity.listeners:
                break
            if self.workers is not None:
                self.workers.note_rx(activity.received)  # where C should run them
            busy = True
            touched |= activity.connections
        now = self.clock()
        self._expire_claims(now)
        for pl in list(self.by_port.values()):
            if pl.listener.accept_queue_len or pl.pending:
                self._accept(pl, now)
        for conn in list(self.connecting):
            if conn in touched or conn.state is TcpState.CLOSED:
                self._connect_progress(conn)
        for conn in touched:
            pump = self.pumps.get(conn)
            if pump is not None:
                self._ready.add(pump)
            found = conn.take_found_path_mss()
            if found is not None:  # a black hole's search ended: the destination's news
                self.learn_path(conn.remote_ip, found)
                self.counters["path_mss_found_learnt"] += 1
        if self._ready:
            busy = True
        ready, self._ready = self._ready, set()
        again: list[Pump] = []
        for pump in ready:
            if self.pumps.get(pump.conn) is not pump or pump.conn.parked:
                continue
            if pump.service(self.pump_budget):
                again.append(pump)
            self.engine.mark(pump.conn)
            self._settle(pump)
        # A pump that ran out of budget goes first next iteration; no event would wake
        # it (a peer that already sent its FIN sends nothing more).
        self._ready.update(again)
        self.engine.flush()
        if self.plane is not None:
            for pump in ready:
                self._hand_to_plane(pump)
        if busy:
            self._busy_until = self.clock() + SPIN
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_PERIOD
            self._take_failures()
            self._apply_pending()
            self.sweep_listeners()
            self._pmtu_reclaims(now)

    def _pmtu_reclaims(self, now: float) -> None:
        """Take back from C the connections whose MSS probe may go now (RFC 4821 §7:
        Python probes; it hands the connection back once the probe is answered)."""
        for conn in pop_due(self._pmtu_watch, now):
            pump = self.pumps.get(conn)
            if pump is not None and conn.parked and conn.pmtu_due is not None:
                self._reclaim(conn)
                self.counters["plane_reclaim_pmtu"] += 1
                self._ready.add(pump)

    def _expire_claims(self, now: float) -> None:
        """Deliveries that waited for a claim long enough go on as streams."""
        for pump in list(self._claim_waiting):
            if not pump.channel.claim_wait or self.pumps.get(pump.conn) is not pump:
                self._claim_waiting.discard(pump)
            elif now >= pump.channel.claim_by:
                pump.claim_expired()
                self._claim_waiting.discard(pump)
                self.counters["claim_deadlines"] += 1
                self._ready.add(pump)

    def _take_back(self, touched: set[TcpConnection]) -> bool:
        """Connections the C data plane gave back: the engine and their pumps run them
        again (an application's EOF or close it saw becomes the pump's). True if any."""
        assert self.plane is not None
        back = self.plane.handbacks(self.clock())
        for got in back:
            if isinstance(got, Born):
                self._take_born(got, touched)
                continue
            self.counters[f"plane_handback_{got.reason}"] += 1
            self._back_from_plane(got)
            touched.add(got.conn)
        return bool(back)

    def _back_from_plane(self, got: Released) -> None:
        """A flow C gave back (or Python took back): the engine runs it again, and its
        pump takes what C saw of the application meanwhile: the channel's mode (C may
        have read its claim), its EOF or close."""
        assert self.plane is not None
        conn = got.conn
        self.engine.adopt_back(conn)
        pump = self.pumps.get(conn)
        if pump is None:
            if self.chan_plane is not None:
                for chan in (got.channel.chan, got.channel.revert_chan):
                    if chan:
                        self.chan_plane.chan_release(chan)  # its pump is gone
            return
        pump.channel = got.channel
        if pump.channel.claim_wait:
            self._claim_waiting.add(pump)
        if got.app_gone:
            pump.app_closed()
        elif got.app_eof:
            pump.app_shut_down()
        self._ready.add(pump)

    def _take_born(self, got: Born, touched: set[TcpConnection]) -> None:
        """A connection the C data plane opened itself comes to Python: it becomes a
        ``TcpConnection`` of the engine, with a pump for the application channel C
        made, or, when no listener took it, the port's next one to deliver."""
        self.counters[f"plane_handback_{got.reason}"] += 1
        tcb = got.tcb
        fd = int(tcb.app_fd)
        pl = self.by_port.get(int(tcb.local_port))
        if int(tcb.tcp_state) in UNRUNNABLE_STATES:
            # Half-open or finished (a claim or the service's close): nothing to run.
            if fd >= 0:
                os.close(fd)
            self.counters["plane_born_dropped"] += 1
            return
        conn = TcpConnection.from_hot(self.born_config(pl), tcb, got.rcv, got.snd,
                                      self.clock())
        self.engine.adopt_born(conn)
        touched.add(conn)
        self.counters["plane_born_taken"] += 1
        if fd < 0:
            if pl is not None and not tcb.app_eof:
                pl.pending.append(conn)  # undelivered: _accept tries again
            elif not tcb.app_eof:
                conn.abort()  # its port is gone (RFC 9293 §3.10.7.1)
                self.engine.mark(conn)
            return
        owner = self._born_owner(Engine.key_of(conn), tcb)
        uid = owner if owner is not None else -1
        pump = Pump(conn, socket.socket(fileno=fd), uid, plane=self.chan_plane,
                    channel=ChannelState.of(tcb))
        if pump.channel.claim_wait:
            self._claim_waiting.add(pump)
        pump.app_eof = bool(tcb.app_eof)
        pump.fin_sent_to_app = bool(tcb.fin_to_app)
        self.pumps[conn] = pump
        if got.reason == "app_gone":
            pump.app_closed()
        self._ready.add(pump)

    def born_config(self, pl: PortListeners | None) -> TcpConfig:
        """The configuration the connections C opens on ``pl``'s port run with."""
        return pl.in_c.config if pl is not None and pl.in_c is not None else self.engine.config

    def _connection(self, key: tuple[bytes, int, bytes, int], uid: int
                    ) -> TcpConnection | None:
        """The engine's connection for a 4-tuple, taking it from C first if C opened
        it (socket options and OP_GETINFO are the control plane's) and ``uid`` (the
        asker) may: root or the port's owner, so nobody else can move it out of C."""
        conn = self.engine.connections.get(key)
        if conn is None and self.plane is not None and uid in (0, self._born_owner(key)):
            born = self.plane.claim(key)
            if born is not None:
                self._take_born(born, set())
                conn = self.engine.connections.get(key)
        return conn

    def _born_owner(self, key: tuple[bytes, int, bytes, int], tcb: Any = None) -> int | None:
        """Who owns a connection C opened itself: an active open's application (its
        OP_CONNECT's uid, which C keeps in the flow), else the owner of the listener its
        port delivers to. ``tcb``: the flow's, when C has let it go (its table no longer
        has it)."""
        if tcb is None and self.plane is not None:
            tcb = self.plane.peek_key(key)
        if tcb is not None and tcb.active:
            return int(tcb.app_uid)
        pl = self.by_port.get(key[1])
        return pl.uid if pl is not None else None

    def _sync_listener(self, pl: PortListeners) -> None:
        """Let C open the port's connections while every registration is verified and
        they share their options (one TCP configuration), else take them back."""
        if pl.registrations:
            self.engine.set_families(pl.listener, pl.families)  # the steering follows
        if self.plane is None:
            return
        regs = pl.registrations
        spec: ListenSpec | None = None
        if regs and all(r.verified for r in regs) and all(
                r.options == regs[0].options for r in regs):
            config = sockopts.apply(self.engine.config, regs[0].options) \
                if regs[0].options else self.engine.config
            if not config.keepalive and config.congestion_control in ("cubic", "newreno"):
                # Each name with the families it takes; an AF_INET6 socket's connections
                # from IPv4 peers are named v4-mapped.
                spec = ListenSpec(pl.port, tuple(r.name for r in regs), config,
                                  pl.listener.ts_offset, pl.listener.isn_generator.key,
                                  tuple(r.channels for r in regs),
                                  tuple(r.family == socket.AF_INET6 for r in regs),
                                  tuple(r.families for r in regs))
        if spec == pl.in_c:
            return
        if spec is None:
            self.plane.unlisten(pl.port)
            self.counters["plane_unlisten"] += 1
        else:
            self.plane.listen(spec, syn_backlog=spec.config.syn_backlog)
            self.counters["plane_listen"] += 1
        pl.in_c = spec

    def _hand_to_plane(self, pump: Pump) -> None:
        """Give an idle pump's connection to the C data plane when it can run it."""
        assert self.plane is not None and self._sel is not None
        conn = pump.conn
        if self.pumps.get(conn) is not pump or pump.app_gone:
            return
        if pump.app_eof and (pump.channel.chan or conn.state is not TcpState.FIN_WAIT_1):
            # After its application's EOF a connection goes to C only to send the rest
            # and its FIN (FIN-WAIT-1), and only with a stream channel (C must not read
            # a descriptor at EOF; a ring channel's EOF is in the ring, not in the TCB).
            return
        # Why a live connection stays in Python, counted (``joyride stats``).
        blocker = ("pump_buffered" if pump.buffered else
                   "output_pending" if self.engine.marked(conn) else conn.hot_blocker())
        if blocker is not None:
            self.counters[f"plane_stay_{blocker}"] += 1
            return
        network = self.engine.network
        mac = network.neighbour(network.next_hop(conn.remote_ip), self.clock())
        if mac is None or not self.plane.adopt(conn, network.mac, mac, pump.fileno(),
                                               pump.channel):
            return
        self._claim_waiting.discard(pump)  # C's deadline now
        if pump.mask:
            self._sel.unregister(pump.sock)
            pump.mask = 0
        self.counters["plane_adopted"] += 1
        due = conn.pmtu_due
        if due is not None:
            # C does not probe the MSS: take the connection back when a probe may go
            # (checked each sweep; due already, but no probe possible now: next sweep).
            self._pmtu_watch[conn] = max(due, self.clock() + SWEEP_PERIOD)

    def _settle(self, pump: Pump) -> None:
        """Finish a pump that is done, or point the selector at what it waits for."""
        assert self._sel is not None
        waiting = pump.door_waits and not pump.conn.parked and not pump.finished
        if waiting:
            self._door_waiters.add(pump)
        else:
            self._door_waiters.discard(pump)
        self._watch_hangup(pump, waiting)
        if pump.conn.parked:
            return  # the C data plane watches its socket
        if pump.sock_replaced:
            # Its application left ring mode: the selector's registration went with the
            # old socket (unregister only forgets it), so the new one registers afresh.
            pump.sock_replaced = False
            if pump.mask:
                self._sel.unregister(pump.sock)
                pump.mask = 0
        if pump.finished:
            if pump.mask:
                self._sel.unregister(pump.sock)
            self.pumps.pop(pump.conn, None)
            self._keep_error(pump)
            pump.close()
            self.engine.mark(pump.conn)
            self.counters["connections_closed"] += 1
            return
        want = pump.wanted()
        if want == pump.mask:
            return
        if pump.mask == 0:
            self._sel.register(pump.sock, want, self._on_pump(pump))
        elif want == 0:
            self._sel.unregister(pump.sock)
        else:
            self._sel.modify(pump.sock, want, self._on_pump(pump))
        pump.mask = want

    def _start_pump(self, conn: TcpConnection, sock: socket.socket, uid: int,
                    pid: int = 0, channel: ChannelState | None = None) -> None:
        pump = Pump(conn, sock, uid, pid, plane=self.chan_plane, channel=channel)
        self.pumps[conn] = pump
        if pump.channel.claim_wait:
            self._claim_waiting.add(pump)
        self._ready.add(pump)  # data may have arrived before the application had it

    # -- listening -------------------------------------------------------------------------

    def register_listener(self, name: str, port: int, ip: bytes,
                          creds: apps.Credentials, reuseport: bool = False,
                          channels: bool = False) -> int:
        """OP_LISTEN: 0, an errno, or NOT_ACCELERATED. ``channels``: the application
        will claim ring mode, granted when the C data plane (which keeps channels)
        runs (``channels_granted``)."""
        if port not in self.ports:
            return protocol.NOT_ACCELERATED
        if any(ip) and protocol.engine_address(ip) not in self.engine.local_addresses:
            # Loopback, another interface's address, or a v4-mapped one not ours.
            return protocol.NOT_ACCELERATED
        parsed = protocol.parse_name(name)
        if parsed is None or parsed.kind != "listener" or parsed.local[1] != port \
                or parsed.pid != creds.pid or packed(parsed.local[0]) != ip:
            self.counters["listen_bad_name"] += 1
            return errno.EINVAL
        families = parsed.families
        if not apps.may_bind(creds, port):
            self.counters["listen_denied_privileged_port"] += 1
            return errno.EACCES
        pl = self.by_port.get(port)
        if pl is not None and pl.uid not in (-1, creds.uid):
            self.counters["listen_denied_other_uid"] += 1
            return errno.EADDRINUSE
        # The same name is the same listener: adopt_listeners may have found it already
        # (an in-process service's first scan can race the application's first listen).
        # Listeners clash only where their families meet (an IPv4 one and a v6only one
        # share a port without SO_REUSEPORT, as on Linux).
        others = [] if pl is None else [r for r in pl.registrations
                                        if r.name != name and r.families & families]
        if pl is not None and others and not (
                reuseport and all(r.reuseport is not False for r in others)):
            # Linux shares a listening port only among SO_REUSEPORT sockets (of one
            # uid, checked above). Registrations whose listener is gone do not count.
            alive = apps.listening_names()
            if alive is not None:
                pl.registrations = [r for r in pl.registrations if r.name in alive]
            if any(r.name != name and r.families & families for r in pl.registrations):
                self.counters["listen_denied_in_use"] += 1
                return errno.EADDRINUSE
        if pl is None:
            pl = PortListeners(port, creds.uid, self.engine.listen(port, families=families))
            self.by_port[port] = pl
        pl.uid = creds.uid
        # Verified on its first delivery: SO_PEERCRED of the listener must be this pid's.
        pl.registrations = [r for r in pl.registrations if r.name != name]
        pl.registrations.append(Registration(name, port, creds.uid, reuseport=reuseport,
                                             channels=channels and self.chan_plane is not None,
                                             family=parsed.family, families=families))
        self.counters["listen_registered"] += 1
        self._watch_listener_pid(creds.pid)
        self._sync_listener(pl)  # unverified until its first delivery: Python delivers
        return 0

    def _watch_listener_pid(self, pid: int) -> None:
        """Sweep the registrations when process ``pid`` exits. The periodic sweep
        (``SWEEP_PERIOD``) finds a listener its application closed; a process that dies
        (a crash, a restart) would otherwise leave its port accepting for up to that
        long, C completing handshakes that its delivery then resets, where the kernel
        would refuse the SYN. The exit is only a trigger: the sweep looks at the unix
        listeners themselves, which a forked child or an ``exec`` may keep alive."""
        if pid <= 0 or pid in self._listener_pids or self._sel is None:
            return
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # gone already (the sweep finds that), or no pidfd here
            return
        self._listener_pids[pid] = fd
        self._sel.register(fd, selectors.EVENT_READ, self._on_listener_exit(pid))

    def _on_listener_exit(self, pid: int) -> Callable[[int], None]:
        def exited(_mask: int) -> None:
            fd = self._listener_pids.pop(pid, -1)
            if fd >= 0:
                self._unwatch_fd(fd)
            self.counters["listener_process_exits"] += 1
            # The sweep runs in this iteration's step (which counts a failure rather
            # than ending the loop), once for every exit of the batch.
            self._next_sweep = 0.0
        return exited

    def _unwatch_fd(self, fd: int) -> None:
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(fd)
        with contextlib.suppress(OSError):
            os.close(fd)

    def channels_granted(self, name: str, port: int) -> bool:
        """Whether the listener ``name`` registered on ``port`` may claim ring mode."""
        pl = self.by_port.get(port)
        return pl is not None and any(r.name == name and r.channels for r in pl.registrations)

    def set_option(self, request: protocol.Request, creds: apps.Credentials) -> int:
        """OP_SETOPT: 0, an errno, or NOT_ACCELERATED (not an option of ours)."""
        option = protocol.SETOPT_OPTIONS.get(request.port)
        if option is None:
            return protocol.NOT_ACCELERATED
        entry = (*option, protocol.setopt_value(request.ip))
        parsed = protocol.parse_name(request.name)
        if parsed is None:
            return errno.EINVAL
        # A failed active open's options go with it, before this one's are kept: C may
        # have answered a new connect of the same 4-tuple since.
        self._take_failures()
        if request.name in self._failed:
            return 0  # a reset socket takes options, as Linux's; none reaches a newer one
        try:
            sockopts.changes(*entry)  # the value's range, before anything is changed
        except OSError as exc:
            return exc.errno or errno.EINVAL
        if parsed.kind == "listener":
            pl = self.by_port.get(parsed.local[1])
            reg = next((r for r in pl.registrations if r.name == request.name), None) \
                if pl is not None else None
            if reg is None:
                return errno.ENOTCONN
            owner = reg.uid if reg.uid != -1 else (creds.uid if parsed.pid == creds.pid else -1)
            if creds.uid not in (0, owner):
                return errno.EPERM
            reg.options.append(entry)
            self.counters["setopt_listener"] += 1
            assert pl is not None
            self._sync_listener(pl)
            return 0
        key = parsed.key()
        conn = self._connection(key, creds.uid)
        pump = self.pumps.get(conn) if conn is not None else None
        if conn is None or pump is None:
            return self._option_before_answer(key, entry, creds)
        if creds.uid not in (0, pump.uid):
            return errno.EPERM
        self._apply_options(conn, [entry])
        self.counters["setopt_connection"] += 1
        return 0

    def _option_before_answer(self, key: tuple[bytes, int, bytes, int],
                              entry: tuple[int, int, int], creds: apps.Credentials) -> int:
        """An option set on an active open C runs that no SYN-ACK has answered yet
        (SYN-SENT: C's alone): applied once C has the connection established
        (``_apply_pending``), as Linux applies what is set while it connects. ENOTCONN
        for any other connection the control plane does not hold."""
        tcb = self.plane.peek_key(key) if self.plane is not None else None
        if tcb is None or not tcb.active or int(tcb.tcp_state) != DP_SYN_SENT:
            return errno.ENOTCONN
        if creds.uid not in (0, int(tcb.app_uid)):
            return errno.EPERM
        if sockopts.changes(*entry).keys() - {"nodelay"}:
            # (Nagle's algorithm is off in the service whatever TCP_NODELAY says.)
            self._pending_options.setdefault(key, []).append(entry)
        self.counters["setopt_before_answer"] += 1
        return 0

    def _apply_pending(self) -> None:
        """Options set while an active open C runs was in SYN-SENT: once it is
        established, the connection comes to Python with them (as a listener's does
        when its owner sets one); once it is gone, they are too."""
        for key in list(self._pending_options):
            tcb = self.plane.peek_key(key) if self.plane is not None else None
            if tcb is not None and int(tcb.tcp_state) == DP_SYN_SENT:
                continue
            entries = self._pending_options.pop(key)
            # C's still, or Python's already (claimed meanwhile: a stray segment, a
            # question of its owner), or gone.
            conn = self._connection(key, 0) if tcb is not None else \
                self.engine.connections.get(key)
            if conn is not None and conn in self.pumps:
                self._apply_options(conn, entries)
                self.counters["setopt_connection"] += len(entries)

    def get_info(self, request: protocol.Request, creds: apps.Credentials
                 ) -> tuple[int, protocol.Info | None, TcpConnection | None]:
        """OP_GETINFO: (status, info, connection): what a kernel socket would report."""
        self._take_failures()
        parsed = protocol.parse_name(request.name)
        if parsed is None or parsed.kind != "connection" or parsed.remote is None:
            return errno.EINVAL, None, None
        # A name is one connection's (its pid and number): a failed one is looked up by
        # it first, since a newer connection may hold the same 4-tuple by now.
        failed = self._failed.get(request.name)
        conn = self._connection(parsed.key(), creds.uid) if failed is None else None
        pump = self.pumps.get(conn) if conn is not None else None
        if conn is None or pump is None:
            # Gone: its error once, as SO_ERROR reports it, to its owner only.
            if failed is None:
                return errno.ENOTCONN, None, None
            if creds.uid not in (0, failed[1]):
                return errno.EPERM, None, None
            del self._failed[request.name]
            self.counters["getinfo_gone_error"] += 1
            gone = sockopts.closed_info(failed[0])
            return 0, protocol.Info(gone.so_error, 0, 0, 0, gone.tcp_info), None
        if creds.uid not in (0, pump.uid):
            return errno.EPERM, None, None
        info = self.describe(conn, pump)
        so_error = info.so_error
        if so_error:
            if conn in self._error_reported:
                so_error = 0  # reported once, as Linux clears sk_err when it is read
            self._error_reported.add(conn)
        return 0, protocol.Info(so_error, min(info.outq, 0xFFFFFFFF),
                                min(info.notsent, 0xFFFFFFFF),
                                min(info.window_clamp, 0xFFFFFFFF), info.tcp_info), conn

    def describe(self, conn: TcpConnection, pump: Pump | None = None
                 ) -> sockopts.ConnectionInfo:
        """``conn`` as a kernel socket reports it (``TCP_INFO``, queues): from C's TCB
        while the C data plane runs it (the parked object is stale), else Python's.
        ``pump``: its application channel, whose bytes the service has not taken yet
        count as queued: its shared tx ring's in ring mode, else the socket's unread
        bytes (in ring mode those are only doorbells and filler, docs/channels.md)."""
        hot: Any = None
        hot_queued: tuple[int, int] | None = None
        if self.plane is not None and conn.parked:
            hot = self.plane.peek(conn)
            view = self.plane.view(conn)
            if view is not None:
                hot_queued = (int(view["send_queue"]), int(view["recv_queue"]))
        app_queued = 0
        if pump is not None:
            app_queued = len(pump.to_tcp) if pump.to_tcp is not None else 0
            chan = pump.channel.chan if hot is None else int(hot.chan)
            if chan and pump.plane is not None:
                app_queued += pump.plane.chan_tx_queued(chan)
            else:
                with contextlib.suppress(OSError):
                    raw = fcntl.ioctl(pump.sock.fileno(), FIONREAD, bytes(4))
                    app_queued += int.from_bytes(raw[:4], "little", signed=True)
        return sockopts.connection_info(conn, pmtu=self.network.mtu, app_queued=app_queued,
                                        hot=hot, hot_queued=hot_queued)

    def _keep_error(self, pump: Pump) -> None:
        """A finished connection that failed: keep its error for one OP_GETINFO."""
        conn = pump.conn
        reported = conn in self._error_reported
        self._error_reported.discard(conn)
        code = failure_errno(conn.error)
        if not code or reported:
            return
        try:
            name = pump.sock.getsockname()
        except OSError:
            return
        text = name.lstrip(b"\0").decode("ascii", "replace") if isinstance(name, bytes) \
            else str(name).lstrip("\0")
        self._failed[text] = (code, pump.uid)
        while len(self._failed) > FAILED_KEPT:
            self._failed.popitem(last=False)

    def _apply_options(self, conn: TcpConnection, options: list[tuple[int, int, int]]
                       ) -> None:
        if self.plane is not None and conn.parked:
            self._reclaim(conn)  # options are the control plane's: take it back first
        conn.reconfigure(sockopts.apply(conn.config, options), self.clock())
        self.engine.mark(conn)

    def adopt_listeners(self) -> None:
        """Re-adopt the listeners applications kept across a service restart."""
        for name in sorted(apps.listening_names() or ()):
            parsed = protocol.parse_name(name)
            if parsed is None or parsed.kind != "listener":
                continue
            port = parsed.local[1]
            if port not in self.ports:
                continue
            pl = self.by_port.get(port)
            if pl is None:
                # The owner is unknown until the first delivery checks SO_PEERCRED.
                pl = PortListeners(port, -1, self.engine.listen(port,
                                                               families=parsed.families))
                self.by_port[port] = pl
            pl.registrations.append(Registration(name, port, -1, reuseport=None,
                                                 family=parsed.family,
                                                 families=parsed.families))
            self._watch_listener_pid(parsed.pid)
            self._sync_listener(pl)  # its families, at once (an IPv4 and a v6only one)
            self.counters["listen_adopted"] += 1
            log.info("adopted listener %s", name)

    def sweep_listeners(self) -> None:
        """Forget registrations whose unix listener is gone (the application closed it)."""
        if self.by_port:
            alive = apps.listening_names()
            if alive is None:
                self.counters["listener_sweep_unreadable"] += 1
                return  # /proc/net/unix unreadable now: the next sweep decides
            for pl in list(self.by_port.values()):
                pl.registrations = [r for r in pl.registrations if r.name in alive]
                if not pl.registrations:
                    self._drop_port(pl)
                else:
                    self._sync_listener(pl)
        # Stop watching processes none of whose listeners remain registered.
        owners = {parsed.pid for pl in self.by_port.values() for r in pl.registrations
                  for parsed in (protocol.parse_name(r.name),) if parsed is not None}
        for pid in [p for p in self._listener_pids if p not in owners]:
            self._unwatch_fd(self._listener_pids.pop(pid))

    def _drop_port(self, pl: PortListeners) -> None:
        pl.registrations.clear()
        self._sync_listener(pl)  # C stops opening its connections first
        for conn in pl.pending:
            conn.abort()
            self.engine.mark(conn)
        pl.pending.clear()
        self.engine.unlisten(pl.listener)
        self.by_port.pop(pl.port, None)

    def _accept(self, pl: PortListeners, now: float) -> None:
        for _ in range(ACCEPTS_PER_STEP):
            if len(pl.pending) >= PENDING_PER_PORT:
                break
            conn = self.engine.accept(pl.listener)
            if conn is None:
                break
            pl.pending.append(conn)
            self.counters["accepted"] += 1
        if now < pl.retry_at:
            return
        while pl.pending:
            conn = pl.pending[0]
            if conn.state is TcpState.CLOSED:
                pl.pending.popleft()
                continue
            outcome = self._deliver(pl, conn)
            if outcome == "busy":
                pl.retry_at = now + RETRY_DELIVERY
                return
            pl.pending.popleft()
            if outcome == "none":
                conn.abort()  # RFC 9293 §3.10.7.1: nobody listens any more
                self.engine.mark(conn)
                self.counters["accept_no_listener"] += 1
        if not pl.registrations:
            self._drop_port(pl)
        else:
            self._sync_listener(pl)  # registrations gone or verified meanwhile

    def _deliver(self, pl: PortListeners, conn: TcpConnection) -> str:
        """Connect ``conn`` to a registered listener of its family: "ok", "busy" or
        "none"."""
        tried = 0
        version = 6 if len(conn.local_ip) == 16 else 4
        while tried < sum(version in r.families for r in pl.registrations):
            reg = pl.registrations[pl.rr % len(pl.registrations)]
            pl.rr += 1
            if version not in reg.families:
                continue
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK
                                 | socket.SOCK_CLOEXEC)
            try:
                sock.bind(protocol.abstract(self._conn_name(conn, reg.family)))
                sock.connect(protocol.abstract(reg.name))
            except BlockingIOError:
                sock.close()
                tried += 1
                self.counters["deliver_backlog_full"] += 1
                continue
            except OSError:
                sock.close()
                pl.registrations.remove(reg)  # closed by the application
                continue
            if not self._verify(pl, reg, sock):
                sock.close()
                pl.registrations.remove(reg)
                continue
            if reg.options:
                self._apply_options(conn, reg.options)
            self._fit_learnt_path(conn)
            owner = protocol.parse_name(reg.name)  # its pid was checked by _verify
            channel = ChannelState(claim_check=reg.channels, claim_wait=reg.channels,
                                   claim_by=self.clock() + CLAIM_WAIT)
            self._start_pump(conn, sock, reg.uid, owner.pid if owner is not None else 0,
                             channel)
            self.counters["delivered"] += 1
            if version == 6:
                self.counters["delivered_ipv6"] += 1
            return "ok"
        return "busy" if any(version in r.families for r in pl.registrations) else "none"

    def _verify(self, pl: PortListeners, reg: Registration, sock: socket.socket) -> bool:
        """The listener's owner (``SO_PEERCRED``, fixed at its ``listen``) may have it."""
        if reg.verified:
            return True
        owner = apps.peer_credentials(sock)
        parsed = protocol.parse_name(reg.name)
        ok = (parsed is not None and parsed.pid == owner.pid
              and apps.may_connect(owner, self.group) and apps.may_bind(owner, pl.port)
              and (pl.uid in (-1, owner.uid)))
        if not ok:
            self.counters["deliver_denied"] += 1
            log.warning("listener %s (uid %d) may not receive port %d", reg.name, owner.uid,
                        pl.port)
            return False
        pl.uid = owner.uid
        reg.uid = owner.uid
        reg.verified = True
        self._sync_listener(pl)  # verified: C may deliver to it from now on
        return True

    def _conn_name(self, conn: TcpConnection, family: int) -> str:
        """The name spelling ``conn``'s 4-tuple as an application socket of ``family``
        reports it (an IPv4 peer of an AF_INET6 socket is v4-mapped)."""
        return protocol.connection_name(
            (protocol.socket_address(conn.local_ip, family), conn.local_port),
            (protocol.socket_address(conn.remote_ip, family), conn.remote_port),
            os.getpid(), next(self._names))

    # -- application requests --------------------------------------------------------------

    def _on_app_socket(self, _mask: int) -> None:
        for _ in range(32):
            try:
                session, _ = self.app_socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: count, let the app retry
                self.counters["app_accept_error"] += 1
                log.warning("accepting an application failed: %s", exc)
                return
            self._handle_session(session)

    def _handle_session(self, session: socket.socket) -> None:
        """Answer the session's request now, or once it arrives (never wait for it)."""
        session.setblocking(False)
        try:
            raw = session.recv(protocol.REQUEST.size + 1)
        except BlockingIOError:
            if len(self._waiting) >= MAX_WAITING_SESSIONS:
                oldest = next(iter(self._waiting))
                self._forget_session(oldest)
                self.counters["app_session_dropped"] += 1
            assert self._sel is not None
            self._waiting[session] = self.clock()
            self._sel.register(session, selectors.EVENT_READ,
                               lambda _mask: self._session_readable(session))
            return
        except OSError:
            session.close()
            return
        self._answer(session, raw)

    def _session_readable(self, session: socket.socket) -> None:
        self._forget_session(session, close=False)
        try:
            raw = session.recv(protocol.REQUEST.size + 1)
        except OSError:
            session.close()
            return
        self._answer(session, raw)

    def _forget_session(self, session: socket.socket, *, close: bool = True) -> None:
        assert self._sel is not None
        if self._waiting.pop(session, None) is not None:
            self._sel.unregister(session)
        if close:
            session.close()

    def _answer(self, session: socket.socket, raw: bytes) -> None:
        keep = False
        try:
            creds = apps.peer_credentials(session)
            try:
                request = protocol.Request.decode(raw)
            except protocol.ProtocolError:
                self.counters["app_bad_request"] += 1
                return
            if not apps.may_connect(creds, self.group):
                self.counters["app_denied"] += 1
                self._reply(session, protocol.Reply(request.op, protocol.NOT_ADMITTED))
                return
            if request.op == protocol.OP_LISTEN:
                status = self.register_listener(
                    request.name, request.port, request.ip, creds,
                    reuseport=bool(request.flags & protocol.FLAG_REUSEPORT),
                    channels=bool(request.flags & protocol.FLAG_CHANNELS))
                granted = status == 0 and self.channels_granted(request.name, request.port)
                self._reply(session, protocol.Reply(
                    request.op, status, request.ip, request.port, bytes(len(request.ip)),
                    remote_port=protocol.FLAG_CHANNELS if granted else 0,  # older shims'
                    flags=protocol.REPLY_CHANNELS if granted else 0))
            elif request.op == protocol.OP_CONNECT:
                keep = self._start_connect(session, request, creds)
            elif request.op == protocol.OP_SETOPT:
                status = self.set_option(request, creds)
                self._reply(session, protocol.Reply(request.op, status))
            elif request.op == protocol.OP_GETINFO:
                self.counters["getinfo"] += 1
                status, info, conn = self.get_info(request, creds)
                reply = protocol.Reply(request.op, status)
                if conn is not None:
                    reply = protocol.Reply(request.op, status, conn.local_ip,
                                           conn.local_port, conn.remote_ip, conn.remote_port)
                session.sendmsg([reply.encode(), info.encode() if info is not None else b""],
                                [], socket.MSG_NOSIGNAL)
            elif request.op == protocol.OP_REFUSED:
                # An application refused a connection on its listener that did not come
                # from us: someone tried to inject one (protocol.OP_REFUSED).
                self.counters["forged_deliveries_refused"] += 1
                log.warning("pid %d (uid %d) refused a connection to its listener %s "
                            "that did not come from the service", creds.pid, creds.uid,
                            request.name or "?")
                self._reply(session, protocol.Reply(request.op, 0))
            else:
                self.counters["app_bad_request"] += 1
                self._reply(session, protocol.Reply(request.op, errno.EOPNOTSUPP))
        except OSError as exc:
            self.counters["app_session_error"] += 1
            log.debug("application session failed: %s", exc)
        finally:
            if not keep:
                session.close()

    @staticmethod
    def _reply(session: socket.socket, reply: protocol.Reply,
               fd: int | None = None) -> None:
        fds = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))] if fd else []
        session.sendmsg([reply.encode()], fds, socket.MSG_NOSIGNAL)

    def _start_connect(self, session: socket.socket, request: protocol.Request,
                       creds: apps.Credentials) -> bool:
        rip = request.ip
        if (not self.ephemeral or not _remote_address(rip)
                or rip in self.engine.local_addresses or not 0 < request.port < 65536):
            self._reply(session, protocol.Reply(request.op, protocol.NOT_ACCELERATED))
            return False
        # A failed active open's 4-tuple is free again in C: its failure is filed under
        # its own name before a new connect can take the 4-tuple (and its owner entry).
        self._take_failures()
        # Ring mode, as on a listener's connections: granted with the C data plane,
        # which keeps the channels (protocol.FLAG_CHANNELS). Not while the plane gives
        # this process's own claims its bell (embedded mode): the connection's socket
        # pair names the service's process as the peer, which would pass that check.
        plane = self.chan_plane
        channels = (bool(request.flags & protocol.FLAG_CHANNELS) and plane is not None
                    and not plane.has_door)
        if request.flags & protocol.FLAG_NONBLOCK and self._connect_in_c(
                session, request, creds, channels):
            return False
        try:
            conn = self.engine.connect(rip, request.port, busy=self._held_in_c)
        except EngineError as exc:
            log.warning("connect to %s:%d: %s", text(rip), request.port, exc)
            self._reply(session, protocol.Reply(request.op, errno.EADDRNOTAVAIL))
            return False
        self.counters["connect_started"] += 1
        if len(rip) == 16:
            self.counters["connect_started_ipv6"] += 1
        if request.flags & protocol.FLAG_NONBLOCK:
            # The descriptor now; the handshake goes on behind it (protocol.OP_CONNECT).
            try:
                self._hand_over(session, conn, channels)
            except OSError:
                conn.abort()  # nobody could ever use it
                self.engine.mark(conn)
                raise
            self.counters["connect_nonblocking"] += 1
            return False
        self.connecting[conn] = (session, channels)
        return True

    def _held_in_c(self, key: tuple[bytes, int, bytes, int]) -> bool:
        """Whether the C data plane holds a flow of this 4-tuple (one it opened itself,
        TIME-WAIT included), which the engine does not see, and a new outgoing
        connection may not take: a TIME-WAIT that one may take over (C's rule,
        dp_tw_reuse, as Linux's tcp_tw_reuse=1) ends here and leaves the 4-tuple free."""
        if self.plane is None or self.plane.peek_key(key) is None:
            return False
        iss = self.plane.reuse_time_wait(key, self.clock())
        if iss is None:
            return True
        self.engine.take_over(key, Seq(iss))
        return False

    def _connect_in_c(self, session: socket.socket, request: protocol.Request,
                      creds: apps.Credentials, channels: bool) -> bool:
        """A non-blocking OP_CONNECT that the C data plane opens itself (dp_connect: its
        SYN, SYN-ACK, data and close in C, as a listener's connections born there): the
        reply with the descriptor goes now, the handshake behind it. False when C cannot
        (no plane, keepalive on, the next hop's address not yet resolved, a 4-tuple C
        refuses): the engine then opens it. Its failure (a RST, no answer) C keeps for
        OP_GETINFO (``_take_failures``). Once one is open, C may answer the next connects
        to the destination alone for a while (``connect_route``, sessions.c)."""
        config = self.engine.config
        if self.plane is None or config.keepalive:
            return False
        network = self.engine.network
        rip, rport = request.ip, request.port
        mac = network.neighbour(network.next_hop(rip), self.clock())
        if mac is None:
            return False  # the engine resolves it and queues the SYN meanwhile
        try:
            key, iss, ts_offset = self.engine.active_open(rip, rport, self._held_in_c)
        except EngineError:
            return False  # the engine's path answers EADDRNOTAVAIL
        now = self.clock()
        try:
            _handle, theirs = self.plane.connect(config, key, network.mac, mac, int(iss),
                                                 ts_offset, uid=creds.uid, claims=channels,
                                                 now=now)
        except OSError as exc:
            log.debug("connect to %s:%d in C: %s", text(rip), rport, exc)
            return False
        if self._routes_in_c:
            self.plane.connect_route(rip, key[0], mac, now + CONNECT_ROUTE_TTL)
        self.counters["connect_started"] += 1
        self.counters["connect_in_c"] += 1
        self.counters["connect_nonblocking"] += 1
        if len(rip) == 16:
            self.counters["connect_started_ipv6"] += 1
        if channels:
            self.counters["connect_channels"] += 1
        try:
            self._reply(session, protocol.Reply(
                protocol.OP_CONNECT, 0, key[0], key[1], key[2], key[3],
                protocol.REPLY_CHANNELS if channels else 0), theirs)
        except OSError:
            # The application gave up waiting: its end closes below, and C's read of
            # that EOF ends the connection after its handshake (a FIN, nothing sent).
            self.counters["connect_abandoned"] += 1
        finally:
            os.close(theirs)
        return True

    def _take_failures(self) -> None:
        """The active opens C ran that failed: each one's error waits for one
        OP_GETINFO of its owner (SO_ERROR) under its socket's name, as a failed
        connection of the engine's."""
        if self.plane is None:
            return
        for failure in self.plane.failures():
            self.counters["connect_failed"] += 1
            self._pending_options.pop(failure.key, None)
            self._failed[failure.name] = (failure.err, failure.uid)
            while len(self._failed) > FAILED_KEPT:
                self._failed.popitem(last=False)

    def _connect_progress(self, conn: TcpConnection) -> None:
        session, channels = self.connecting[conn]
        if conn.state in (TcpState.SYN_SENT, TcpState.SYN_RECEIVED):
            return
        del self.connecting[conn]
        try:
            if conn.state is TcpState.CLOSED:
                code = failure_errno(conn.error, errno.ECONNREFUSED)
                self.counters["connect_failed"] += 1
                with contextlib.suppress(OSError):
                    self._reply(session, protocol.Reply(
                        protocol.OP_CONNECT, code, conn.local_ip, conn.local_port,
                        conn.remote_ip, conn.remote_port))
                return
            self._fit_learnt_path(conn)
            if self._hand_over(session, conn, channels):
                self.counters["connect_established"] += 1
        finally:
            session.close()

    def _hand_over(self, session: socket.socket, conn: TcpConnection,
                   channels: bool) -> bool:
        """Reply to an OP_CONNECT with the connection's descriptor (the application's
        end of a socket pair whose service end is bound to the connection's name) and
        start pumping; False (connection aborted) if the application is gone.
        ``channels``: ring mode granted, so the application's claim comes first and
        nothing is delivered before it (as for a listener's connections)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX,
                                         socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            ours.bind(protocol.abstract(self._conn_name(
                conn, socket.AF_INET6 if len(conn.local_ip) == 16 else socket.AF_INET)))
        except OSError:
            ours.close()
            theirs.close()
            raise
        try:
            self._reply(session, protocol.Reply(
                protocol.OP_CONNECT, 0, conn.local_ip, conn.local_port, conn.remote_ip,
                conn.remote_port, protocol.REPLY_CHANNELS if channels else 0),
                theirs.fileno())
            creds = apps.peer_credentials(session)
        except OSError:
            ours.close()
            conn.abort()  # the application gave up waiting
            self.engine.mark(conn)
            self.counters["connect_abandoned"] += 1
            return False
        finally:
            theirs.close()
        channel = (ChannelState(claim_check=True, claim_wait=True,
                                claim_by=self.clock() + CLAIM_WAIT) if channels else None)
        self._start_pump(conn, ours, creds.uid, creds.pid, channel)
        if channels:
            self.counters["connect_channels"] += 1
        return True

    # -- statistics and teardown -----------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        service = dict(self.counters)
        plane = self.plane.stats() if self.plane is not None else None
        born = 0
        if plane is not None:
            # The connections C opened and delivered itself are the service's too.
            service["accepted"] = service.get("accepted", 0) + plane["established"]
            service["delivered"] = service.get("delivered", 0) + plane["delivered"]
            service["delivered_ipv6"] = service.get("delivered_ipv6", 0) + plane["delivered6"]
            # ... and so are the connects C answered alone (sessions.c).
            for name, theirs in (("connect_started", "sessions_answered"),
                                 ("connect_in_c", "sessions_answered"),
                                 ("connect_nonblocking", "sessions_answered"),
                                 ("connect_started_ipv6", "sessions_answered6"),
                                 ("connect_channels", "sessions_channels"),
                                 ("connect_abandoned", "connect_abandoned")):
                service[name] = service.get(name, 0) + plane[theirs]
            born = plane["born_live"]
        return {
            "engine": dict(self.engine.counters),
            "service": service,
            "connections": len(self.engine.connections) + born,
            "pumps": len(self.pumps),
            "pump_buffered_bytes": sum(p.buffered for p in self.pumps.values()),
            "listeners": {str(p): len(pl.registrations) for p, pl in self.by_port.items()},
            "connecting": len(self.connecting),
            "selector_fds": len(self._sel.get_map()) if self._sel is not None else 0,
            "ready_pumps": len(self._ready),
            "next_deadline_in": ((d - self.clock()) if (d := self.engine.next_deadline())
                                 is not None else None),
            "flows": [self._flow(p) for p in itertools.islice(self.pumps.values(),
                                                             FLOWS_SHOWN)],
            # Every live connection's counters summed (drop reasons, retransmissions,
            # fast-path share): what "flows" shows for a few, for all of them.
            "tcp": self._tcp_counters(),
            # Since the service started (closed connections and listeners included):
            # these only rise, as monitoring's counters must.
            "tcp_total": self.tcp_totals(),
            "dataplane": plane,
        }

    def unsettled(self) -> bool:
        """Some connection still has work a graceful stop should wait for (``Service``'s
        linger): bytes the application wrote that the peer has not acknowledged, a FIN
        not yet acknowledged, or the application's bytes or EOF not yet read."""
        for conn, pump in self.pumps.items():
            if pump.buffered:
                return True
            if not conn.parked and (conn.send_queue or conn.bytes_in_flight):
                return True
        if any(conn.state in _FIN_UNACKED for conn in self.engine.connections.values()):
            return True
        idle = [p.sock.fileno() for p in self.pumps.values()
                if not p.conn.parked and not p.app_eof and not p.app_gone]
        if any_readable(idle):
            return True
        return self.plane is not None and self.plane.unsettled()

    def _tcp_counters(self) -> dict[str, int]:
        """Every live connection's counters: Python's, with what C has counted of those
        it runs now, and those C opened itself (TIME-WAIT aside, as in "connections")."""
        total = Counters()
        self._add_connections(total)
        if self.plane is not None:
            for born in self.plane.born_flows():
                if int(born.tcb.tcp_state) not in UNRUNNABLE_STATES:
                    total.update(hot_counters(born.tcb))
        return dict(total)

    def tcp_totals(self) -> dict[str, int]:
        """Every TCP counter since the service started: connections and listeners the
        engine let go of, live ones, and what C has counted of those it runs now; and
        the connections C opened itself, live (TIME-WAIT too: a total must never fall
        when one moves on) or ended in C."""
        total = Counters()
        total.update(self.engine.closed_counters)
        self._add_connections(total)
        for listener in self.engine.listeners.values():
            total.update(listener.counters)
        if self.plane is not None:
            for born in self.plane.born_flows():
                total.update(hot_counters(born.tcb))
            total.update(hot_counters(self.plane.ended_counts()))
        return dict(total)

    def _add_connections(self, total: Counters) -> None:
        """Add the engine's live connections' counters to ``total``, with what C has
        counted of those it runs now (added to the connection only at hand-back)."""
        for conn in self.engine.connections.values():
            total.update(conn.counters)
            if self.plane is not None and conn.parked:
                hot = self.plane.peek(conn)
                if hot is not None:
                    total.update(hot_counters(hot))

    def _flow(self, pump: Pump) -> dict[str, Any]:
        """One pump's state, for diagnosing a stalled transfer from ``joyride stats``."""
        conn = pump.conn
        in_c = self.plane.view(conn) if self.plane is not None and conn.parked else None
        flow = {
            "remote": f"{text(conn.remote_ip)}:{conn.remote_port}",
            "local_port": conn.local_port, "state": conn.state.name,
            "recv_queue": conn.recv_queue, "send_queue": conn.send_queue,
            "in_flight": conn.bytes_in_flight, "send_window": conn.send_window,
            "eof": conn.eof, "poll_at": conn.poll_at(), "now": self.clock(),
            "app_eof": pump.app_eof, "app_gone": pump.app_gone,
            "fin_sent_to_app": pump.fin_sent_to_app, "mask": pump.mask,
            "app_full": pump.app_full,
            "to_tcp": len(pump.to_tcp) if pump.to_tcp is not None else 0,
            "channel": {"chan": pump.channel.chan, "claim_check": pump.channel.claim_check,
                        "claim_wait": pump.channel.claim_wait},
            "counters": {k: v for k, v in conn.counters.items() if v},
            "dataplane": in_c is not None,
        }
        if in_c is not None:
            flow.update(in_c)  # C runs it: its view, not the parked object's
        return flow

    def _stray(self, key: tuple[bytes, int, bytes, int], conn: TcpConnection | None
               ) -> TcpConnection | None:
        """``Engine.strays``: a segment reached Python for a flow C runs. With one plane
        that is a segment declined before C took its flow again (the engine had not read
        every declined frame yet); with workers, a peer that moved the flow to another
        queue, whose worker does not have it. Either way the flow comes back here first
        (it goes to the plane that gave this frame when C takes it again: ``note_rx``);
        a flow C opened itself is claimed from whichever worker has it."""
        if conn is not None:
            self._reclaim(conn)
            self.counters["plane_stray_reclaimed"] += 1
            if self.workers is not None:
                self.workers.migrated += 1
            return conn
        if self.workers is None:
            return None  # one plane: it declines only flows it does not have
        born = self.workers.claim(key)
        if born is None:
            return None
        self.counters["plane_stray_claimed"] += 1
        self.workers.migrated += 1
        self._take_born(born, set())
        return self.engine.connections.get(key)

    def _reclaim(self, conn: TcpConnection) -> None:
        """Take ``conn`` back from C (the control plane's to change: its options, its
        MSS), as a hand-back."""
        assert self.plane is not None
        got = self.plane.release(conn)
        if got is not None:
            self._back_from_plane(got)

    def close(self) -> None:
        for fd in self._listener_pids.values():
            self._unwatch_fd(fd)
        self._listener_pids.clear()
        if self.plane is not None:
            for conn in [c for c in self.pumps if c.parked]:
                self._reclaim(conn)
        for pump in list(self.pumps.values()):
            pump.sock.close()
        self.pumps.clear()
        if self.plane is not None:
            # The sessions C accepted and had not answered: no answer will come.
            self.plane.sessions_listen(-1)
            for fd, _raw in self.plane.sessions():
                os.close(fd)
        for session in [*(s for s, _ in self.connecting.values()), *self._waiting]:
            session.close()
        self._waiting.clear()
        self.connecting.clear()
        self.engine.close()
        if self.workers is not None:
            self.workers.close()  # their threads end; their planes go with the service
        for source in self.icmp:
            source.close()
        self._hangups.close()
        self._hangup_pumps.clear()
        with contextlib.suppress(Exception):
            self.network.close()
