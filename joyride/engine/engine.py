"""The engine: NIC batches ↔ wire formats ↔ sans-I/O TCP. The only clock reader.

One ``Engine`` serves one NIC queue. Each ``poll``:

1. receives a batch of frames and validates them in one C call (``BatchParser``), where
   they landed (UMEM descriptors, no copy);
2. demultiplexes each valid segment by its 4-tuple to a connection, else to a
   TIME-WAIT record (``joyride.tcp.timewait``: a connection in TIME-WAIT that the
   application closed is replaced by one, about 1 KB instead of ~15 KB, capped at
   ``max_time_wait`` with ``tw_overflow`` counting the oldest dropped; a new SYN it
   accepts, RFC 6191, goes on to the listener), else by local port to a listener,
   else answers it as the CLOSED state does (RFC 9293 §3.10.7.1: a RST).
   each is parsed into Python objects and handed to the state machine (the per-segment
   work of established connections is the C data plane's, ``joyride.dataplane``; this
   engine runs what it declines, and everything under ``JOYRIDE_DATAPLANE=python``);
3. runs every timer that is due;
4. turns what the touched connections want to send into frames (next-hop MAC from the
   kernel's neighbour table; frames wait, bounded, while the kernel resolves one) and
   transmits them as one batch.

Front ends (the network service, embedded mode) read and write connections between
polls and call ``flush`` to send what the application queued.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from joyride.engine.network import NetworkView
from joyride.engine.nic import Buffer, Nic, RxDescriptors
from joyride.tcp.config import TcpConfig
from joyride.tcp.connection import TcpConnection, rst_for
from joyride.tcp.counters import Counters
from joyride.tcp.isn import IsnGenerator
from joyride.tcp.listener import Listener, Outgoing
from joyride.tcp.state import TcpState
from joyride.tcp.timewait import TimeWait, TwVerdict
from joyride.wire.batch import BatchBuilder, BatchParser, FrameTemplate, batchable, make_template
from joyride.wire.ethernet import ETH_HLEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, EthernetHeader
from joyride.wire.frame import build_frame_into, frame_len
from joyride.wire.ipv4 import Ipv4Header
from joyride.wire.ipv6 import Ipv6Header
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpSegment

log = logging.getLogger(__name__)

BATCH: Final = 64
BUILD_BATCH: Final = 64  # segments of one connection per wire.c build call
_NO_TEMPLATE: Final = FrameTemplate(bytes(6), bytes(6), bytes(4), bytes(4), 0, 0)
PENDING_PER_HOP: Final = 256  # frames held per unresolved next hop (RFC 1122 §2.3.2.2: >= 1)
#: Local ports of Joyride's outgoing connections, the one definition every front end
#: uses (service and embedded mode reserve and steer the same range, so the kernel
#: sees the same ports taken whichever mode runs).
DEFAULT_EPHEMERAL: Final = range(60000, 61000)

FourTuple = tuple[bytes, int, bytes, int]  # (local ip, local port, remote ip, remote port)
# The same 4-tuple as the C parser's records carry it: addresses are the wire bytes read
# as a native u32, ports host-order (see ``struct wire_parsed``).
RawTuple = tuple[int, int, int, int]
ADDRESS_REFRESH: Final = 1.0  # seconds between re-reads of the interface's addresses
REUSE_ISS_GAP: Final = 65535 + 2  # RFC 6191 reuse: new ISS past the old SND.NXT (Linux)
# Linux's tcp_max_tw_buckets: TIME-WAIT records kept at most (about 200 bytes each);
# beyond it the record closest to expiry is dropped and counted (``tw_overflow``).
MAX_TIME_WAIT: Final = 65536
# Timer heap entries tolerated before superseded ones are swept (see _compact_timers).
TIMER_SLACK: Final = 64
BOTH_FAMILIES: Final = frozenset({4, 6})  # IP versions a listener takes by default
IPV4_ONLY: Final = frozenset({4})


class EngineError(Exception):
    """A request the engine cannot honour (port in use, no free ephemeral port, ...)."""


@dataclass
class Activity:
    """What one ``poll`` changed, for the front end to act on."""

    connections: set[TcpConnection] = field(default_factory=set)
    listeners: set[Listener] = field(default_factory=set)
    # The 4-tuples of the segments received (a connection's or a listener's): where the
    # service's data-plane workers learn which queue a flow arrives on.
    received: set[FourTuple] = field(default_factory=set)

    def clear(self) -> None:
        self.connections.clear()
        self.listeners.clear()
        self.received.clear()


class Engine:
    def __init__(
        self,
        nic: Nic,
        network: NetworkView,
        config: TcpConfig | None = None,
        *,
        ephemeral_ports: range = DEFAULT_EPHEMERAL,
        clock: Callable[[], float] = time.monotonic,
        batch: int = BATCH,
        max_time_wait: int = MAX_TIME_WAIT,
    ) -> None:
        self.nic = nic
        self.network = network
        self.config = config or TcpConfig(mss=max(88, min(1460, network.mtu - 40)))
        self.clock = clock
        self.batch = batch
        self.ephemeral_ports = ephemeral_ports
        self.counters: Counters = Counters()
        # The counters of every connection and listener it has let go of: with the live
        # ones', totals that only rise (joyride metrics' TCP counters).
        self.closed_counters: Counters = Counters()
        self.local_addresses = network.local_addresses()
        # Told the new set when the interface's addresses change (steering follows).
        self.address_listeners: list[Callable[[frozenset[bytes]], None]] = []
        self._addresses_due = clock() + ADDRESS_REFRESH
        self.connections: dict[FourTuple, TcpConnection] = {}
        self._by_raw: dict[RawTuple, TcpConnection] = {}
        # Connections in TIME-WAIT the application let go of, as compact records
        # (RFC 9293 §3.6), oldest deadline first: a restarted 2*MSL moves to the end.
        self.time_wait: OrderedDict[FourTuple, TimeWait] = OrderedDict()
        self.max_time_wait = max_time_wait
        # A NIC that queues without waking the kernel is kicked once per transmit step.
        self._kick: Callable[[bool], None] | None = getattr(nic, "kick", None)
        self._round_data = 0  # data segments queued since the last kick
        self.listeners: dict[int, Listener] = {}
        # The IP versions (4, 6) each listening port takes connections of: a SYN of
        # another is answered as if nothing listened (RFC 9293 §3.10.7.1).
        self.listener_families: dict[int, frozenset[int]] = {}
        # Told (port, families) as a port's listener starts, stops (no families) or
        # changes the families it takes: the steering program gives such a port's SYNs
        # of those families to Joyride before a kernel listener's.
        self.serving_listeners: list[Callable[[int, frozenset[int]], None]] = []
        # Run once a second, beside the address refresh (the steering program's
        # KERNEL_CONNS flags, joyride.steer.kernel_sockets).
        self.housekeeping: list[Callable[[], None]] = []
        # Asked, before any other rule, about a segment whose connection a C data plane
        # runs (parked) or that this engine does not know: with one data-plane worker
        # per queue, a peer that moves a flow to another queue reaches here through the
        # worker that does not have it (joyride.dataplane.workers). It returns the
        # connection to deliver to, taken back from C (None: the usual rules apply).
        self.strays: Callable[[FourTuple, TcpConnection | None],
                              TcpConnection | None] | None = None
        # Told (port, +1 or -1) as a connection or TIME-WAIT record of this engine starts
        # or stops using its local port: a C data plane that picks ephemeral ports for
        # connects of its own leaves those alone (sessions.c, dp_port_hold).
        self.port_watch: Callable[[int, int], None] | None = None
        self.activity = Activity()
        self._isn = IsnGenerator()
        # Outgoing connections' TSval offsets, one per address pair (as Linux's
        # secure_tcp_ts_off): a new incarnation of a 4-tuple continues the old one's
        # timestamp clock, so a peer holding it in TIME-WAIT can accept the new SYN
        # by its timestamp (RFC 6191 §2); a random offset per connection would be
        # refused half the time. Its own key keeps it unrelated to the ISNs.
        self._ts_offsets = IsnGenerator()
        # The ISS of the active open _free_port is choosing a port for, when its `busy`
        # ended a TIME-WAIT of the 4-tuple held elsewhere (take_over).
        self._taken_over: dict[FourTuple, Seq] = {}
        self._parser = BatchParser(batch, verify_checksums=self.config.verify_checksum,
                                   ipv6=True)
        self._timers: list[tuple[float, int, TcpConnection | Listener]] = []
        # Each owner's live heap entry (see _schedule): entries whose deadline is not
        # the one recorded here are superseded and dropped when they surface.
        self._wake_at: dict[TcpConnection | Listener, float] = {}
        self._tiebreak = itertools.count()
        self._timers_limit = TIMER_SLACK  # heap size that triggers _compact_timers
        self._dirty: set[TcpConnection | Listener] = set()
        self._pending: dict[bytes, deque[bytes]] = {}  # next hop -> frames awaiting its MAC
        self._tx: list[Buffer] = []
        self._ip_id = random.getrandbits(16)
        self._rng = random.Random()
        # Data and ACK segments are built by wire.c, a run per call (_build_run), from
        # each connection's frame template (its next hop's MAC with it).
        self._builder = BatchBuilder(_NO_TEMPLATE, BUILD_BATCH)
        self._templates: dict[TcpConnection, tuple[bytes, Any]] = {}

    # ------------------------------------------------------------------ sockets

    def listen(self, port: int, config: TcpConfig | None = None,
               families: frozenset[int] = BOTH_FAMILIES) -> Listener:
        """A listener on ``port`` for connections of the IP versions ``families``."""
        if not 0 < port < 65536:
            raise EngineError(f"port {port} out of range 1..65535")
        if port in self.listeners:
            raise EngineError(f"port {port} is already listening")
        listener = Listener(config or self.config, port, isn_generator=self._isn)
        self.listeners[port] = listener
        self.listener_families[port] = families
        self._tell_serving(port, families)
        return listener

    def set_families(self, listener: Listener, families: frozenset[int]) -> None:
        """``listener`` takes connections of the IP versions ``families`` from now on
        (the service's applications listen per family)."""
        port = listener.local_port
        if self.listeners.get(port) is listener and \
                self.listener_families.get(port) != families:
            self.listener_families[port] = families
            self._tell_serving(port, families)

    def unlisten(self, listener: Listener) -> None:
        listener.close()
        self._dirty.add(listener)
        self.flush()
        if self.listeners.pop(listener.local_port, None) is listener:
            self.listener_families.pop(listener.local_port, None)
            self.closed_counters.update(listener.counters)
            self._tell_serving(listener.local_port, frozenset())
        self._wake_at.pop(listener, None)

    def _tell_serving(self, port: int, families: frozenset[int]) -> None:
        for watcher in self.serving_listeners:
            try:
                watcher(port, families)
            except Exception:
                self._internal_error("serving_listener")

    def accept(self, listener: Listener) -> TcpConnection | None:
        """Take the next established connection from ``listener``; the engine now
        demultiplexes its segments directly."""
        conn = listener.accept()
        if conn is not None:
            self._register(conn)
            self._schedule(conn)
        return conn

    def connect(self, remote_ip: bytes, remote_port: int, *, local_ip: bytes | None = None,
                local_port: int | None = None, config: TcpConfig | None = None,
                busy: Callable[[FourTuple], bool] | None = None) -> TcpConnection:
        """Active open (``TcpConnection.connect``) from a free ephemeral port; ``busy``:
        4-tuples held where the engine does not see them (the C data plane's)."""
        lip = local_ip or self._source_for(remote_ip)
        lport = local_port or self._free_port(lip, remote_ip, remote_port, busy)
        key = (lip, lport, remote_ip, remote_port)
        if key in self.connections or key in self.time_wait:
            raise EngineError("that 4-tuple is already in use")
        conn = TcpConnection.connect(config or self.config, lip, lport, remote_ip,
                                     remote_port, self.clock(), self._isn,
                                     ts_offset=self._ts_offsets.offset(lip, 0, remote_ip, 0),
                                     iss=self._taken_over.pop(key, None))
        self._register(conn)
        self._dirty.add(conn)
        self.flush()
        return conn

    def _source_for(self, remote_ip: bytes) -> bytes:
        """The local address to reach ``remote_ip`` from: the kernel's preferred source
        for its route (RFC 6724 source selection, e.g. a link-local address for a
        link-local peer) when it is one of ours; else one of its family (the lowest,
        for a fixed choice)."""
        preferred = self.network.source_for(remote_ip)
        if preferred is not None and preferred in self.local_addresses:
            return preferred
        family = [a for a in self.local_addresses if len(a) == len(remote_ip)]
        if not family:
            name = "IPv6" if len(remote_ip) == 16 else "IPv4"
            raise EngineError(f"{self.network.ifname} has no {name} address")
        return min(family)

    def active_open(self, remote_ip: bytes, remote_port: int,
                    busy: Callable[[FourTuple], bool]) -> tuple[FourTuple, Seq, int]:
        """What ``connect`` would give a connection to ``remote``: its 4-tuple, ISS
        (RFC 6528) and timestamp offset (RFC 7323 §7.1), for one the C data plane opens
        itself (``busy``: 4-tuples held there, which the engine does not see)."""
        lip = self._source_for(remote_ip)
        lport = self._free_port(lip, remote_ip, remote_port, busy)
        iss = self._taken_over.pop((lip, lport, remote_ip, remote_port), None)
        if iss is None:
            iss = self._isn.isn(lip, lport, remote_ip, remote_port, self.clock())
        return ((lip, lport, remote_ip, remote_port), iss,
                self._ts_offsets.offset(lip, 0, remote_ip, 0))

    def connect_keys(self) -> tuple[bytes, bytes]:
        """The keys of ``active_open``'s ISS (RFC 6528) and timestamp offsets, for a C
        data plane that opens connections the same way (sessions.c)."""
        return self._isn.key, self._ts_offsets.key

    def take_over(self, key: FourTuple, iss: Seq) -> None:
        """``busy`` ended a TIME-WAIT of ``key`` held outside the engine (the C data
        plane's, dp_tw_reuse) for the active open ``_free_port`` is choosing a port for:
        that open starts from ``iss``, past the old connection's SND.NXT, as Linux's
        tcp_tw_reuse does."""
        self._taken_over[key] = iss

    def _free_port(self, lip: bytes, rip: bytes, rport: int,
                   busy: Callable[[FourTuple], bool] | None = None) -> int:
        self._taken_over.clear()  # only this choice's takeover counts
        ports = self.ephemeral_ports
        start = self._rng.randrange(len(ports))
        for i in range(len(ports)):
            port = ports[(start + i) % len(ports)]
            key = (lip, port, rip, rport)
            if (key not in self.connections and key not in self.time_wait
                    and port not in self.listeners and (busy is None or not busy(key))):
                return port
        raise EngineError("no free ephemeral port for that destination")

    @staticmethod
    def key_of(conn: TcpConnection) -> FourTuple:
        """The 4-tuple a connection is demultiplexed by (local first)."""
        return (conn.local_ip, conn.local_port, conn.remote_ip, conn.remote_port)

    @staticmethod
    def _raw_key(conn: TcpConnection) -> RawTuple:
        return (int.from_bytes(conn.local_ip, "little"), conn.local_port,
                int.from_bytes(conn.remote_ip, "little"), conn.remote_port)

    def _register(self, conn: TcpConnection) -> None:
        key = self.key_of(conn)
        if key not in self.connections:  # (one that replaces another uses it already)
            self._port_used(conn.local_port, 1)
        self.connections[key] = conn
        self._by_raw[self._raw_key(conn)] = conn

    def _port_used(self, port: int, delta: int) -> None:
        if self.port_watch is not None:
            self.port_watch(port, delta)

    def _drop_time_wait(self, key: FourTuple) -> None:
        del self.time_wait[key]
        self._port_used(key[1], -1)

    # ------------------------------------------------------------------ the loop

    def poll(self, *, transmit: bool = True) -> Activity:
        """One iteration: receive a batch, run due timers, transmit. Never raises on
        anything a packet contains.

        ``transmit=False`` leaves the transmit step to the caller's ``flush``: a front
        end that runs application callbacks on the activity first (embedded mode) then
        sends their replies, the ACKs and the timers' segments in one batch, and every
        touched connection is visited once per round instead of twice."""
        self.activity.clear()
        now = self.clock()
        rx = self.nic.receive(self.batch)
        if rx is not None:
            try:
                self._receive(rx, now)
            finally:
                self.nic.release()
        self._run_timers(now)
        if now >= self._addresses_due:
            self._refresh_addresses(now)
        if transmit:
            self._transmit(now)
        return self.activity

    def _refresh_addresses(self, now: float) -> None:
        """Follow the interface's addresses (an administrator adds or removes one while
        we run): frames to a new one are served, and the listeners (the steering
        program's address map) learn the set. A failed read keeps the old set."""
        self._addresses_due = now + ADDRESS_REFRESH
        for chore in self.housekeeping:
            try:
                chore()
            except Exception:
                self._internal_error("housekeeping")
        try:
            addresses = self.network.local_addresses()
        except Exception:
            self.counters["address_refresh_failed"] += 1
            return
        if addresses == self.local_addresses:
            return
        self.local_addresses = addresses
        self.counters["address_changes"] += 1
        for listener in self.address_listeners:
            try:
                listener(addresses)
            except Exception:
                self._internal_error("address_listener")

    def flush(self) -> None:
        """Send what the application queued on connections since the last poll."""
        now = self.clock()
        self._transmit(now)

    def mark(self, conn: TcpConnection) -> None:
        """The application touched ``conn`` (send, recv, close): transmit on next flush."""
        self._dirty.add(conn)

    def adopt_back(self, conn: TcpConnection) -> None:
        """``conn`` came back from the C data plane (``TcpConnection.import_hot``): its
        timers and whatever it owes (an ACK, queued bytes) are this engine's again."""
        self._dirty.add(conn)
        self.activity.connections.add(conn)
        self._schedule(conn)

    def adopt_born(self, conn: TcpConnection) -> None:
        """``conn`` was opened by the C data plane (``TcpConnection.from_hot``): this
        engine demultiplexes and times it from now on, as one it accepted itself."""
        self._register(conn)
        self.adopt_back(conn)

    def marked(self, conn: TcpConnection) -> bool:
        """Whether ``conn`` is to be visited by the next transmit step."""
        return conn in self._dirty

    def next_deadline(self) -> float | None:
        self._settle_heap_top()
        if self._dirty or self._pending:
            return self.clock()
        deadline = self._timers[0][0] if self._timers else None
        if self.time_wait:
            tw = next(iter(self.time_wait.values()))
            deadline = tw.expires if deadline is None else min(deadline, tw.expires)
        if self.address_listeners or self.housekeeping:
            # An idle engine still follows the addresses: frames to a new one are
            # steered only once the steering program has heard of it.
            due = self._addresses_due
            deadline = due if deadline is None else min(deadline, due)
        return deadline

    # ------------------------------------------------------------------ receive

    def _receive(self, rx: RxDescriptors, now: float) -> None:
        parser = self._parser
        parser.parse_descriptors(rx.base, rx.offsets, rx.lengths, rx.n)
        i, n = 0, rx.n
        while i < n:
            try:
                i = self._receive_run(i, now)
            except Exception:
                # A bug must never take the stack down: count it, skip the frame, go on.
                self._internal_error("receive")
                i += 1

    def _internal_error(self, where: str) -> None:
        self.counters[f"internal_error_{where}"] += 1
        if self.counters[f"internal_error_{where}"] == 1:
            log.exception("engine: internal error in %s (further ones are only counted)",
                          where)

    def _receive_run(self, i: int, now: float) -> int:
        """Process frame ``i`` (and the run of its connection's frames that follows);
        return the index of the next unprocessed frame."""
        parser = self._parser
        out = parser.out
        r = out[i]
        if r.reason != 0:
            self.counters[f"drop_{parser.reason(i).name.lower()}"] += 1
            return i + 1
        self._slow(i, now)
        return i + 1

    def _slow(self, i: int, now: float) -> None:
        try:
            frame = self._parser.frame(i)
        except Exception:  # the C and Python parsers disagree: count, never crash
            self.counters["drop_parse_mismatch"] += 1
            return
        ip, seg = frame.ip, frame.tcp
        if ip.dst not in self.local_addresses:
            self.counters["drop_not_local"] += 1
            return
        self.counters["rx_segments"] += 1
        self._deliver(ip.dst, ip.src, seg, now)

    def _deliver(self, lip: bytes, rip: bytes, seg: TcpSegment, now: float) -> None:
        key = (lip, seg.dst_port, rip, seg.src_port)
        conn = self.connections.get(key)
        if self.strays is not None and (conn is None or conn.parked):
            conn = self.strays(key, conn)
        self.activity.received.add(key)
        if conn is not None:
            conn.receive(seg, now)
            self.activity.connections.add(conn)
            self._dirty.add(conn)
            return
        reuse_iss: Seq | None = None
        if self.time_wait:
            deliver, reuse_iss = self._time_wait_segment(lip, rip, seg, now)
            if not deliver:
                return
        listener = self.listeners.get(seg.dst_port)
        if listener is not None and \
                (6 if len(lip) == 16 else 4) in self.listener_families[seg.dst_port]:
            listener.receive(seg, rip, lip, now, iss=reuse_iss)
            self.activity.listeners.add(listener)
            self._dirty.add(listener)
            return
        # RFC 9293 §3.10.7.1: no connection: a RST answers anything but a RST.
        self.counters["rx_no_socket"] += 1
        reply = rst_for(seg)
        if reply is not None:
            self._emit(Outgoing(lip, rip, reply), now)

    # ------------------------------------------------------------------ TIME-WAIT

    def _time_wait_segment(self, lip: bytes, rip: bytes, seg: TcpSegment, now: float
                           ) -> tuple[bool, Seq | None]:
        """Give ``seg`` to its TIME-WAIT record, if any. Returns whether the segment
        is still to be delivered as if no connection existed (no record, an expired
        one, or a new SYN that may reuse the 4-tuple, RFC 6191: the listener takes
        it), and for a reuse the ISS the new incarnation must start from: as Linux
        (``tcp_timewait_state_process``), the old SND.NXT plus a maximal unscaled
        window and 2, so no segment of the old one can be taken for the new one's."""
        key = (lip, seg.dst_port, rip, seg.src_port)
        tw = self.time_wait.get(key)
        if tw is None:
            return True, None
        if tw.expired(now):  # not swept yet: it is gone
            self._drop_time_wait(key)
            self.counters["tw_expired"] += 1
            return True, None
        expires = tw.expires
        verdict, reply = tw.receive(seg, now, self.counters)
        if verdict is not TwVerdict.KEEP:
            self._drop_time_wait(key)
            if verdict is TwVerdict.REOPEN:
                return True, tw.snd_nxt + REUSE_ISS_GAP
            return False, None
        if tw.expires != expires:
            self.time_wait.move_to_end(key)  # keep the table in deadline order
        if reply is not None:
            self._emit(Outgoing(lip, rip, reply), now)
        return False, None

    def _enter_time_wait(self, conn: TcpConnection, now: float) -> bool:
        """Replace ``conn`` by its TIME-WAIT record once the application no longer
        needs it (``TcpConnection.time_wait_record``). True if it was replaced."""
        record = conn.time_wait_record(now)
        if record is None:
            return False
        self._forget(conn)
        key = record.key
        if key in self.time_wait:
            self._drop_time_wait(key)
        while self.time_wait and len(self.time_wait) >= self.max_time_wait:
            # Linux refuses the new bucket instead ("time wait bucket table
            # overflow"); dropping the record nearest its deadline loses less.
            self._drop_time_wait(next(iter(self.time_wait)))
            self.counters["tw_overflow"] += 1
        if self.max_time_wait > 0:
            self.time_wait[key] = record
            self._port_used(key[1], 1)
            self.counters["tw_created"] += 1
        else:
            self.counters["tw_overflow"] += 1
        return True

    def _expire_time_wait(self, now: float) -> None:
        tws = self.time_wait
        while tws:
            key, tw = next(iter(tws.items()))
            if not tw.expired(now):
                # Records are in deadline order as long as every connection uses the
                # same time_wait; a longer one ahead only delays the next sweep.
                return
            self._drop_time_wait(key)
            self.counters["tw_expired"] += 1

    # ------------------------------------------------------------------ timers

    def _schedule(self, owner: TcpConnection | Listener) -> None:
        """Make sure the heap wakes the engine for ``owner`` by its next deadline.

        Lazily, as kernels re-arm timers: a deadline that moves later (the
        retransmission timer restarted by every segment sent) keeps the entry already
        queued, which on surfacing early is moved to the owner's deadline of that
        moment; only an earlier deadline pushes an entry. A request/response
        connection then pushes about once per RTO, not once per reply."""
        deadline = owner.poll_at()
        if deadline is None:
            return
        queued = self._wake_at.get(owner)
        if queued is not None and queued <= deadline:
            return
        self._push(owner, deadline)

    def _push(self, owner: TcpConnection | Listener, deadline: float) -> None:
        self._wake_at[owner] = deadline
        heapq.heappush(self._timers, (deadline, next(self._tiebreak), owner))
        if len(self._timers) > self._timers_limit:
            self._compact_timers()

    def _compact_timers(self) -> None:
        """Drop superseded heap entries. Entries are removed lazily when they reach
        the top, but each one holds its owner: a connection handed over to a
        TIME-WAIT record (or closed) would stay in memory until its last stale
        deadline (FIN-WAIT-2's 60 s, keepalive's hours). Rebuilding once the heap
        outgrows twice the live owners keeps the cost amortised O(1) per push."""
        self._timers = [e for e in self._timers if self._is_current(e)]
        heapq.heapify(self._timers)
        live = len(self.connections) + len(self.listeners)
        self._timers_limit = max(2 * max(live, len(self._timers)), TIMER_SLACK)
        self.counters["timer_heap_compactions"] += 1

    def _is_current(self, entry: tuple[float, int, TcpConnection | Listener]) -> bool:
        deadline, _, owner = entry
        return self._wake_at.get(owner) == deadline

    def _pop_due(self, now: float) -> TcpConnection | Listener | None:
        """Pop heap entries until one is due at ``now`` (returns its owner) or none is
        (None). On the way, superseded entries go and early ones move to their
        owner's deadline of this moment."""
        timers = self._timers
        while timers:
            deadline, _, owner = timers[0]
            if deadline > now:
                return None
            entry = heapq.heappop(timers)
            if not self._is_current(entry):
                continue  # superseded by an earlier entry of the same owner
            actual = owner.poll_at()
            if actual is not None and actual > now:
                self._push(owner, actual)  # woke early: the deadline moved later
                continue
            del self._wake_at[owner]
            if actual is not None:
                return owner
        return None

    def _settle_heap_top(self) -> None:
        """Drop superseded entries off the top: the top is then a wake-up some owner
        asked for, at or before its deadline (an early one costs one poll that
        moves it; finding each owner's exact deadline here would cost a re-push per
        re-armed connection on every idle check)."""
        timers = self._timers
        while timers and not self._is_current(timers[0]):
            heapq.heappop(timers)

    def _run_timers(self, now: float) -> None:
        if self.time_wait:
            self._expire_time_wait(now)
        while (owner := self._pop_due(now)) is not None:
            owner.on_timer(now)
            self._dirty.add(owner)
            if isinstance(owner, Listener):
                self.activity.listeners.add(owner)
            else:
                self.activity.connections.add(owner)

    # ------------------------------------------------------------------ transmit

    def _transmit(self, now: float) -> None:
        # The common idle/spinning round has nothing to build and nothing to send.
        if self._dirty or self._pending or self._tx:
            self._transmit_dirty(now)
        if self._kick is not None:
            # What this round queued leaves now. A round that
            # sent data may hand the kernel's transmit to the NIC's tx thread; one of
            # pure ACKs (a bulk receive) keeps it here: on veth that work is the
            # sender's ACK processing, and the tx thread would run it on the CPU of
            # the sender, which in a bulk transfer is the one short of time.
            self._kick(self._round_data > 0)
            self._round_data = 0

    def _transmit_dirty(self, now: float) -> None:
        self._retry_pending(now)
        dirty, self._dirty = self._dirty, set()
        for owner in dirty:
            try:
                self._transmit_owner(owner, now)
            except Exception:
                self._internal_error("transmit")
        if self._tx:
            sent = self.nic.transmit(self._tx)
            self.counters["tx_frames"] += sent
            if sent < len(self._tx):
                self.counters["tx_dropped_nic_full"] += len(self._tx) - sent
            self._tx = []

    def _transmit_owner(self, owner: TcpConnection | Listener, now: float) -> None:
        if isinstance(owner, Listener):
            for out in owner.segments_to_send(now):
                self._emit(out, now)
            self._schedule(owner)
            return
        segments = owner.segments_to_send(now)
        if segments:
            self._emit_connection(owner, segments, now)
        if owner.state is TcpState.CLOSED:
            self._forget(owner)
            return
        if owner.state is TcpState.TIME_WAIT and self._enter_time_wait(owner, now):
            return
        self._schedule(owner)

    def _forget(self, conn: TcpConnection) -> None:
        key = self.key_of(conn)
        if self.connections.get(key) is conn:
            del self.connections[key]
            self._port_used(conn.local_port, -1)
            self.closed_counters.update(conn.counters)
            self.activity.connections.add(conn)
        raw = self._raw_key(conn)
        if self._by_raw.get(raw) is conn:
            del self._by_raw[raw]
        self._wake_at.pop(conn, None)
        self._templates.pop(conn, None)

    def _emit_connection(self, conn: TcpConnection, segments: list[TcpSegment],
                         now: float) -> None:
        """A connection's segments of this round: runs of data and ACK segments built by
        one C call each (``_build_run``); a segment the builder does not take (SYN
        options, urgent data), and every one while the next hop's MAC is unknown, by
        ``_emit``."""
        mac = self.network.neighbour(self.network.next_hop(conn.remote_ip), now)
        i, n = 0, len(segments)
        while i < n:
            if mac is None or not batchable(segments[i]):
                self._emit(Outgoing(conn.local_ip, conn.remote_ip, segments[i]), now)
                i += 1
                continue
            end = i + 1
            while end < n and end - i < BUILD_BATCH and batchable(segments[end]):
                end += 1
            self._build_run(conn, mac, segments, i, end)
            i = end

    def _build_run(self, conn: TcpConnection, mac: bytes, segments: list[TcpSegment],
                   start: int, end: int) -> None:
        """Frames for ``segments[start:end]`` (each ``batchable``), one MTU-sized slot of
        one buffer each, queued for the NIC; one too large for the MTU is dropped."""
        known = self._templates.get(conn)
        if known is None or known[0] != mac:
            known = (mac, make_template(FrameTemplate(
                src_mac=self.network.mac, dst_mac=mac, src_ip=conn.local_ip,
                dst_ip=conn.remote_ip, src_port=conn.local_port,
                dst_port=conn.remote_port)))
            self._templates[conn] = known
        builder = self._builder
        offset = 0
        for k in range(start, end):
            seg = segments[k]
            self._ip_id = (self._ip_id + 1) & 0xFFFF
            builder.set_segment(k - start, seg, offset, self._ip_id)
            offset += len(seg.payload)
        n = end - start
        payloads = segments[start].payload if n == 1 else b"".join(
            [seg.payload for seg in segments[start:end]])
        stride = self.network.mtu + ETH_HLEN
        out = bytearray(n * stride)
        builder.build_strided(known[1], out, stride, n, payloads)
        view = memoryview(out)
        lens = builder.out_lens
        for k in range(n):
            size = int(lens[k])
            if size == 0:
                self.counters["tx_dropped_oversize"] += 1
                continue
            if segments[start + k].payload:
                self._round_data += 1
            self._tx.append(view[k * stride:k * stride + size])

    def _emit(self, out: Outgoing, now: float) -> None:
        hop = self.network.next_hop(out.dst_ip)
        ip: Ipv4Header | Ipv6Header
        if len(out.dst_ip) == 16:
            ip = Ipv6Header(out.src_ip, out.dst_ip)
            ethertype = ETHERTYPE_IPV6
        else:
            self._ip_id = (self._ip_id + 1) & 0xFFFF
            ip = Ipv4Header(out.src_ip, out.dst_ip, ident=self._ip_id)
            ethertype = ETHERTYPE_IPV4
        mac = self.network.neighbour(hop, now)
        eth = EthernetHeader(mac or bytes(6), self.network.mac, ethertype)
        size = frame_len(eth, ip, out.segment)
        if size > self.network.mtu + eth.header_len:
            self.counters["tx_dropped_oversize"] += 1
            return
        buf = bytearray(size)
        build_frame_into(buf, 0, eth, ip, out.segment)
        if out.segment.payload:
            self._round_data += 1
        if mac is not None:
            self._tx.append(buf)
            return
        held = self._pending.setdefault(hop, deque())
        if len(held) >= PENDING_PER_HOP:
            held.popleft()
            self.counters["tx_dropped_neighbour_queue"] += 1
        held.append(bytes(buf))
        self.counters["tx_held_for_neighbour"] += 1

    def _retry_pending(self, now: float) -> None:
        for hop in list(self._pending):
            mac = self.network.neighbour(hop, now)
            if mac is None:
                continue
            for frame in self._pending.pop(hop):
                self._tx.append(mac + frame[6:])

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        """Reset every connection (the peer learns at once), stop listening, release."""
        for conn in list(self.connections.values()):
            conn.abort()
            self._dirty.add(conn)
        for listener in list(self.listeners.values()):
            listener.close()
            self._dirty.add(listener)
        self._transmit(self.clock())
        for key in [*self.connections, *self.time_wait]:
            self._port_used(key[1], -1)
        self.connections.clear()
        self._templates.clear()
        self.time_wait.clear()
        self._by_raw.clear()
        self.listeners.clear()
        self.listener_families.clear()
