"""Socket options that mean something to Joyride's TCP, as ``TcpConfig`` changes.

One table for every front end: ``joyride.socket`` applies it to embedded sockets, and
the network service applies what the preload shim forwards for unmodified
applications. Options not listed here are accepted and recorded by the front ends
(``getsockopt`` gives them back) but change nothing in Joyride's TCP.

On a live connection (``TcpConnection.reconfigure``) Nagle, keepalive and the send
buffer's size take effect at once; the receive buffer keeps the size its window scale
was negotiated for, as it would on Linux after the handshake.

Also here: what a kernel TCP socket reports of a connection (``connection_info``, Linux's
``struct tcp_info``: the service's ``OP_GETINFO`` answer) and ``TcpAnswers``, a service
descriptor's options answered as a kernel TCP socket would (the preload shim's rules).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import select
import socket
import struct
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from joyride.tcp.config import TcpConfig
from joyride.tcp.connection import TcpConnection
from joyride.tcp.failure import failure_errno
from joyride.tcp.state import TcpState

# Linux's floors for SO_SNDBUF/SO_RCVBUF (SOCK_MIN_SNDBUF/SOCK_MIN_RCVBUF, net/sock.h).
MIN_SNDBUF: Final = 4608
MIN_RCVBUF: Final = 2304
# Linux's bounds (include/net/tcp.h): MAX_TCP_KEEPIDLE/KEEPINTVL 32767 s, KEEPCNT 127.
MAX_KEEP_SECONDS: Final = 32767
MAX_KEEPCNT: Final = 127

Option = tuple[int, int]


def _bounded(value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))  # as Linux answers
    return value


def changes(level: int, optname: int, value: Any) -> dict[str, Any]:
    """The ``TcpConfig`` fields option ``(level, optname)`` set to ``value`` changes
    (empty: no TCP meaning). An out-of-range value raises ``OSError(EINVAL)``."""
    if not isinstance(value, int):
        return {}  # a bytes value: no TCP meaning we could honour
    key = (level, optname)
    if key == (socket.IPPROTO_TCP, socket.TCP_NODELAY):
        return {"nodelay": bool(value)}
    if key == (socket.SOL_SOCKET, socket.SO_SNDBUF):
        # A fixed send buffer, as Linux's SO_SNDBUF locks autotuning off.
        size = max(value, MIN_SNDBUF)
        return {"send_buffer": size, "send_buffer_max": size}
    if key == (socket.SOL_SOCKET, socket.SO_RCVBUF):
        # A fixed receive buffer, as Linux's SO_RCVBUF locks autotuning off.
        size = max(value, MIN_RCVBUF)
        return {"receive_buffer": size, "receive_buffer_max": size}
    if key == (socket.SOL_SOCKET, socket.SO_KEEPALIVE):
        return {"keepalive": bool(value)}  # RFC 9293 §3.8.4
    if key == (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE):
        return {"keepalive_idle": float(_bounded(value, 1, MAX_KEEP_SECONDS))}
    if key == (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL):
        return {"keepalive_interval": float(_bounded(value, 1, MAX_KEEP_SECONDS))}
    if key == (socket.IPPROTO_TCP, socket.TCP_KEEPCNT):
        return {"keepalive_probes": _bounded(value, 1, MAX_KEEPCNT)}
    return {}


def apply(config: TcpConfig, options: Iterable[tuple[int, int, Any]]) -> TcpConfig:
    """``config`` with ``options`` (``(level, optname, value)``, in order) applied."""
    merged: dict[str, Any] = {}
    for level, optname, value in options:
        merged.update(changes(level, optname, value))
    return dataclasses.replace(config, **merged) if merged else config


# -- what a kernel TCP socket reports about its connection ---------------------------------
#
# The service answers ``OP_GETINFO`` (``joyride.service.protocol``) with these, so the
# preload shim and ``joyride.socket`` can give an application what ``TCP_INFO``,
# ``TCP_MAXSEG``, ``IP_MTU``, ``TCP_WINDOW_CLAMP``, ``SO_ERROR``, ``SIOCOUTQ`` and
# ``SIOCOUTQNSD`` say on a kernel socket.

#: Linux's ``struct tcp_info`` (include/uapi/linux/tcp.h as of 6.1), field by field;
#: ``wscale`` is the byte holding ``tcpi_snd_wscale`` (low nibble) and
#: ``tcpi_rcv_wscale`` (high nibble), ``flags`` the two bit fields after it. Times are
#: microseconds, ``snd_cwnd``/``snd_ssthresh`` segments, as Linux reports them.
TCP_INFO_FIELDS: Final = (
    ("state", "B"), ("ca_state", "B"), ("retransmits", "B"), ("probes", "B"),
    ("backoff", "B"), ("options", "B"), ("wscale", "B"), ("flags", "B"),
    ("rto", "I"), ("ato", "I"), ("snd_mss", "I"), ("rcv_mss", "I"),
    ("unacked", "I"), ("sacked", "I"), ("lost", "I"), ("retrans", "I"), ("fackets", "I"),
    ("last_data_sent", "I"), ("last_ack_sent", "I"), ("last_data_recv", "I"),
    ("last_ack_recv", "I"),
    ("pmtu", "I"), ("rcv_ssthresh", "I"), ("rtt", "I"), ("rttvar", "I"),
    ("snd_ssthresh", "I"), ("snd_cwnd", "I"), ("advmss", "I"), ("reordering", "I"),
    ("rcv_rtt", "I"), ("rcv_space", "I"), ("total_retrans", "I"),
    ("pacing_rate", "Q"), ("max_pacing_rate", "Q"), ("bytes_acked", "Q"),
    ("bytes_received", "Q"), ("segs_out", "I"), ("segs_in", "I"),
    ("notsent_bytes", "I"), ("min_rtt", "I"), ("data_segs_in", "I"),
    ("data_segs_out", "I"), ("delivery_rate", "Q"), ("busy_time", "Q"),
    ("rwnd_limited", "Q"), ("sndbuf_limited", "Q"), ("delivered", "I"),
    ("delivered_ce", "I"), ("bytes_sent", "Q"), ("bytes_retrans", "Q"),
    ("dsack_dups", "I"), ("reord_seen", "I"), ("rcv_ooopack", "I"), ("snd_wnd", "I"),
)
TCP_INFO: Final = struct.Struct("<" + "".join(kind for _, kind in TCP_INFO_FIELDS))

#: RFC 9293's states in Linux's numbering (include/net/tcp_states.h).
LINUX_STATE: Final = {
    TcpState.ESTABLISHED: 1, TcpState.SYN_SENT: 2, TcpState.SYN_RECEIVED: 3,
    TcpState.FIN_WAIT_1: 4, TcpState.FIN_WAIT_2: 5, TcpState.TIME_WAIT: 6,
    TcpState.CLOSED: 7, TcpState.CLOSE_WAIT: 8, TcpState.LAST_ACK: 9,
    TcpState.LISTEN: 10, TcpState.CLOSING: 11,
}
TCP_CLOSE: Final = 7
TCP_LISTEN: Final = 10
TCPI_OPT_TIMESTAMPS: Final = 1
TCPI_OPT_SACK: Final = 2
TCPI_OPT_WSCALE: Final = 4
TCP_CA_OPEN: Final = 0
TCP_CA_RECOVERY: Final = 3
UNLIMITED_RATE: Final = (1 << 64) - 1  # Linux's ~0ULL: no pacing limit
INFINITE_SSTHRESH: Final = 0x7FFFFFFF  # Linux's TCP_INFINITE_SSTHRESH


@dataclasses.dataclass(frozen=True)
class ConnectionInfo:
    """What the kernel would report about one connection (``OP_GETINFO``'s reply)."""

    so_error: int  # SO_ERROR: the errno the connection failed with, else 0
    outq: int  # SIOCOUTQ: bytes written and not yet acknowledged
    notsent: int  # SIOCOUTQNSD: bytes written and not yet sent
    window_clamp: int  # TCP_WINDOW_CLAMP: the largest window it will offer
    tcp_info: bytes  # struct tcp_info (TCP_INFO.size bytes)
    inq: int = 0  # SIOCINQ: bytes received in order, not yet taken by the application


def _micros(seconds: float | None) -> int:
    return 0 if seconds is None else min(int(seconds * 1e6), 0xFFFFFFFF)


def _segments(nbytes: int, mss: int) -> int:
    return INFINITE_SSTHRESH if nbytes >= INFINITE_SSTHRESH else -(-nbytes // max(mss, 1))


def connection_info(conn: TcpConnection, *, pmtu: int, app_queued: int = 0,
                    hot: Any = None, hot_queued: tuple[int, int] | None = None
                    ) -> ConnectionInfo:
    """``conn`` as Linux's ``TCP_INFO`` and friends would report it.

    ``app_queued``: bytes the application wrote that the service has not yet put in
    the send buffer (they count in SIOCOUTQ, as bytes in a kernel socket's write
    queue do). ``hot``: the C data plane's copy of the TCB (``DataPlane.peek``) while it
    runs the connection (the Python object is parked and stale meanwhile), with
    ``hot_queued`` its (send, receive) ring lengths."""
    neg = conn._negotiated
    cfg = conn.config
    ts_ok = neg is not None and neg.timestamps
    options = 0
    if neg is not None:
        options = ((TCPI_OPT_TIMESTAMPS if neg.timestamps else 0)
                   | (TCPI_OPT_SACK if neg.sack else 0)
                   | (TCPI_OPT_WSCALE if neg.window_scaling else 0))
    snd_shift, rcv_shift = conn._snd_shift, conn._rcv_shift
    if hot is not None and hot_queued is not None:
        smss, rcv_mss = int(hot.smss), int(hot.rcv_mss)
        srtt = float(hot.srtt) if hot.srtt >= 0 else None
        rttvar = float(hot.rttvar) if hot.srtt >= 0 else None
        backoff = int(hot.rto_backoff)
        rto = min(max(float(hot.base_rto), float(hot.min_rto)) * (1 << backoff),
                  float(hot.max_rto))
        cwnd, ssthresh = int(hot.cwnd), int(hot.ssthresh)
        in_flight = (int(hot.snd_nxt) - int(hot.snd_una)) & 0xFFFFFFFF
        send_queue = hot_queued[0]
        snd_wnd = int(hot.snd_wnd)
        recovering = False
        segs_in = conn.counters["segments_received"] + int(hot.segs_in)
        segs_out = conn.counters["segments_sent"] + int(hot.segs_out)
        acked = conn.counters["bytes_acked"] + int(hot.bytes_acked)
        rcv_nxt, snd_max = int(hot.rcv_nxt), int(hot.snd_nxt)
    else:
        smss, rcv_mss = conn.mss, conn._rcv_mss
        srtt, rttvar = conn.rtt.srtt, conn.rtt.rttvar
        backoff = conn.rtt.backoff_count
        rto = conn.rtt.rto
        cwnd, ssthresh = conn.congestion.cwnd, conn.congestion.ssthresh
        in_flight = conn.bytes_in_flight
        send_queue = conn.send_queue
        snd_wnd = conn.send_window
        recovering = conn.in_recovery
        segs_in = conn.counters["segments_received"]
        segs_out = conn.counters["segments_sent"]
        acked = conn.counters["bytes_acked"]
        rcv_nxt, snd_max = int(conn.rcv_nxt), int(conn._snd_max)
    # Bytes of data each way: sequence space less the SYN and any FIN.
    synced = conn.state.synchronized
    received = ((rcv_nxt - int(conn._irs) - 1) & 0xFFFFFFFF) - (1 if conn.eof else 0) \
        if synced else 0
    fin = conn._fin_seq
    sent = ((snd_max - int(conn.iss) - 1) & 0xFFFFFFFF) - (
        1 if fin is not None and ((snd_max - int(fin)) & 0xFFFFFFFF) < 0x80000000
        and snd_max != int(fin) else 0) if synced else 0
    notsent = max(send_queue - in_flight, 0) + app_queued
    state = LINUX_STATE.get(conn.state, TCP_CLOSE)
    fields = dict.fromkeys((name for name, _ in TCP_INFO_FIELDS), 0)
    fields.update(
        state=state,
        ca_state=TCP_CA_RECOVERY if recovering else TCP_CA_OPEN,
        retransmits=min(backoff, 255), backoff=min(backoff, 255), options=options,
        wscale=(snd_shift & 15) | ((rcv_shift & 15) << 4),
        rto=_micros(rto), ato=_micros(cfg.delayed_ack_timeout),
        snd_mss=smss, rcv_mss=rcv_mss,
        unacked=-(-in_flight // max(smss, 1)),
        sacked=-(-conn.sacked_bytes // max(smss, 1)) if hot is None else 0,
        pmtu=pmtu, rcv_ssthresh=cfg.receive_buffer, rtt=_micros(srtt),
        rttvar=_micros(rttvar), snd_ssthresh=_segments(ssthresh, smss),
        snd_cwnd=_segments(cwnd, smss), advmss=cfg.mss - (12 if ts_ok else 0),
        reordering=cfg.dupthresh, rcv_space=cfg.receive_buffer,
        total_retrans=conn.counters["retransmitted_segments"],
        max_pacing_rate=UNLIMITED_RATE, bytes_acked=acked,
        bytes_received=max(received, 0), bytes_sent=max(sent, 0),
        segs_out=min(segs_out, 0xFFFFFFFF), segs_in=min(segs_in, 0xFFFFFFFF),
        notsent_bytes=min(notsent, 0xFFFFFFFF), snd_wnd=min(snd_wnd, 0xFFFFFFFF),
    )
    error = failure_errno(conn.error) if conn.state is TcpState.CLOSED else 0
    return ConnectionInfo(
        so_error=error, outq=send_queue + app_queued, notsent=notsent,
        window_clamp=cfg.receive_buffer_max,
        tcp_info=TCP_INFO.pack(*(fields[name] for name, _ in TCP_INFO_FIELDS)),
        inq=hot_queued[1] if hot is not None and hot_queued is not None else conn.recv_queue)


def tcp_info_fields(raw: bytes) -> dict[str, int]:
    """A packed ``struct tcp_info`` (``ConnectionInfo.tcp_info``) field by field."""
    return dict(zip((name for name, _ in TCP_INFO_FIELDS), TCP_INFO.unpack(raw), strict=True))


def closed_info(so_error: int) -> ConnectionInfo:
    """A connection the service no longer has: CLOSE, and why it failed (once)."""
    fields = dict.fromkeys((name for name, _ in TCP_INFO_FIELDS), 0)
    fields.update(state=TCP_CLOSE, max_pacing_rate=UNLIMITED_RATE)
    return ConnectionInfo(so_error, 0, 0, 0,
                          TCP_INFO.pack(*(fields[name] for name, _ in TCP_INFO_FIELDS)))


# -- a service descriptor answering as a kernel TCP socket ---------------------------------
#
# The preload shim's rules (preload/joyride_preload.c, "options"), in Python, for
# joyride.socket's and joyride.asyncio's service descriptors: unix sockets standing for
# a TCP listener or connection. tests/integration/service/test_sockopt_table.py checks
# both against a kernel socket for every option Linux defines.

# Linux option numbers the socket module does not name (uapi headers).
SO_PEERSEC: Final = 31
SO_ATTACH_REUSEPORT_CBPF: Final = 51
SO_ATTACH_REUSEPORT_EBPF: Final = 52
SO_PEERNAME: Final = 28
SO_PEERGROUPS: Final = 59
SO_ZEROCOPY: Final = 60
SO_DETACH_REUSEPORT_BPF: Final = 68
SO_TXREHASH: Final = 74
SO_ATTACH_FILTER: Final = 26
SO_DETACH_FILTER: Final = 27
SO_ATTACH_BPF: Final = 50
SO_LOCK_FILTER: Final = 44
SO_CNX_ADVICE: Final = 53
SO_PEEK_OFF: Final = 42
IP_MTU: Final = 14
IPV6_MTU: Final = 24
IPV6_ADD_MEMBERSHIP, IPV6_DROP_MEMBERSHIP = 20, 21
MCAST_JOIN_GROUP: Final = 42
IP_ADD_MEMBERSHIP: Final = 35
MCAST_MSFILTER: Final = 48
IP_PROTOCOL: Final = 52
TCP_MAXSEG: Final = 2
TCP_DEFER_ACCEPT: Final = 9
TCP_WINDOW_CLAMP: Final = 10
TCP_INFO_OPT: Final = 11
TCP_QUICKACK: Final = 12
TCP_MD5SIG: Final = 14
TCP_REPAIR: Final = 19
TCP_REPAIR_QUEUE: Final = 20
TCP_QUEUE_SEQ: Final = 21
TCP_REPAIR_OPTIONS: Final = 22
TCP_FASTOPEN: Final = 23
TCP_TIMESTAMP: Final = 24
TCP_REPAIR_WINDOW: Final = 29
TCP_FASTOPEN_CONNECT: Final = 30
TCP_ULP: Final = 31
TCP_MD5SIG_EXT: Final = 32
TCP_FASTOPEN_KEY: Final = 33
TCP_FASTOPEN_NO_COOKIE: Final = 34
TCP_ZEROCOPY_RECEIVE: Final = 35

#: SOL_SOCKET options a unix socket refuses, or answers unlike TCP: a scratch kernel
#: TCP socket decides them (set / get).
AS_TCP_SET: Final = frozenset({
    socket.SO_REUSEPORT, SO_ZEROCOPY, SO_TXREHASH, socket.SO_PASSCRED, socket.SO_PASSSEC,
    SO_DETACH_REUSEPORT_BPF, SO_ATTACH_REUSEPORT_CBPF, SO_ATTACH_REUSEPORT_EBPF})
AS_TCP_GET: Final = frozenset({
    socket.SO_REUSEPORT, SO_ZEROCOPY, SO_TXREHASH, socket.SO_PASSCRED, socket.SO_PASSSEC,
    socket.SO_PEERCRED, SO_PEERGROUPS, SO_PEERSEC})
#: Options not remembered: actions, keys, pointers, repair mode's.
NOT_KEPT: Final = frozenset({
    *((socket.SOL_SOCKET, o) for o in (
        SO_ATTACH_FILTER, SO_DETACH_FILTER, SO_ATTACH_BPF, SO_ATTACH_REUSEPORT_CBPF,
        SO_ATTACH_REUSEPORT_EBPF, SO_DETACH_REUSEPORT_BPF, SO_LOCK_FILTER, SO_CNX_ADVICE,
        SO_PEEK_OFF)),
    *((socket.IPPROTO_TCP, o) for o in (
        TCP_QUICKACK, TCP_MD5SIG, TCP_MD5SIG_EXT, TCP_FASTOPEN_KEY, TCP_REPAIR,
        TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ, TCP_REPAIR_OPTIONS, TCP_REPAIR_WINDOW, TCP_ULP,
        TCP_TIMESTAMP, TCP_ZEROCOPY_RECEIVE)),
    *((socket.IPPROTO_IP, o) for o in range(IP_ADD_MEMBERSHIP, MCAST_MSFILTER + 1)),
    *((socket.IPPROTO_IPV6, o) for o in (IPV6_ADD_MEMBERSHIP, IPV6_DROP_MEMBERSHIP,
                                         *range(MCAST_JOIN_GROUP, MCAST_MSFILTER + 1))),
})
#: What a connection accepted on a Linux listener does not take from it.
NOT_INHERITED: Final = frozenset({(socket.IPPROTO_TCP, TCP_FASTOPEN),
                                  (socket.IPPROTO_TCP, TCP_DEFER_ACCEPT)})
_LEVELS: Final = (socket.SOL_SOCKET, socket.IPPROTO_IP, socket.IPPROTO_TCP,
                  socket.IPPROTO_IPV6)
# The path MTU of the connection, per family (what only the connection knows).
_MTU_OPTIONS: Final = ((socket.IPPROTO_IP, IP_MTU), (socket.IPPROTO_IPV6, IPV6_MTU))

Recorded = tuple[int, int, Any]


def _kept(level: int, optname: int, value: Any) -> bool:
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value) > 40:
        return False
    return level in _LEVELS and (level, optname) not in NOT_KEPT


def state_refuses(listening: bool, level: int, optname: int, value: Any, *,
                  first: bool) -> int:
    """An errno Linux answers for setting this on a listener or connection though a
    closed socket takes it (do_tcp_setsockopt), or 0. ``first``: the checks it makes
    before looking at the value; else those after."""
    raw = bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else None
    if level != socket.IPPROTO_TCP or (raw is not None and len(raw) < 4):
        return 0
    v = int.from_bytes(raw[:4], sys.byteorder, signed=True) if raw is not None else int(value)
    if first:
        if optname == TCP_REPAIR:
            return errno.EPERM if listening else 0
        return errno.EPERM if optname == TCP_QUEUE_SEQ else 0
    if optname in (TCP_FASTOPEN, TCP_FASTOPEN_NO_COOKIE):
        return 0 if listening else errno.EINVAL
    if optname == TCP_FASTOPEN_CONNECT:
        return errno.EINVAL
    if optname == TCP_WINDOW_CLAMP and v == 0:
        return errno.EINVAL
    return 0


def hung_up(sock: socket.socket) -> bool:
    """Whether the service let go of this connection's socket: its end shows a hang-up
    or an error. The service tells every failure (a reset, a refused or timed-out
    handshake) so, so until then ``SO_ERROR`` is 0 without asking it (``OP_GETINFO``,
    a round trip to its control plane that event loops would pay once per connect).
    The preload shim's ``jr_so_error`` follows the same rule."""
    poller = select.poll()
    poller.register(sock.fileno(), 0)  # POLLHUP and POLLERR are reported unasked
    return bool(poller.poll(0))


def _int_answer(level: int, value: int, buflen: int) -> int | bytes:
    """An int as the kernel writes it: the stdlib's int form, or ``buflen`` bytes."""
    if not buflen:
        return value
    if level == socket.IPPROTO_IP and buflen < 4 and 0 <= value <= 255:
        return bytes([value])
    return value.to_bytes(4, sys.byteorder, signed=True)[:buflen]


def _as_int(raw: bytes) -> int:
    return int.from_bytes(raw[:4].ljust(4, b"\0"), sys.byteorder, signed=True)


def _raise(code: int) -> None:
    raise OSError(code, os.strerror(code))


class TcpAnswers:
    """A service descriptor's options, answered as a kernel TCP socket would.

    ``sock`` is the unix descriptor (called through ``socket.socket``'s own methods, so
    a subclass may delegate to this); ``options`` what was set on it, in order (it takes
    them over), ``backlog`` its ``listen`` backlog if it is a listener. The shim's rules:
    options the unix socket holds with the same meaning live there; TCP's are
    remembered and answered by a scratch kernel socket with them set; what only the
    connection knows comes from the service (``OP_GETINFO``)."""

    def __init__(self, sock: socket.socket, options: list[Recorded] | None = None,
                 backlog: int = 0) -> None:
        self.sock = sock
        self._family: int | None = None  # ``family``, once read
        self.options: list[Recorded] = []
        for level, optname, value in options or []:
            self.remember(level, optname, value)
        self.backlog = backlog

    # -- what it is ----------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        return bool(socket.socket.getsockopt(self.sock, socket.SOL_SOCKET,
                                             socket.SO_ACCEPTCONN))

    def remember(self, level: int, optname: int, value: Any) -> None:
        if not _kept(level, optname, value):
            return
        if isinstance(value, (bytearray, memoryview)):
            value = bytes(value)
        self.options = [o for o in self.options if (o[0], o[1]) != (level, optname)]
        self.options.append((level, optname, value))

    def adopt(self, *, derived_priority: bool = True) -> None:
        """The descriptor just became a service one: give the unix socket the
        SOL_SOCKET options it can hold (``SO_REUSEADDR``, ``SO_LINGER`` ...), and the
        priority Linux derived from ``IP_TOS`` (a listener's or outgoing connection's;
        an accepted socket's starts at 0)."""
        for level, optname, value in self.options:
            if level == socket.SOL_SOCKET:
                with contextlib.suppress(OSError):
                    socket.socket.setsockopt(self.sock, level, optname, value)
        if derived_priority and any(level == socket.IPPROTO_IP and optname == socket.IP_TOS
                                    for level, optname, _ in self.options):
            self._copy_priority()

    def inherited(self, sock: socket.socket) -> TcpAnswers:
        """Answers for a connection accepted on this listener: its options, as Linux's
        accepted sockets inherit their listener's."""
        child = TcpAnswers(sock, [o for o in self.options
                                  if (o[0], o[1]) not in NOT_INHERITED])
        child.adopt(derived_priority=False)
        return child

    # -- the scratch socket --------------------------------------------------------------

    @property
    def family(self) -> int:
        """The TCP socket's family the descriptor stands for (its names say), read once:
        it never changes, and the names go with the service's end."""
        if self._family is None:
            from joyride.service import protocol

            parsed = protocol.descriptor_name(self.sock)
            if parsed is None:
                return socket.AF_INET  # not (or no longer) a service descriptor
            self._family = parsed.family
        return self._family

    def _scratch(self) -> socket.socket:
        k = socket.socket(self.family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        for level, optname, value in self.options:
            with contextlib.suppress(OSError):
                k.setsockopt(level, optname, value)
        return k

    def _scratch_get(self, level: int, optname: int, buflen: int) -> int | bytes:
        with self._scratch() as k:
            return k.getsockopt(level, optname, buflen) if buflen else \
                k.getsockopt(level, optname)

    def _copy_priority(self) -> None:
        with self._scratch() as k:
            prio = k.getsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY)
        with contextlib.suppress(OSError):
            socket.socket.setsockopt(self.sock, socket.SOL_SOCKET, socket.SO_PRIORITY, prio)

    def _info(self) -> Any:
        """The service's ``OP_GETINFO`` answer for this connection, or None."""
        from joyride.service import appclient, protocol

        try:
            return appclient.get_info(self.sock, timeout=2.0)
        except (OSError, appclient.NotAccelerated, protocol.ProtocolError):
            return None

    # -- setsockopt / getsockopt ----------------------------------------------------------

    def setsockopt(self, level: int, optname: int, value: Any) -> None:
        if level == socket.SOL_SOCKET and optname not in AS_TCP_SET:
            socket.socket.setsockopt(self.sock, level, optname, value)  # its errno
            self._forward(level, optname, value)
            self.remember(level, optname, value)
            return
        if level not in _LEVELS:
            socket.socket.setsockopt(self.sock, level, optname, value)
            return
        if self._forward(level, optname, value):
            self.remember(level, optname, value)
            return
        listening = self.listening
        code = state_refuses(listening, level, optname, value, first=True)
        if code:
            _raise(code)
        with self._scratch() as k:
            k.setsockopt(level, optname, value)  # the kernel's errno
            code = state_refuses(listening, level, optname, value, first=False)
            if code:
                _raise(code)
            if (level, optname) == (socket.IPPROTO_IP, socket.IP_TOS):
                prio = k.getsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY)
                socket.socket.setsockopt(self.sock, socket.SOL_SOCKET, socket.SO_PRIORITY,
                                         prio)
        self.remember(level, optname, value)

    def _forward(self, level: int, optname: int, value: Any) -> bool:
        """Options with a TCP meaning go to the service (``OP_SETOPT``); True if it took
        it (``OSError(EINVAL)`` when out of range, as the kernel says)."""
        from joyride.service import appclient, protocol

        if (level, optname) not in protocol.SETOPT_OPTIONS.values():
            return False
        if isinstance(value, (bytes, bytearray, memoryview)):
            if len(value) < 4:
                return False  # the scratch socket says EINVAL
            value = int.from_bytes(bytes(value)[:4], sys.byteorder, signed=True)
        if not isinstance(value, int):
            return False
        changes(level, optname, value)  # EINVAL here, before the service is asked

        try:
            return appclient.set_option(self.sock, level, optname, value)
        except (FileNotFoundError, ConnectionRefusedError):
            return True  # no service any more: the connection is gone with it

    def getsockopt(self, level: int, optname: int, buflen: int = 0) -> int | bytes:
        if level == socket.SOL_SOCKET:
            return self._get_sol(optname, buflen)
        if level not in _LEVELS:
            return socket.socket.getsockopt(self.sock, level, optname, buflen) if buflen \
                else socket.socket.getsockopt(self.sock, level, optname)
        listening = self.listening
        if (level, optname) == (socket.IPPROTO_TCP, TCP_INFO_OPT):
            raw = self._tcp_info(listening, buflen or 4)
            return raw if buflen else _as_int(raw)
        if (level, optname) == (socket.IPPROTO_IP, IP_PROTOCOL):
            # Linux answers inet_num: the local port.
            local = self._local_port()
            return _int_answer(level, local, buflen)
        if (level, optname) == (socket.IPPROTO_TCP, TCP_ZEROCOPY_RECEIVE):
            _raise(errno.ENOTCONN if listening else errno.EOPNOTSUPP)
        if not listening and ((level, optname) in ((socket.IPPROTO_TCP, TCP_MAXSEG),
                                                   _MTU_OPTIONS[0])
                              # IPV6_MTU on an AF_INET6 socket only (else EOPNOTSUPP)
                              or ((level, optname) == _MTU_OPTIONS[1]
                                  and self.family == socket.AF_INET6)
                              or ((level, optname) == (socket.IPPROTO_TCP, TCP_WINDOW_CLAMP)
                                  and not self._has(level, optname))):
            info = self._info()
            if info is not None:
                fields = TCP_INFO.unpack(info.tcp_info)
                names = [name for name, _ in TCP_INFO_FIELDS]
                value = info.window_clamp if (level, optname) == (
                    socket.IPPROTO_TCP, TCP_WINDOW_CLAMP) else fields[names.index(
                        "pmtu" if (level, optname) in _MTU_OPTIONS else "snd_mss")]
                return _int_answer(level, int(value), buflen)
            if level != socket.IPPROTO_TCP:
                _raise(errno.ENOTCONN)  # no route cached: the connection is gone
        return self._scratch_get(level, optname, buflen)

    def _has(self, level: int, optname: int) -> bool:
        return any((lvl, opt) == (level, optname) for lvl, opt, _ in self.options)

    def _local_port(self) -> int:
        from joyride.service import protocol

        local, _remote = protocol.tcp_addresses(self.sock)
        return local[1] if local is not None else 0

    def _get_sol(self, optname: int, buflen: int) -> int | bytes:
        level = socket.SOL_SOCKET
        if optname == socket.SO_DOMAIN:
            return _int_answer(level, self.family, buflen)
        if optname == socket.SO_PROTOCOL:
            return _int_answer(level, socket.IPPROTO_TCP, buflen)
        if optname == socket.SO_ERROR and not self.listening:
            if not hung_up(self.sock):
                return _int_answer(level, 0, buflen)  # nothing failed yet: hung_up
            info = self._info()
            if info is not None:
                return _int_answer(level, int(info.so_error), buflen)
        if optname == SO_PEERNAME:
            return self._peername(buflen)
        if optname in AS_TCP_GET:
            return self._scratch_get(level, optname, buflen)
        return socket.socket.getsockopt(self.sock, level, optname, buflen) if buflen else \
            socket.socket.getsockopt(self.sock, level, optname)

    def _peername(self, buflen: int) -> int | bytes:
        from joyride.service import protocol

        parsed = protocol.descriptor_name(self.sock)
        if parsed is None or parsed.remote is None:
            _raise(errno.ENOTCONN)
        assert parsed is not None and parsed.remote is not None
        host, port = parsed.remote
        # struct sockaddr_in (16 bytes) or sockaddr_in6 (28: flowinfo, address, scope).
        address = struct.pack("=H", parsed.family) + struct.pack("!H", port) + (
            bytes(4) + socket.inet_pton(socket.AF_INET6, host) + bytes(4)
            if parsed.family == socket.AF_INET6 else socket.inet_aton(host) + bytes(8))
        want = buflen or 4
        if want > len(address):
            _raise(errno.EINVAL)  # sk_getsockopt: a buffer longer than the address
        return address[:want] if buflen else _as_int(address)

    def _tcp_info(self, listening: bool, buflen: int) -> bytes:
        """The kernel's length and layout (a scratch socket's), the figures of the
        connection (from the service) or of a listener."""
        scratch = self._scratch_get(socket.IPPROTO_TCP, TCP_INFO_OPT, buflen)
        assert isinstance(scratch, bytes)
        out = bytearray(len(scratch))
        if listening:
            # What tcp_get_info reports of a listener besides its state and queues.
            for at, size in ((80, 4), (88, 4), (104, 16)):  # cwnd, reordering, pacing
                if at + size <= len(out):
                    out[at:at + size] = scratch[at:at + size]
            if out:
                out[0] = TCP_LISTEN
            if len(out) >= 32:
                out[28:32] = self.backlog.to_bytes(4, sys.byteorder)  # tcpi_sacked
            return bytes(out)
        info = self._info()
        if info is None:
            return scratch  # gone: a closed socket's
        size = min(len(out), len(info.tcp_info))
        out[:size] = info.tcp_info[:size]
        return bytes(out)


def somaxconn() -> int:
    """``net.core.somaxconn``: the kernel clamps a listen backlog to it."""
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return 4096
