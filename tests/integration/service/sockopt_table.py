"""The option table of ``test_sockopt_table.py``: every option Linux defines at
``SOL_SOCKET``, ``IPPROTO_IP`` and ``IPPROTO_TCP``, as data.

Taken from the uapi headers (``/usr/include/asm-generic/socket.h``,
``/usr/include/linux/in.h``, ``/usr/include/linux/tcp.h``; linux-libc-dev 6.1), one row
per option number (aliases such as ``SO_GET_FILTER``/``SO_ATTACH_FILTER`` share a row).
Each row has a value to set that leaves the socket usable (``valid``; None where every
value would change what the rest of the survey sees, the reason given) and a value the
kernel refuses (``invalid``: a short length or an out-of-range number; None where none
is refused, the reason given).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

SOL = socket.SOL_SOCKET
IP = socket.IPPROTO_IP
TCP = socket.IPPROTO_TCP
LEVEL_NAMES = {SOL: "SOL_SOCKET", IP: "IPPROTO_IP", TCP: "IPPROTO_TCP"}


def i32(value: int) -> bytes:
    return struct.pack("=i", value)


SHORT = b"\x01"  # one byte: too short for an int option (sk_setsockopt, do_tcp_setsockopt)
TIMEVAL_1S = struct.pack("=qq", 1, 0)
LINGER_1S = struct.pack("=ii", 1, 1)


@dataclass(frozen=True)
class Option:
    level: int
    name: str
    number: int
    valid: bytes | None
    invalid: bytes | None
    note: str = ""  # why valid or invalid is None

    @property
    def key(self) -> str:
        return f"{self.level}:{self.number}"


def _sol(name: str, number: int, valid: bytes | None, invalid: bytes | None = SHORT,
         note: str = "") -> Option:
    return Option(SOL, name, number, valid, invalid, note)


def _ip(name: str, number: int, valid: bytes | None, invalid: bytes | None,
        note: str = "") -> Option:
    return Option(IP, name, number, valid, invalid, note)


def _tcp(name: str, number: int, valid: bytes | None, invalid: bytes | None = SHORT,
         note: str = "") -> Option:
    return Option(TCP, name, number, valid, invalid, note)


GET_ONLY = "read-only: setting it is refused (ENOPROTOOPT), which the invalid value checks"
NO_INVALID_IP = ("IPPROTO_IP takes any length (0 means 0, 1 byte a char) and any value "
                 "for this one: nothing to refuse")

OPTIONS: tuple[Option, ...] = (
    # asm-generic/socket.h
    _sol("SO_DEBUG", 1, i32(1)),
    _sol("SO_REUSEADDR", 2, i32(1)),
    _sol("SO_TYPE", 3, None, i32(1), GET_ONLY),
    _sol("SO_ERROR", 4, None, i32(1), GET_ONLY),
    _sol("SO_DONTROUTE", 5, i32(1)),
    _sol("SO_BROADCAST", 6, i32(1)),
    _sol("SO_SNDBUF", 7, i32(65536)),
    _sol("SO_RCVBUF", 8, i32(65536)),
    _sol("SO_KEEPALIVE", 9, i32(1)),
    _sol("SO_OOBINLINE", 10, i32(1)),
    _sol("SO_NO_CHECK", 11, i32(1)),
    _sol("SO_PRIORITY", 12, i32(3)),
    _sol("SO_LINGER", 13, LINGER_1S),
    _sol("SO_BSDCOMPAT", 14, i32(1)),
    _sol("SO_REUSEPORT", 15, i32(1)),
    _sol("SO_PASSCRED", 16, i32(1)),
    _sol("SO_PEERCRED", 17, None, i32(1), GET_ONLY),
    _sol("SO_RCVLOWAT", 18, i32(1)),
    _sol("SO_SNDLOWAT", 19, i32(1)),
    _sol("SO_RCVTIMEO_OLD", 20, TIMEVAL_1S),
    _sol("SO_SNDTIMEO_OLD", 21, TIMEVAL_1S),
    _sol("SO_SECURITY_AUTHENTICATION", 22, None, i32(1), GET_ONLY),
    _sol("SO_SECURITY_ENCRYPTION_TRANSPORT", 23, None, i32(1), GET_ONLY),
    _sol("SO_SECURITY_ENCRYPTION_NETWORK", 24, None, i32(1), GET_ONLY),
    _sol("SO_BINDTODEVICE", 25, b""),  # "": no device (unbind)
    _sol("SO_ATTACH_FILTER", 26, None, SHORT,
         "a filter is a pointer to a program; attaching one changes what the "
         "rest of the survey reads (SO_GET_FILTER)"),
    _sol("SO_DETACH_FILTER", 27, None, i32(0),
         "detaching with none attached is the invalid case (ENOENT)"),
    _sol("SO_PEERNAME", 28, None, i32(1), GET_ONLY),
    _sol("SO_TIMESTAMP_OLD", 29, i32(1)),
    _sol("SO_ACCEPTCONN", 30, None, i32(1), GET_ONLY),
    _sol("SO_PEERSEC", 31, None, i32(1), GET_ONLY),
    _sol("SO_SNDBUFFORCE", 32, i32(65536)),
    _sol("SO_RCVBUFFORCE", 33, i32(65536)),
    _sol("SO_PASSSEC", 34, i32(1)),
    _sol("SO_TIMESTAMPNS_OLD", 35, i32(1)),
    _sol("SO_MARK", 36, i32(7)),
    _sol("SO_TIMESTAMPING_OLD", 37, i32(0)),
    _sol("SO_PROTOCOL", 38, None, i32(1), GET_ONLY),
    _sol("SO_DOMAIN", 39, None, i32(1), GET_ONLY),
    _sol("SO_RXQ_OVFL", 40, i32(1)),
    _sol("SO_WIFI_STATUS", 41, i32(1)),
    _sol("SO_PEEK_OFF", 42, i32(0)),
    _sol("SO_NOFCS", 43, i32(1)),
    _sol("SO_LOCK_FILTER", 44, i32(0)),
    _sol("SO_SELECT_ERR_QUEUE", 45, i32(1)),
    _sol("SO_BUSY_POLL", 46, i32(0)),
    _sol("SO_MAX_PACING_RATE", 47, i32(1 << 30)),
    _sol("SO_BPF_EXTENSIONS", 48, None, i32(1), GET_ONLY),
    _sol("SO_INCOMING_CPU", 49, i32(0)),
    _sol("SO_ATTACH_BPF", 50, None, i32(-1), "the invalid case: descriptor -1 (EBADF)"),
    _sol("SO_ATTACH_REUSEPORT_CBPF", 51, None, SHORT, "needs a program"),
    _sol("SO_ATTACH_REUSEPORT_EBPF", 52, None, i32(-1), "needs a program (-1: EBADF)"),
    _sol("SO_CNX_ADVICE", 53, i32(0)),
    _sol("SCM_TIMESTAMPING_OPT_STATS", 54, None, i32(1), "a control message type"),
    _sol("SO_MEMINFO", 55, None, i32(1), GET_ONLY),
    _sol("SO_INCOMING_NAPI_ID", 56, None, i32(1), GET_ONLY),
    _sol("SO_COOKIE", 57, None, i32(1), GET_ONLY),
    _sol("SCM_TIMESTAMPING_PKTINFO", 58, None, i32(1), "a control message type"),
    _sol("SO_PEERGROUPS", 59, None, i32(1), GET_ONLY),
    _sol("SO_ZEROCOPY", 60, i32(1), i32(2)),
    _sol("SO_TXTIME", 61, struct.pack("=iI", 1, 0)),  # CLOCK_MONOTONIC, no flags
    _sol("SO_BINDTOIFINDEX", 62, i32(0)),
    _sol("SO_TIMESTAMP_NEW", 63, i32(1)),
    _sol("SO_TIMESTAMPNS_NEW", 64, i32(1)),
    _sol("SO_TIMESTAMPING_NEW", 65, i32(0)),
    _sol("SO_RCVTIMEO_NEW", 66, struct.pack("=qq", 2, 0)),
    _sol("SO_SNDTIMEO_NEW", 67, struct.pack("=qq", 2, 0)),
    _sol("SO_DETACH_REUSEPORT_BPF", 68, None, i32(0),
         "detaching with none attached is the invalid case (ENOENT)"),
    _sol("SO_PREFER_BUSY_POLL", 69, i32(1)),
    _sol("SO_BUSY_POLL_BUDGET", 70, i32(8)),
    _sol("SO_NETNS_COOKIE", 71, None, i32(1), GET_ONLY),
    _sol("SO_BUF_LOCK", 72, i32(0), i32(4)),
    _sol("SO_RESERVE_MEM", 73, i32(0), i32(-1)),
    _sol("SO_TXREHASH", 74, i32(0), i32(5)),
    _sol("SO_RCVMARK", 75, i32(1)),
    # linux/in.h
    _ip("IP_TOS", 1, i32(0x28), None, NO_INVALID_IP),
    _ip("IP_TTL", 2, i32(33), i32(300)),
    _ip("IP_HDRINCL", 3, None, i32(1), "raw sockets only: refused on TCP"),
    _ip("IP_OPTIONS", 4, b"", b"\x07"),  # "": no options; a lone RR type: malformed
    _ip("IP_ROUTER_ALERT", 5, None, i32(1), "raw sockets only: refused on TCP"),
    _ip("IP_RECVOPTS", 6, i32(1), None, NO_INVALID_IP),
    _ip("IP_RETOPTS", 7, i32(1), None, NO_INVALID_IP),
    _ip("IP_PKTINFO", 8, i32(1), None, NO_INVALID_IP),
    _ip("IP_PKTOPTIONS", 9, None, i32(1), GET_ONLY),
    _ip("IP_MTU_DISCOVER", 10, i32(2), i32(99)),
    _ip("IP_RECVERR", 11, i32(1), None, NO_INVALID_IP),
    _ip("IP_RECVTTL", 12, i32(1), None, NO_INVALID_IP),
    _ip("IP_RECVTOS", 13, i32(1), None, NO_INVALID_IP),
    _ip("IP_MTU", 14, None, i32(1), GET_ONLY),
    _ip("IP_FREEBIND", 15, i32(1), None, NO_INVALID_IP),
    _ip("IP_IPSEC_POLICY", 16, None, SHORT, "needs an IPsec policy"),
    _ip("IP_XFRM_POLICY", 17, None, SHORT, "needs an IPsec policy"),
    _ip("IP_PASSSEC", 18, i32(1), None, NO_INVALID_IP),
    _ip("IP_TRANSPARENT", 19, i32(1), None, NO_INVALID_IP),
    _ip("IP_ORIGDSTADDR", 20, i32(1), None, NO_INVALID_IP),
    _ip("IP_MINTTL", 21, i32(1), i32(256)),
    _ip("IP_NODEFRAG", 22, None, i32(1), "raw sockets only: refused on TCP"),
    _ip("IP_CHECKSUM", 23, i32(1), None, NO_INVALID_IP),
    _ip("IP_BIND_ADDRESS_NO_PORT", 24, i32(1), None, NO_INVALID_IP),
    _ip("IP_RECVFRAGSIZE", 25, i32(1), None, NO_INVALID_IP),
    _ip("IP_RECVERR_RFC4884", 26, i32(1), i32(2)),
    _ip("IP_MULTICAST_IF", 32, bytes(4), SHORT),
    _ip("IP_MULTICAST_TTL", 33, i32(2), i32(256)),
    _ip("IP_MULTICAST_LOOP", 34, i32(0), None, NO_INVALID_IP),
    _ip("IP_ADD_MEMBERSHIP", 35, None, SHORT, "joins a group (multicast: not on TCP)"),
    _ip("IP_DROP_MEMBERSHIP", 36, None, SHORT, "multicast: not on TCP"),
    _ip("IP_UNBLOCK_SOURCE", 37, None, SHORT, "multicast: not on TCP"),
    _ip("IP_BLOCK_SOURCE", 38, None, SHORT, "multicast: not on TCP"),
    _ip("IP_ADD_SOURCE_MEMBERSHIP", 39, None, SHORT, "multicast: not on TCP"),
    _ip("IP_DROP_SOURCE_MEMBERSHIP", 40, None, SHORT, "multicast: not on TCP"),
    _ip("IP_MSFILTER", 41, None, SHORT, "multicast: not on TCP"),
    _ip("MCAST_JOIN_GROUP", 42, None, SHORT, "multicast: not on TCP"),
    _ip("MCAST_BLOCK_SOURCE", 43, None, SHORT, "multicast: not on TCP"),
    _ip("MCAST_UNBLOCK_SOURCE", 44, None, SHORT, "multicast: not on TCP"),
    _ip("MCAST_LEAVE_GROUP", 45, None, SHORT, "multicast: not on TCP"),
    _ip("MCAST_JOIN_SOURCE_GROUP", 46, None, SHORT, "multicast: not on TCP"),
    _ip("MCAST_LEAVE_SOURCE_GROUP", 47, None, SHORT, "multicast: not on TCP"),
    _ip("MCAST_MSFILTER", 48, None, SHORT, "multicast: not on TCP"),
    _ip("IP_MULTICAST_ALL", 49, i32(0), None, NO_INVALID_IP),
    _ip("IP_UNICAST_IF", 50, i32(0), SHORT),
    _ip("IP_LOCAL_PORT_RANGE", 51, i32(0), SHORT),
    _ip("IP_PROTOCOL", 52, None, i32(1), GET_ONLY),
    # linux/tcp.h
    _tcp("TCP_NODELAY", 1, i32(1)),
    _tcp("TCP_MAXSEG", 2, i32(1200), i32(1)),
    _tcp("TCP_CORK", 3, i32(1)),
    _tcp("TCP_KEEPIDLE", 4, i32(60), i32(0)),
    _tcp("TCP_KEEPINTVL", 5, i32(10), i32(0)),
    _tcp("TCP_KEEPCNT", 6, i32(5), i32(0)),
    _tcp("TCP_SYNCNT", 7, i32(3), i32(0)),
    _tcp("TCP_LINGER2", 8, i32(30)),
    _tcp("TCP_DEFER_ACCEPT", 9, i32(5)),
    _tcp("TCP_WINDOW_CLAMP", 10, i32(65536)),
    _tcp("TCP_INFO", 11, None, i32(1), GET_ONLY),
    _tcp("TCP_QUICKACK", 12, i32(1)),
    _tcp("TCP_CONGESTION", 13, b"reno", b"no-such-cc"),
    _tcp("TCP_MD5SIG", 14, None, SHORT, "a key signs every segment: the peer has none"),
    _tcp("TCP_COOKIE_TRANSACTIONS", 15, None, i32(1), "removed from Linux (netinet/tcp.h)"),
    _tcp("TCP_THIN_LINEAR_TIMEOUTS", 16, i32(1)),
    _tcp("TCP_THIN_DUPACK", 17, i32(1)),
    _tcp("TCP_USER_TIMEOUT", 18, i32(30000), i32(-1)),
    _tcp("TCP_REPAIR", 19, i32(0), i32(5)),
    _tcp("TCP_REPAIR_QUEUE", 20, None, i32(1), "repair mode only (EPERM)"),
    _tcp("TCP_QUEUE_SEQ", 21, None, i32(1), "repair mode only (EPERM)"),
    _tcp("TCP_REPAIR_OPTIONS", 22, None, bytes(8), "repair mode only"),
    _tcp("TCP_FASTOPEN", 23, i32(5)),
    _tcp("TCP_TIMESTAMP", 24, None, i32(1), "repair mode only (EPERM)"),
    _tcp("TCP_NOTSENT_LOWAT", 25, i32(16384)),
    _tcp("TCP_CC_INFO", 26, None, i32(1), GET_ONLY),
    _tcp("TCP_SAVE_SYN", 27, i32(1), i32(256)),
    _tcp("TCP_SAVED_SYN", 28, None, i32(1), GET_ONLY),
    _tcp("TCP_REPAIR_WINDOW", 29, None, bytes(20), "repair mode only (EPERM)"),
    _tcp("TCP_FASTOPEN_CONNECT", 30, i32(1), i32(2)),
    _tcp("TCP_ULP", 31, None, b"no-such-ulp", "an upper layer protocol (kTLS) takes "
         "over the socket's data path"),
    _tcp("TCP_MD5SIG_EXT", 32, None, SHORT, "a key signs every segment: the peer has none"),
    _tcp("TCP_FASTOPEN_KEY", 33, None, SHORT, "sets the namespace's key"),
    _tcp("TCP_FASTOPEN_NO_COOKIE", 34, i32(1), i32(2)),
    _tcp("TCP_ZEROCOPY_RECEIVE", 35, None, i32(1), GET_ONLY),
    _tcp("TCP_INQ", 36, i32(1)),
    _tcp("TCP_TX_DELAY", 37, i32(0)),
)
