"""The C data plane's Python face: flows in and out, the loop, the NIC Python shares.

``DataPlane`` wraps one ``struct dp`` (``dataplane.h`` states the contract). The control
plane — the engine, the TCP core, the service — uses it in three ways:

* ``adopt(conn, ...)`` moves an established connection's hot state into C
  (``TcpConnection.export_hot``) with the descriptor of its application channel;
  from then on C runs it, per segment and per request, without Python;
* ``run(timeout)`` runs the C loop until Python has work: frames C declined (they go
  to the engine through ``DeclineNic``, in arrival order), flows C handed back
  (``handbacks``, each taken back with ``release``: ``TcpConnection.import_hot``), or
  Python's own descriptors readable;
* ``DeclineNic`` is the engine's NIC meanwhile: it receives what C declined and
  transmits through the same queue, after C's frames.

Without the compiled module (``available()`` False) nothing here works; the engine
then runs every connection in Python, as ``JOYRIDE_DATAPLANE=python`` asks.
"""

from __future__ import annotations

import importlib
import logging
import os
import select
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from joyride.engine.nic import Buffer, RxDescriptors
from joyride.tcp.connection import TcpConnection
from joyride.wire._native import ffi as wire_ffi
from joyride.wire.addr import WIDE, narrow, widen

if TYPE_CHECKING:
    from joyride.dataplane.workers import Workers

ffi: Any = None
lib: Any = None
try:
    _mod = importlib.import_module("joyride.dataplane._dataplane")
    ffi, lib = _mod.ffi, _mod.lib
except ImportError:  # pragma: no cover - the cffi build is part of every install
    pass

log = logging.getLogger(__name__)

#: ``JOYRIDE_DATAPLANE=python`` runs every connection in Python (the escape hatch and
#: the differential tests' reference); ``c`` (the default where built) uses this module.
ENV: Final = "JOYRIDE_DATAPLANE"
GSO_ENV: Final = "JOYRIDE_GSO"  # "0": every frame by AF_XDP (docs/dataplane.md)
SOL_PACKET: Final = 263  # linux/socket.h; PACKET_* from linux/if_packet.h
PACKET_VNET_HDR: Final = 15
REASONS: Final = ("none", "segment", "rto", "persist", "app_eof", "app_gone", "released",
                   "keepalive", "undelivered", "recovery", "reorder")


#: ``enum dp_tcp_state`` values of a born flow Python cannot run (SYN-RECEIVED: C's
#: half-open queue; TIME-WAIT and CLOSED: finished; SYN-SENT: an active open C runs,
#: which no TcpConnection knows): a claim or a close drops them.
UNRUNNABLE_STATES: Final = frozenset({1, 7, 8, 9})
#: ``enum dp_tcp_state``'s DP_SYN_SENT: an active open C runs (``DataPlane.connect``).
DP_SYN_SENT: Final = 9


#: ``enum dp_tcp_state`` values whose FIN is out and not yet acknowledged.
_DP_FIN_UNACKED: Final = frozenset({2, 5, 6})  # FIN-WAIT-1, CLOSING, LAST-ACK


def syn_offer_into(target: Any, config: Any) -> None:
    """What a handshake of ``config`` (a ``TcpConfig``) offers, into ``target``: a
    ``struct dp_syn_offer``, or a ``struct dp_listen_cfg`` (its fields of those names)."""
    target.default_peer_mss = config.default_peer_mss
    target.min_peer_mss = config.min_peer_mss
    target.window_scaling = int(config.window_scaling)
    target.window_scale_shift = config.window_scale_shift
    target.timestamps = int(config.timestamps)
    target.sack = int(config.sack)


def any_readable(fds: Sequence[int]) -> bool:
    """Whether any of ``fds`` has bytes or an EOF to read now."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN | select.POLLRDHUP)
    return bool(fds) and any(mask & (select.POLLIN | select.POLLRDHUP | select.POLLHUP)
                             for _fd, mask in poller.poll(0))


#: Microseconds the loop may keep polling after traffic before it sleeps: the cap of
#: its adaptive spin (docs/dataplane.md, "Spinning"; the service's default is
#: service.SERVICE_SPIN; 0 turns it off).
SPIN_ENV: Final = "JOYRIDE_DATAPLANE_SPIN_US"
# Full rx batches a queue may give one round (NAPI's budget): a round whose transmit
# is long must not leave the ACKs that clock it in the rx ring until it overflows.
RX_BATCHES: Final = 8
# How long a delivery to an application that claims ring mode waits for its claim
# before it goes on as a stream (a process without the shim never claims).
CLAIM_WAIT: Final = 0.1
CLAIM_BYTES: Final = 32  # sizeof(struct jr_chan_claim): a claim comes alone


def spin_from_env(default: float = 0.0) -> float:
    """Seconds the loop polls before it sleeps: ``$JOYRIDE_DATAPLANE_SPIN_US`` when
    set, else ``default`` (the service's SERVICE_SPIN; embedded mode passes its
    ``spin``)."""
    raw = os.environ.get(SPIN_ENV, "").strip()
    if not raw:
        return default
    try:
        micros = float(raw)
    except ValueError:
        raise ValueError(f"{SPIN_ENV}={raw!r}: expected microseconds") from None
    if not 0 <= micros <= 1_000_000:
        raise ValueError(f"{SPIN_ENV}={raw!r}: expected 0..1000000 microseconds")
    return micros * 1e-6


def available() -> bool:
    return lib is not None


def wanted() -> bool:
    """Whether the C data plane should run (built, and not switched off)."""
    choice = os.environ.get(ENV, "c").strip().lower()
    if choice not in ("c", "python"):
        raise ValueError(f"{ENV}={choice!r}: expected 'c' or 'python'")
    return choice == "c" and available()


def gso_wanted() -> bool:
    """Whether bulk data goes as GSO super-segments (``JOYRIDE_GSO``, on by default)."""
    choice = os.environ.get(GSO_ENV, "1").strip()
    if choice not in ("0", "1"):
        raise ValueError(f"{GSO_ENV}={choice!r}: expected '0' or '1'")
    return choice == "1"


@dataclass
class Released:
    """A flow C gave back: its TCB and ring contents, and why."""

    conn: TcpConnection
    reason: str
    app_eof: bool
    app_gone: bool
    channel: ChannelState


@dataclass
class ChannelState:
    """A connection's application channel mode, which moves with its flow between C and
    Python (``struct dp_tcb``'s ``chan``, ``claim_check``, ``claim_wait``, ``claim_by``,
    ``revert_chan``; docs/channels.md): the shared-memory channel's id (0: a plain
    stream); whether the application's first bytes may still be a claim; whether
    delivery waits for them, until ``claim_by``; the channel an application left, whose
    unread bytes go to its new socket first (0: none)."""

    chan: int = 0
    claim_check: bool = False
    claim_wait: bool = False
    claim_by: float = 0.0
    revert_chan: int = 0

    @classmethod
    def of(cls, tcb: Any) -> ChannelState:
        return cls(int(tcb.chan), bool(tcb.claim_check), bool(tcb.claim_wait),
                   float(tcb.claim_by), int(tcb.revert_chan))

    def into(self, tcb: Any) -> None:
        tcb.chan = self.chan
        tcb.revert_chan = self.revert_chan
        tcb.claim_check = int(self.claim_check)
        tcb.claim_wait = int(self.claim_wait)
        tcb.claim_by = self.claim_by


@dataclass
class Born:
    """A flow C opened itself (``dp_listen``) and gave back: Python has no connection
    for it yet; ``TcpConnection.from_hot`` makes one from these."""

    tcb: Any  # a copy of its struct dp_tcb
    rcv: bytes
    snd: bytes
    reason: str

    @property
    def key(self) -> tuple[bytes, int, bytes, int]:
        t = self.tcb
        v6 = bool(t.ipv6)
        return (narrow(ffi.buffer(t.local_ip), v6), int(t.local_port),
                narrow(ffi.buffer(t.remote_ip), v6), int(t.remote_port))


@dataclass
class BornView:
    """A copy of a flow C opened and still runs: its TCB and the bytes its rings hold."""

    tcb: Any
    recv_queue: int
    send_queue: int


@dataclass(frozen=True)
class ListenSpec:
    """What ``DataPlane.listen`` needs of a port whose connections C opens."""

    port: int
    names: tuple[str, ...]  # the applications' unix listeners (abstract, no NUL)
    config: Any  # TcpConfig
    ts_offset: int
    isn_key: bytes
    claims: tuple[bool, ...] = ()  # per name: its application claims ring mode
    # Per name: an AF_INET6 socket's (dual-stack), whose IPv4 peers are named v4-mapped.
    mapped: tuple[bool, ...] = ()
    # Per name: the IP versions (4, 6) of the connections it takes (none given: IPv4).
    families: tuple[frozenset[int], ...] = ()


#: dp_run's wake bit: the door of set_bell's hub rang (dataplane.h, DP_WAKE_DOOR).
WAKE_DOOR: Final = 16
#: ... and: application sessions wait for the control plane (DP_WAKE_SESSION).
WAKE_SESSION: Final = 32


@dataclass(frozen=True)
class Failure:
    """An active open C ran that failed (``struct dp_failure``): its 4-tuple, the errno
    SO_ERROR reports, its application's user and the name of the socket it held."""

    key: tuple[bytes, int, bytes, int]
    err: int
    uid: int
    name: str


@dataclass(frozen=True)
class ConnectPolicy:
    """What C needs to answer an application's OP_CONNECT alone (``struct
    dp_connect_policy``): the TCP configuration, the NIC's MAC, the engine's ISN and
    timestamp keys, the ephemeral range, the service's --group (None: every user) and
    whether ring mode may be granted."""

    config: Any  # TcpConfig
    src_mac: bytes
    isn_key: bytes
    ts_key: bytes
    ports: tuple[int, int]  # both included
    gid: int | None
    channels: bool


class DataPlane:
    def __init__(self, *, mtu: int, batch: int = 64, max_flows: int = 65536,
                 verify_checksums: bool = True, spin: float = 0.0,
                 rx_batches: int = RX_BATCHES) -> None:
        if lib is None:
            raise RuntimeError("joyride.dataplane._dataplane is not built (pip install -e .)")
        cfg = ffi.new("struct dp_config *")
        cfg.max_flows = max_flows
        cfg.batch = batch
        cfg.max_frame = mtu + 18
        cfg.decline_frames = 4 * batch
        cfg.verify_checksums = int(verify_checksums)
        cfg.ttl = 64
        cfg.spin_ns = int(spin * 1e9)
        cfg.rx_batches = rx_batches
        dp = lib.dp_new(cfg)
        if dp == ffi.NULL:
            raise MemoryError("dp_new failed (out of memory or a bad configuration)")
        self._dp = ffi.gc(dp, lib.dp_free)
        self.mtu = mtu
        self._conns: dict[int, TcpConnection] = {}
        self._handle_of: dict[TcpConnection, int] = {}
        self._keep: list[Any] = []  # objects whose memory C points into (ports)
        self._tcb = ffi.new("struct dp_tcb *")
        self._connect_cfg = ffi.new("struct dp_connect_cfg *")
        # dp_failures' buffer: asked before every connect (Datapath._take_failures)
        self._failures = ffi.new("struct dp_failure[64]")
        self._app_end = ffi.new("int32_t *")
        self._sessions = ffi.new("struct dp_session[16]")
        self._connect_templates: dict[tuple[int, bool], tuple[Any, Any]] = {}
        self._handles = ffi.new("int64_t[]", max_flows)
        self._base = ffi.new("uint8_t **")
        self._offs = ffi.new("uint64_t **")
        self._lens = ffi.new("uint32_t **")
        self._stage_cap = batch * (mtu + 18)
        self._stage = ffi.new("uint8_t[]", self._stage_cap)
        self._stage_offs = ffi.new("uint64_t[]", batch)
        self._stage_lens = ffi.new("uint32_t[]", batch)
        self._batch = batch
        self.has_door = False  # set_bell

    @property
    def ptr(self) -> Any:
        """The ``struct dp *`` (``workers.Workers`` runs it in a thread of C's)."""
        return self._dp

    # -- ports and descriptors --------------------------------------------------------

    def add_xsk_port(self, sock: Any) -> None:
        """An AF_XDP socket (``xsk.Socket``) the loop receives from and sends on."""
        from xsk._native import ffi as xsk_ffi
        from xsk._native import lib as xsk_lib

        port = ffi.new("struct dp_port *")
        port.ctx = ffi.cast("void *", ffi_address(sock._s))
        port.fd = sock.fileno()
        # Room on the tx ring (dataplane.h, room_fd): told by the socket's tx thread
        # when one runs in copy mode (the consumer moves inside its sendto; a zero-copy
        # driver moves it later, from NAPI), else EPOLLOUT on the socket that has the
        # ring; the loop waits for room on its first port only.
        first = not self._keep
        port.room_polled = int(sock.tx_fileno() == sock.fileno())
        port.room_fd = (xsk_lib.xsk_tx_room_fd(sock._s)
                        if first and not sock.zerocopy else -1)
        port.umem = ffi.cast("uint8_t *", sock.umem.address)
        port.tx_offset = sock._tx_offset
        for name, fn in (("rx", "xsk_rx"), ("release", "xsk_release"),
                         ("tx_copy", "xsk_tx_copy_kick"), ("kick", "xsk_kick"),
                         ("complete", "xsk_complete"), ("want_room", "xsk_tx_want_room")):
            setattr(port, name, ffi.cast("void *", ffi_address(_addressof(xsk_lib, fn))))
        # Frames placed and completed (GSO's order, dataplane.h): the socket's counters.
        for field, counter in (("tx_placed", "tx_frames"), ("tx_completed", "comp_frames")):
            where = xsk_ffi.addressof(sock._s[0], "st", counter)
            setattr(port, field, ffi.cast("const uint64_t *", ffi_address(where)))
        self._check(lib.dp_add_port(self._dp, port), "adding the AF_XDP port")
        self._keep.append(sock)

    def use_gso(self, ifname: str) -> bool:
        """Send bulk data as GSO super-segments through an AF_PACKET socket on ``ifname``
        (the first port's interface; dataplane.h, ``dp_set_gso``). Opens the socket now,
        so call it while the process may (``CAP_NET_RAW``). False, with GSO off, when the
        kernel refuses the socket or its options; the frames then all go by AF_XDP."""
        try:
            sock = gso_socket(ifname)
        except OSError as exc:
            log.warning("GSO transmit off on %s: %s", ifname, exc)
            return False
        self.set_gso(sock)
        return True

    def set_gso(self, sock: socket.socket) -> None:
        """Send GSO datagrams on ``sock`` (kept open while the plane lives): the
        AF_PACKET socket of ``use_gso``, or a datagram socket pair's end in tests."""
        self._keep.append(sock)
        lib.dp_set_gso(self._dp, sock.fileno())

    def add_memory_port(self, slots: int = 4096, tx_limit: int | None = None) -> MemoryPort:
        """An in-memory port (tests): frames pushed there are received here. With
        ``tx_limit``, C's frames find the port full once it holds that many."""
        mem = MemoryPort(slots, self.mtu + 18)
        if tx_limit is not None:
            self._check(lib.dp_memport_limit_tx(mem.ptr, tx_limit), "limiting the port")
        port = ffi.new("struct dp_port *")
        lib.dp_memport_port(mem.ptr, port)
        self._check(lib.dp_add_port(self._dp, port), "adding the memory port")
        self._keep.append(mem)
        return mem

    def watch(self, fd: int) -> None:
        """``run`` returns when ``fd`` is readable (the control plane's own poller)."""
        self._check(lib.dp_watch_fd(self._dp, fd), "watching the control plane's poller")

    @staticmethod
    def _check(rc: int, what: str) -> None:
        if rc < 0:
            raise OSError(-rc, f"{what}: {os.strerror(-rc)}")

    # -- flows ------------------------------------------------------------------------

    def owns(self, conn: TcpConnection) -> bool:
        return conn in self._handle_of

    def adopt(self, conn: TcpConnection, src_mac: bytes, dst_mac: bytes,
              app_fd: int = -1, channel: ChannelState | None = None) -> bool:
        """Move ``conn`` into C (False, nothing moved, when it is not ``hot_ready`` or
        the table is full). ``app_fd``: the service's end of its application channel,
        in ``channel``'s mode."""
        if conn in self._handle_of:
            return True
        tcb = self._tcb
        ffi.memmove(tcb, bytes(ffi.sizeof("struct dp_tcb")), ffi.sizeof("struct dp_tcb"))
        ffi.memmove(tcb.local_ip, widen(conn.local_ip), WIDE)
        ffi.memmove(tcb.remote_ip, widen(conn.remote_ip), WIDE)
        tcb.ipv6 = len(conn.local_ip) == WIDE
        tcb.local_port = conn.local_port
        tcb.remote_port = conn.remote_port
        tcb.src_mac = src_mac
        tcb.dst_mac = dst_mac
        tcb.app_fd = app_fd
        (channel or ChannelState()).into(tcb)
        moved = conn.export_hot(tcb)
        if moved is None:
            return False
        rcv, snd = moved
        handle = int(lib.dp_flow_adopt(self._dp, tcb, rcv, len(rcv), snd, len(snd)))
        if handle < 0:
            # Refused (full table, bad sizes): the connection takes its state back.
            tcb.reason = 0
            conn.import_hot(tcb, rcv, snd)
            return False
        self._conns[handle] = conn
        self._handle_of[conn] = handle
        return True

    def connect(self, config: Any, key: tuple[bytes, int, bytes, int], src_mac: bytes,
                dst_mac: bytes, iss: int, ts_offset: int, *, uid: int, claims: bool,
                now: float) -> tuple[int, int]:
        """C opens a connection itself (``dp_connect``) for user ``uid``: the 4-tuple
        ``key`` (local first), its SYN toward ``dst_mac`` with ISS ``iss``, the TCB
        ``config`` (a ``TcpConfig``) gives one (``TcpConnection.listen_template``); with
        ``claims`` the application claims ring mode first. (The flow's handle, the
        application's end of the socket pair C made: the caller's to send and close);
        OSError (EEXIST: the 4-tuple is in C's table; EINVAL: a configuration C does not
        run)."""
        lip, lport, rip, rport = key
        ipv6 = len(lip) == WIDE
        cfg = self._connect_cfg
        ffi.memmove(cfg, self._connect_template(config, ipv6), ffi.sizeof(cfg[0]))
        tcb = cfg.tcb
        ffi.memmove(tcb.local_ip, widen(lip), WIDE)
        ffi.memmove(tcb.remote_ip, widen(rip), WIDE)
        tcb.ipv6 = ipv6
        tcb.local_port = lport
        tcb.remote_port = rport
        tcb.src_mac = src_mac
        tcb.dst_mac = dst_mac
        tcb.iss = iss & 0xFFFFFFFF
        tcb.ts_offset = ts_offset & 0xFFFFFFFF
        tcb.app_uid = uid
        tcb.claim_check = tcb.claim_wait = int(claims)
        app_end = self._app_end
        handle = int(lib.dp_connect(self._dp, cfg, now, app_end))
        self._check(handle, "connecting in C")
        return handle, int(app_end[0])

    def _connect_template(self, config: Any, ipv6: bool) -> Any:
        """The part of ``dp_connect``'s configuration that only ``config`` and the
        family decide, made once (``listen_template`` costs more than the rest of a
        connect's Python): a ``struct dp_connect_cfg``."""
        # By identity (a TcpConfig is not hashable; none is changed once made), the
        # configuration kept alongside so that its id cannot name another one.
        made = self._connect_templates.get((id(config), ipv6))
        if made is not None and made[0] is config:
            return made[1]
        cfg = ffi.new("struct dp_connect_cfg *")
        TcpConnection.listen_template(config, cfg.tcb, ipv6=ipv6)
        cfg.tcb.time_wait_len = config.time_wait
        cfg.tcb.fin_wait2_len = config.fin_wait2_timeout
        cfg.max_syn_retries = config.max_syn_retries
        syn_offer_into(cfg.offer, config)
        cfg.claim_wait_ms = int(CLAIM_WAIT * 1000)
        if len(self._connect_templates) >= 8:  # configurations come and go: keep a few
            self._connect_templates.clear()
        self._connect_templates[(id(config), ipv6)] = (config, cfg)
        return cfg

    def failures(self) -> list[Failure]:
        """The active opens C ran that failed since the last call, oldest first."""
        out: list[Failure] = []
        batch = self._failures
        while n := int(lib.dp_failures(self._dp, batch, len(batch))):
            for i in range(n):
                f = batch[i]
                v6 = bool(f.ipv6)
                key = (narrow(bytes(ffi.buffer(f.local_ip, WIDE)), v6), int(f.local_port),
                       narrow(bytes(ffi.buffer(f.remote_ip, WIDE)), v6), int(f.remote_port))
                out.append(Failure(key, int(f.err), int(f.app_uid),
                                   ffi.string(f.name).decode("ascii", "replace")))
        return out

    # -- OP_CONNECT answered in C (dataplane.h; sessions.c) --------------------------------

    def sessions_listen(self, fd: int) -> None:
        """Let the loop accept the service's application sessions on the listening
        socket ``fd`` (-1: no more; ``fd`` stays the caller's)."""
        self._check(lib.dp_sessions_listen(self._dp, fd), "watching the sessions")

    def sessions(self) -> list[tuple[int, bytes]]:
        """The sessions C accepted and left to the control plane (``WAKE_SESSION``):
        each one's descriptor (the caller's now) and its request's bytes (b"": none
        read yet)."""
        out: list[tuple[int, bytes]] = []
        batch = self._sessions
        while n := int(lib.dp_sessions(self._dp, batch, len(batch))):
            out.extend((int(batch[i].fd), bytes(ffi.buffer(batch[i].raw, batch[i].len)))
                       for i in range(n))
        return out

    def connect_policy(self, policy: ConnectPolicy | None) -> None:
        """What C may answer alone from now on (None: nothing); forgets the routes."""
        if policy is None:
            self._check(lib.dp_connect_policy(self._dp, ffi.NULL), "connect policy")
            return
        p = ffi.new("struct dp_connect_policy *")
        for cfg, ipv6 in ((p.v4, False), (p.v6, True)):
            ffi.memmove(ffi.addressof(cfg), self._connect_template(policy.config, ipv6),
                        ffi.sizeof("struct dp_connect_cfg"))
            cfg.tcb.ipv6 = ipv6
            cfg.tcb.src_mac = policy.src_mac
        ffi.memmove(p.isn_key, policy.isn_key, len(p.isn_key))
        ffi.memmove(p.ts_key, policy.ts_key, len(p.ts_key))
        p.port_lo, p.port_hi = policy.ports
        p.gid = -1 if policy.gid is None else policy.gid
        p.channels = policy.channels
        self._check(lib.dp_connect_policy(self._dp, p), "connect policy")

    def connect_route(self, ip: bytes, local_ip: bytes, dst_mac: bytes,
                      expires: float) -> None:
        """C may answer connects to ``ip`` until ``expires``: from ``local_ip``, through
        the next hop at ``dst_mac``."""
        if len(local_ip) != len(ip):
            raise ValueError("a route's addresses are of one family")
        self._check(lib.dp_connect_route(self._dp, ip, len(ip), local_ip, dst_mac, expires),
                    "connect route")

    def connect_routes_clear(self) -> None:
        lib.dp_connect_routes_clear(self._dp)

    def port_hold(self, port: int, delta: int) -> None:
        """The control plane uses ``port`` once more (1) or once less (-1): C's
        answers leave it alone while any use is left."""
        self._check(lib.dp_port_hold(self._dp, port, delta), f"port {port} hold")

    def release(self, conn: TcpConnection, now: float | None = None) -> Released | None:
        """Take ``conn`` back from C (None: C does not own it); ``now``, the time, for
        what it owes at once (``TcpConnection.import_hot``)."""
        handle = self._handle_of.get(conn)
        if handle is None:
            return None
        return self._release(handle, now)

    def _release(self, handle: int, now: float | None = None) -> Released | None:
        conn = self._conns.pop(handle, None)
        if conn is None:
            return None
        del self._handle_of[conn]
        tcb = self._tcb
        rc, rcv, snd = self._copy_out(handle, tcb)
        self._check(rc, "releasing a flow")
        conn.import_hot(tcb, rcv, snd, now)
        return Released(conn, _reason(tcb), bool(tcb.app_eof), bool(tcb.app_gone),
                        ChannelState.of(tcb))

    def _copy_out(self, handle: int, tcb: Any) -> tuple[int, bytes, bytes]:
        """``dp_flow_release`` of ``handle`` into ``tcb``: its result (0 or -errno) and
        the bytes its receive and send rings held (the receive ring's in-order bytes,
        then its out-of-order ranges': ``TcpConnection.import_hot`` tells them apart)."""
        rlen = max(int(lib.dp_flow_rcv_len(self._dp, handle)), 0)
        rlen += max(int(lib.dp_flow_ooo_len(self._dp, handle)), 0)  # held out of order
        slen = max(int(lib.dp_flow_snd_len(self._dp, handle)), 0)
        rcv = ffi.new("uint8_t[]", max(rlen, 1))
        snd = ffi.new("uint8_t[]", max(slen, 1))
        rc = int(lib.dp_flow_release(self._dp, handle, tcb, rcv, rlen, snd, slen))
        return rc, bytes(ffi.buffer(rcv, rlen)), bytes(ffi.buffer(snd, slen))

    def handbacks(self, now: float | None = None) -> list[Released | Born]:
        """The flows C gave back since the last call, taken back into Python at ``now``
        (a flow C opened itself comes back as ``Born``)."""
        out: list[Released | Born] = []
        while True:
            n = int(lib.dp_handbacks(self._dp, self._handles, len(self._handles)))
            if n == 0:
                return out
            for i in range(n):
                handle = int(self._handles[i])
                got = (self._release(handle, now) if handle in self._conns
                       else self._release_born(handle))
                if got is not None:
                    out.append(got)

    def _release_born(self, handle: int) -> Born | None:
        tcb = ffi.new("struct dp_tcb *")
        rc, rcv, snd = self._copy_out(handle, tcb)
        return Born(tcb, rcv, snd, _reason(tcb)) if rc == 0 else None

    def _find(self, key: tuple[bytes, int, bytes, int]) -> tuple[int, Any]:
        """The handle of the flow C runs for a 4-tuple and a copy of its TCB, or
        (-1, None)."""
        lip, lport, rip, rport = key
        if len(lip) != len(rip):
            return -1, None
        handle = int(lib.dp_flow_find(self._dp, lip, lport, rip, rport, len(lip)))
        if handle < 0:
            return -1, None
        tcb = ffi.new("struct dp_tcb *")
        return (handle, tcb) if lib.dp_flow_peek(self._dp, handle, tcb) == 0 else (-1, None)

    def peek_key(self, key: tuple[bytes, int, bytes, int]) -> Any:
        """A copy of the TCB of the flow C runs for a 4-tuple (adopted or born), or
        None: to look at it before deciding to take it."""
        return self._find(key)[1]

    def reuse_time_wait(self, key: tuple[bytes, int, bytes, int], now: float) -> int | None:
        """End the TIME-WAIT flow of a 4-tuple if a new outgoing connection may take it
        over (dp_tw_reuse: timestamps on, the last one a second old, every byte
        delivered): the ISS that connection must use (past the old SND.NXT), or None."""
        lip, lport, rip, rport = key
        if len(lip) != len(rip):
            return None
        iss = ffi.new("uint32_t *")
        if not lib.dp_tw_reuse(self._dp, lip, lport, rip, rport, len(lip), now, iss):
            return None
        return int(iss[0])

    def claim(self, key: tuple[bytes, int, bytes, int]) -> Born | None:
        """Take a flow C opened itself back by its 4-tuple (None: C has none)."""
        handle, tcb = self._find(key)
        if tcb is None or handle in self._conns:
            return None
        if int(tcb.tcp_state) in UNRUNNABLE_STATES:
            return None  # half-open or finished: C keeps it (its queue, its TIME-WAIT)
        return self._release_born(handle)

    def born_flows(self) -> list[BornView]:
        """What C holds of the connections it opened itself, TIME-WAIT included: copies
        for statistics (``joyride ss``); C keeps running them."""
        out: list[BornView] = []
        n = int(lib.dp_flows(self._dp, self._handles, len(self._handles)))
        for i in range(n):
            handle = int(self._handles[i])
            if handle in self._conns:
                continue
            tcb = ffi.new("struct dp_tcb *")
            if lib.dp_flow_peek(self._dp, handle, tcb) == 0 and tcb.born:
                out.append(BornView(tcb, int(lib.dp_flow_rcv_len(self._dp, handle)),
                                    int(lib.dp_flow_snd_len(self._dp, handle))))
        return out

    def ended_counts(self) -> Any:
        """The summed counters of the connections that were born in C and ended there
        (``struct dp_counts``, named as a TCB's: ``hot_counters`` reads it); those
        Python ever held were counted at their hand-back."""
        return lib.dp_ended_counts(self._dp)

    # -- listening ---------------------------------------------------------------------

    def listen(self, spec: ListenSpec, *, syn_backlog: int) -> None:
        """C opens the connections of ``spec.port`` itself from now on (handshake,
        delivery to ``spec.names`` round robin, close and TIME-WAIT)."""
        cfg = ffi.new("struct dp_listen_cfg *")
        config = spec.config
        cfg.port = spec.port
        cfg.n_names = len(spec.names)
        cfg.syn_backlog = syn_backlog
        cfg.ts_offset = spec.ts_offset & 0xFFFFFFFF
        cfg.max_syn_retries = config.max_syn_retries
        syn_offer_into(cfg, config)
        cfg.time_wait = config.time_wait
        cfg.fin_wait2_timeout = config.fin_wait2_timeout
        cfg.isn_key = spec.isn_key
        TcpConnection.listen_template(config, cfg.tmpl)
        TcpConnection.listen_template(config, cfg.tmpl6, ipv6=True)
        for i, name in enumerate(spec.names):
            raw = name.encode()
            if not 0 < len(raw) < lib.DP_NAME_BYTES:
                raise ValueError(f"unix name {name!r} does not fit")
            cfg.names[i] = raw
            if i < len(spec.claims) and spec.claims[i]:
                cfg.claims |= 1 << i
            if i < len(spec.mapped) and spec.mapped[i]:
                cfg.mapped |= 1 << i
            families = spec.families[i] if i < len(spec.families) else frozenset({4})
            cfg.takes4 |= (4 in families) << i
            cfg.takes6 |= (6 in families) << i
        cfg.claim_wait_ms = int(CLAIM_WAIT * 1000)
        self._check(lib.dp_listen(self._dp, cfg), f"listening on port {spec.port} in C")

    def unlisten(self, port: int) -> None:
        lib.dp_unlisten(self._dp, port)  # -ENOENT: C was not listening there

    def set_path_mss(self, ip: bytes, mss: int, expires: float) -> None:
        """Connections C opens to ``ip`` until ``expires`` send segments of at most
        ``mss`` (with options): a path MSS the control plane learnt (0: forget it)."""
        self._check(lib.dp_path_mss(self._dp, ip, len(ip), mss, expires),
                    f"path MSS for {ip.hex()}")

    # -- shared-memory channels (dataplane.h dp_chan_*: C keeps every channel) -----------

    def set_bell(self, hub: Any) -> None:
        """Grant claims from this process's own application the bell of ``hub`` (a
        ``joyride.dataplane.hub.Hub``; None: none). Set it before the loop's thread runs
        and keep ``hub`` alive while the plane is (``dp_set_bell``)."""
        self._check(lib.dp_set_bell(self._dp, ffi.NULL if hub is None else hub.ptr),
                    "watching the channels' door")
        self.has_door = hub is not None
        if hub is not None:
            self._keep.append(hub)

    def chan_first_bytes(self, first: bytes, fd: int, claimable: bool) -> int:
        """The application's first bytes on a claiming connection (and the descriptor
        that came with them, or -1): the channel's id, -ENOMSG for payload, or -errno
        for a refused claim (its bytes consumed)."""
        return int(lib.dp_chan_first_bytes(self._dp, first, len(first), fd, int(claimable)))

    @staticmethod
    def chan_recv(fd: int, size: int) -> tuple[int, bytes, int]:
        """A connection's first bytes, read as a claim must be (``dp_chan_recv``):
        (bytes read or -errno, the bytes, the descriptor that came with them or -1)."""
        buf = ffi.new("uint8_t[]", size)
        got = ffi.new("int *")
        n = int(lib.dp_chan_recv(fd, buf, size, got))
        return n, bytes(ffi.buffer(buf, max(n, 0))), int(got[0])

    def chan_take_first(self, fd: int, claimable: bool) -> tuple[int, bytes, int]:
        """The claim check whole (``dp_chan_take_first``): (the bytes read, or 0 at the
        application's EOF, or -errno; those bytes; the decision on them: a channel's id,
        -ENOMSG for payload, other -errno for a refused claim)."""
        buf = ffi.new("uint8_t[]", CLAIM_BYTES)
        got = ffi.new("int64_t *")
        decision = int(lib.dp_chan_take_first(self._dp, fd, buf, CLAIM_BYTES,
                                              int(claimable), got))
        n = int(got[0])
        return n, bytes(ffi.buffer(buf, max(n, 0))), decision

    def chan_deliver(self, chan: int, fd: int, data: memoryview) -> int:
        return int(lib.dp_chan_deliver(self._dp, chan, fd, ffi.from_buffer(data), len(data)))

    def chan_collect(self, chan: int, fd: int, into: memoryview) -> int:
        return int(lib.dp_chan_collect(self._dp, chan, fd,
                                       ffi.from_buffer(into, require_writable=True), len(into)))

    def chan_idle(self, chan: int, fd: int, waits: int) -> int:
        return int(lib.dp_chan_idle(self._dp, chan, fd, waits))

    def chan_wait_door(self, chan: int, fd: int, waits: int) -> int:
        """``chan_idle`` for a pump whose application's writer is blocked: armed on the
        arena's door, whose ring wakes ``run`` (``DP_WAKE_DOOR``), the socket left
        undrained (dp_chan_wait_door; -ENODEV: no door)."""
        return int(lib.dp_chan_wait_door(self._dp, chan, fd, waits))

    def chan_tx_eof(self, chan: int) -> bool:
        return bool(lib.dp_chan_tx_eof(self._dp, chan))

    def chan_rx_unread(self, chan: int) -> int:
        """Bytes put in the channel's rx that the application has not taken (-1: its
        index is impossible)."""
        return int(lib.dp_chan_rx_unread(self._dp, chan))

    def chan_tx_queued(self, chan: int) -> int:
        """Bytes the application wrote into the channel's tx that are not taken yet."""
        return int(lib.dp_chan_tx_queued(self._dp, chan))

    def chan_rx_eof(self, chan: int) -> None:
        lib.dp_chan_rx_eof(self._dp, chan)

    def chan_release(self, chan: int) -> None:
        lib.dp_chan_release(self._dp, chan)

    def chan_revert(self, chan: int, fd: int) -> int:
        """Once the application asked to leave ring mode and tx is empty, its new
        socket takes ``fd``'s place: 1 switched, 0 not now, -errno (``dp_chan_revert``)."""
        return int(lib.dp_chan_revert(self._dp, chan, fd))

    def chan_flush(self, chan: int, fd: int) -> int:
        """After a revert: rx's unread bytes to ``fd``; the bytes still to send (0: done,
        release the channel) or -errno (``dp_chan_flush``)."""
        return int(lib.dp_chan_flush(self._dp, chan, fd))

    def peek(self, conn: TcpConnection) -> Any:
        """A copy of a C-owned flow's TCB (statistics), or None."""
        handle = self._handle_of.get(conn)
        if handle is None:
            return None
        tcb = ffi.new("struct dp_tcb *")
        return tcb if lib.dp_flow_peek(self._dp, handle, tcb) == 0 else None

    def view(self, conn: TcpConnection) -> dict[str, Any] | None:
        """What statistics show of a C-owned connection (its Python object is parked,
        so its own fields are stale), or None when C does not own it."""
        tcb = self.peek(conn)
        if tcb is None:
            return None
        handle = self._handle_of[conn]
        return {
            "recv_queue": int(lib.dp_flow_rcv_len(self._dp, handle)),
            "send_queue": int(lib.dp_flow_snd_len(self._dp, handle)),
            "in_flight": (tcb.snd_nxt - tcb.snd_una) & 0xFFFFFFFF,
            "send_window": int(tcb.snd_wnd),
            "recv_buffer": int(tcb.rcv_cap),
            "cwnd": int(tcb.cwnd),
            "srtt": float(tcb.srtt) if tcb.srtt >= 0 else None,
            "segments_in": int(tcb.segs_in),
            "segments_out": int(tcb.segs_out),
        }

    @property
    def flows(self) -> int:
        return len(self._conns)

    def unsettled(self) -> bool:
        """Some flow C runs still has work a graceful stop should wait for: bytes not yet
        acknowledged, a FIN not yet sent or acknowledged (FIN-WAIT-1, CLOSING, LAST-ACK),
        or bytes or an EOF waiting on its application descriptor."""
        n = int(lib.dp_flows(self._dp, self._handles, len(self._handles)))
        tcb = ffi.new("struct dp_tcb *")
        fds: list[int] = []
        for i in range(n):
            handle = int(self._handles[i])
            if lib.dp_flow_peek(self._dp, handle, tcb) < 0:
                continue
            state = int(tcb.tcp_state)
            if state in _DP_FIN_UNACKED or (tcb.fin_queued and not tcb.fin_sent):
                return True
            if state not in UNRUNNABLE_STATES and lib.dp_flow_snd_len(self._dp, handle) > 0:
                return True
            if tcb.app_fd >= 0 and not tcb.app_eof and not tcb.app_gone:
                fds.append(int(tcb.app_fd))
        return any_readable(fds)

    # -- the loop ---------------------------------------------------------------------

    def door_wakes(self, on: bool) -> None:
        """Whether the door of ``set_bell``'s hub wakes ``run`` too (``DP_WAKE_DOOR``):
        while Python runs ring-mode connections of that application."""
        lib.dp_door_python(self._dp, int(on))

    def run(self, timeout: float | None) -> int:
        """Run C rounds until Python has work or ``timeout`` seconds pass (None: no
        limit, 0: one round). Returns the DP_WAKE_* bits."""
        ms = -1 if timeout is None else max(0, int(timeout * 1000 + 0.999))
        rc = int(lib.dp_run(self._dp, ms))
        if rc < 0:
            raise OSError(-rc, f"data plane loop: {os.strerror(-rc)}")
        return rc

    def round(self, now: float) -> int:
        """One round at an explicit time (tests)."""
        return int(lib.dp_round(self._dp, now)) & 0xFF

    def stats(self) -> dict[str, int]:
        st = lib.dp_stats(self._dp)
        out: dict[str, int] = {}
        for name, _ in ffi.typeof("struct dp_stats").fields:
            value = getattr(st, name)
            if name == "handbacks":
                for i, why in enumerate(REASONS):
                    out[f"handback_{why}"] = int(value[i])
            elif name.startswith("port_"):
                continue  # per queue: port_counters
            else:
                out[name] = int(value)
        out["flows"] = len(self._conns)
        return out

    def capture(self, tap: Any) -> None:
        """Copy every frame received and sent into ``tap`` (a ``tap.Tap``; None: stop).
        The caller keeps the tap alive while it is set."""
        lib.dp_set_capture(self._dp, ffi.NULL if tap is None else tap.ptr)

    def port_counters(self, index: int) -> dict[str, int]:
        """What the loop received on one queue (ports count in ``add_*_port`` order)."""
        st = lib.dp_stats(self._dp)
        return {"rx_frames": int(st.port_rx_frames[index]),
                "rx_bytes": int(st.port_rx_bytes[index]),
                "rx_batches": int(st.port_rx_batches[index])}

    # -- the NIC Python shares -------------------------------------------------------

    def declined(self) -> RxDescriptors | None:
        n = int(lib.dp_declined(self._dp, self._base, self._offs, self._lens))
        if n == 0:
            return None
        offs = np.frombuffer(ffi.buffer(self._offs[0], 8 * n), dtype=np.uint64)
        lens = np.frombuffer(ffi.buffer(self._lens[0], 4 * n), dtype=np.uint32)
        base = wire_ffi.cast("uint8_t *", int(ffi.cast("uintptr_t", self._base[0])))
        return RxDescriptors(base, offs, lens, n)

    def declined_count(self) -> int:
        return int(lib.dp_declined(self._dp, self._base, self._offs, self._lens))

    def declined_clear(self) -> None:
        lib.dp_declined_clear(self._dp)

    def transmit(self, frames: Sequence[Buffer]) -> int:
        sent = k = pos = 0
        for frame in frames:
            size = len(frame)
            if k == self._batch or pos + size > self._stage_cap:
                sent += self._send_stage(k)
                k = pos = 0
            if size > self._stage_cap:
                continue
            ffi.memmove(self._stage + pos, frame, size)
            self._stage_offs[k] = pos
            self._stage_lens[k] = size
            k += 1
            pos += size
        return sent + self._send_stage(k)

    def _send_stage(self, k: int) -> int:
        if k == 0:
            return 0
        return int(lib.dp_transmit(self._dp, self._stage, self._stage_offs, self._stage_lens, k))

    def kick(self) -> None:
        lib.dp_kick(self._dp)


class DeclineNic:
    """The engine's NIC while the C data plane owns the queues: it receives what C
    declined and transmits on C's queue (after C's frames of the round)."""

    def __init__(self, plane: DataPlane | Workers) -> None:
        self.plane = plane
        self.mtu = plane.mtu
        # C's decline buffer only grows until cleared (up to 4 batches, several rounds'
        # worth): the engine takes it a batch at a time, from here on.
        self._cursor = 0
        self._taken = 0

    def receive(self, max_frames: int) -> RxDescriptors | None:
        """The next ``max_frames`` (at most) declined frames, in arrival order."""
        every = self.plane.declined()
        if every is None or self._cursor >= every.n:
            return None
        start = self._cursor
        n = min(max_frames, every.n - start)
        self._taken = n
        return RxDescriptors(every.base, every.offsets[start:start + n],
                             every.lengths[start:start + n], n)

    def release(self) -> None:
        """The last batch is done; once every declined frame is, C may reuse the buffer."""
        self._cursor += self._taken
        self._taken = 0
        if self._cursor >= self.plane.declined_count():
            self.plane.declined_clear()
            self._cursor = 0

    def transmit(self, frames: Sequence[Buffer]) -> int:
        return self.plane.transmit(frames)

    def kick(self, offload: bool = True) -> None:
        self.plane.kick()

    def fileno(self) -> int | None:
        return None

    def close(self) -> None:
        self.plane.declined_clear()
        self._cursor = self._taken = 0


class MemoryPort:
    """A ``struct dp_memport``: the test side of an in-memory wire to the data plane."""

    def __init__(self, slots: int, max_frame: int) -> None:
        ptr = lib.dp_memport_new(slots, max_frame)
        if ptr == ffi.NULL:
            raise MemoryError("dp_memport_new failed")
        self.ptr = ffi.gc(ptr, lib.dp_memport_free)
        self.max_frame = max_frame
        self._buf = ffi.new("uint8_t[]", max_frame)
        self.dropped = 0

    def push(self, frame: Buffer) -> bool:
        ok = int(lib.dp_memport_push(self.ptr, bytes(frame), len(frame))) == 0
        self.dropped += not ok
        return ok

    def pop_all(self, limit: int | None = None) -> list[bytes]:
        """The frames C sent, oldest first; at most ``limit`` (a slow wire), the rest
        staying queued as on a NIC's tx ring."""
        out: list[bytes] = []
        while limit is None or len(out) < limit:
            n = int(lib.dp_memport_pop(self.ptr, self._buf, self.max_frame))
            if n <= 0:
                break
            out.append(bytes(ffi.buffer(self._buf, n)))
        return out


def _reason(tcb: Any) -> str:
    """Why C handed a flow back (``enum dp_reason``), by name."""
    reason = int(tcb.reason)
    return REASONS[reason] if reason < len(REASONS) else str(reason)


def gso_socket(ifname: str) -> socket.socket:
    """An AF_PACKET socket for transmit only (protocol 0: it receives nothing) whose
    frames carry a virtio-net header (PACKET_VNET_HDR), so that a TSO device, or the
    kernel's software GSO, segments them. Not PACKET_QDISC_BYPASS: its direct transmit
    drops a frame that needs software segmentation (a device without TSO) with ENOBUFS;
    through the qdisc layer (veth's noqueue, a NIC's mq) the kernel segments it."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
    try:
        sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        sock.bind((ifname, 0))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def ffi_address(cdata: Any) -> int:
    """The address a cdata pointer holds, whichever module's ffi made it (every cffi
    module shares one CData type, and casts between them are by value)."""
    return int(ffi.cast("uintptr_t", cdata))


def _addressof(xsk_lib: Any, name: str) -> Any:
    from xsk._native import ffi as xsk_ffi

    return xsk_ffi.addressof(xsk_lib, name)


def _cast(obj: Any, ctype: str) -> Any:
    """A pointer of this module's ffi to ``obj`` (a cdata of any ffi, or a buffer)."""
    if isinstance(obj, np.ndarray):
        return ffi.cast(ctype, obj.ctypes.data)
    try:
        return ffi.cast(ctype, ffi_address(obj))
    except TypeError:
        return ffi.cast(ctype, ffi.from_buffer(obj))
