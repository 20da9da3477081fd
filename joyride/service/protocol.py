"""The application protocol of the network service (service mode), version 2.

This is the contract between the service and its clients: the preload shim
(``preload/joyride_preload.c``), ``joyride.socket``'s service mode and
``joyride.service.appclient``. It is deliberately tiny and binary, so a C client
needs no parser.

Where
    ``/run/joyride/net<netns inode>/<ifname>/app.sock`` (``StateDir.app_path``), an
    ``AF_UNIX`` ``SOCK_SEQPACKET`` socket owned by the service's uid. Every user may
    connect (mode 0666): the rules of each request decide, as the kernel's do. With the
    service's ``--group`` it is mode 0660 with that group, and the service also checks
    ``SO_PEERCRED`` (uid 0, or the group among the peer's groups), answering
    ``NOT_ADMITTED`` (-3) otherwise, so a client can say why rather than a bare
    ``EACCES``. Clients find the path in ``$JOYRIDE_SOCKET`` (``joyride run`` sets it)
    or by looking in their namespace's directory.

Requests and replies
    One client connection carries one request and one reply, then closes. A request
    is ``REQUEST`` (136 bytes, little-endian); a reply is ``REPLY`` (48 bytes; an
    ``OP_GETINFO`` reply carries more after it, ``INFO_REPLY`` bytes in all).
    Addresses travel as 16 bytes in network order with the family beside them
    (``AF_INET`` 2, ``AF_INET6`` 10; ``joyride.wire.addr``'s form: an IPv4 address in
    the first 4 bytes, the other 12 zero). Version 1 (magic ``JRD1``, IPv4 only) is
    refused, not misread.

    ``status`` in a reply: 0 success; a positive ``errno`` value the client returns
    from the intercepted call (``EACCES``, ``EADDRINUSE``, ``ECONNREFUSED``,
    ``ETIMEDOUT``, ``ENETUNREACH`` ...); ``NOT_ACCELERATED`` (-1): not Joyride's
    business, use the kernel unchanged; ``NOT_ADMITTED`` (-3): the service's
    ``--group`` does not admit the caller (the client fails the call with ``EACCES``
    and says why).

``OP_LISTEN`` (family, ip, port, name): "deliver connections to my listener"
    The client first creates an ``AF_UNIX`` ``SOCK_STREAM`` socket, binds it to the
    abstract name ``listener_name(ip, port, pid, n)`` and calls ``listen(backlog)``
    on it; then it sends the name, with ``FLAG_CHANNELS`` when it will claim ring
    mode on the connections (docs/channels.md: a ``struct jr_chan_claim`` with its
    arena's descriptor, as each connection's first bytes); the reply's op carries
    ``REPLY_CHANNELS`` when the service grants that (it keeps channels only with the C
    data plane), and the client claims only then. (The reply's remote port carries
    ``FLAG_CHANNELS`` too, as it did alone before ``REPLY_CHANNELS``: a client of
    either kind, served by a service of either kind, claims exactly when granted.)
    The service checks the port is accelerated and the address is one of the
    interface's (or 0.0.0.0, or ``::``), that the caller may bind it (below
    ``net.ipv4.ip_unprivileged_port_start`` it needs uid 0 or CAP_NET_BIND_SERVICE,
    as the kernel demands) and that the port is free as Linux's ``inet_csk_get_port``
    would find it: a port with live listeners is shared only when every one of them and
    the newcomer set ``SO_REUSEPORT`` (``FLAG_REUSEPORT``) and all belong to the same
    uid; otherwise ``EADDRINUSE``. (Listeners re-adopted after a service restart lost
    that bit; they count as having it.) Listeners of the two families share a port as
    Linux's do: an ``AF_INET6`` listener that is not ``IPV6_V6ONLY`` (Linux's default)
    takes IPv4 connections too, as v4-mapped addresses, and so clashes with an IPv4
    listener on its port; a ``v6only`` one does not. Unlike Linux, a port's listeners
    are one uid's even where their families do not meet (the service keeps one owner
    per port). On success the client puts its unix listener
    where the application's socket was (``dup2``).

    Each established TCP connection is then *delivered* by the service connecting an
    ``AF_UNIX`` ``SOCK_STREAM`` socket, bound to ``connection_name(...)``, to the
    listener: the application's own ``accept`` returns it, and it is the connection.
    The listener's backlog is the accept queue, epoll/poll/select and sharing across
    ``fork`` keep their kernel meaning, and the listener outlives a service restart
    (a restarted service re-adopts every listener it finds in ``/proc/net/unix``).
    The service checks the listener's ``SO_PEERCRED`` on every delivery, so a squatter
    on a name cannot receive another user's connections.

    Abstract names have no permissions, so anyone may connect to a listener. The
    client therefore takes a connection from its listener only when the peer's
    ``SO_PEERCRED`` uid owns the application socket (``apps.service_uids``: only the
    service can be that peer, short of root), and reads addresses only from such a
    peer's name. Any other connection is closed, and reported (``OP_REFUSED``).

``OP_CONNECT`` (ip, port): "open a connection for me"
    The service opens the TCP connection and replies once it is established (or
    failed: ``ECONNREFUSED``, ``ETIMEDOUT``) with the reply's addresses filled in and,
    on success, the connection attached as one ``SCM_RIGHTS`` descriptor: a connected
    ``AF_UNIX`` ``SOCK_STREAM`` socket bound on the service side to
    ``connection_name(...)``. ``NOT_ACCELERATED`` for loopback, local addresses, or
    when the service has no ephemeral range.

    With ``FLAG_CHANNELS`` the client will claim ring mode on the connection, as on a
    listener's: its first bytes on the descriptor are the claim, sent before it
    returns from ``connect``, and the service delivers nothing to it before them. The
    reply's op carries ``REPLY_CHANNELS`` when the service grants that; the client
    claims only then.

    With ``FLAG_NONBLOCK`` (a non-blocking ``connect``) the reply comes at once,
    with the descriptor, while the handshake goes on: the application gets
    ``EINPROGRESS`` and a descriptor that is writable at once; what it writes is sent
    once the connection is established, and a failed handshake reaches it as a reset
    on its first read or write (its event loop is never held for the handshake).

``OP_SETOPT`` (value, code, name): "apply this socket option"
    A socket option with a TCP meaning (``SETOPT_OPTIONS``; ``joyride.sockopts``)
    set on a Joyride descriptor. The value (a C ``int``) travels in the address field
    as 4 little-endian bytes (``setopt_value``), the code in the port, and the name
    says what it applies to: a connection (its peer's ``connection_name``), at once;
    or a listener (its own ``listener_name``), to every connection delivered to it
    from then on, as Linux's accepted sockets inherit their listener's options. Only
    the descriptor's owner (or root) may; ``EINVAL`` for a value out of range.

``OP_GETINFO`` (name): "what would a kernel TCP socket say about this connection?"
    The name is a connection's (its peer's ``connection_name``). The reply is ``REPLY``
    followed by ``INFO`` (``INFO_REPLY`` bytes in all): ``so_error`` (the errno the
    connection failed with, reported once, as ``SO_ERROR`` is), ``outq`` (``SIOCOUTQ``:
    bytes the application wrote that the peer has not acknowledged, counting those
    still in the service's end of the descriptor), ``notsent`` (``SIOCOUTQNSD``: of
    those, the ones not yet sent), ``window_clamp`` (``TCP_WINDOW_CLAMP``), then
    Linux's ``struct tcp_info`` as of 6.1 (``TCP_INFO_SIZE`` bytes, little-endian:
    ``joyride.sockopts.TCP_INFO_FIELDS``), which also answers ``TCP_MAXSEG``
    (``tcpi_snd_mss``) and ``IP_MTU`` (``tcpi_pmtu``). Fields the service does not
    track are 0. While the C data plane runs the connection the figures are its own.
    A connection that failed and is gone answers once with its error and state CLOSE;
    otherwise ``ENOTCONN`` when the service has no such connection, ``EPERM`` when it
    is another user's. Listeners need no request: everything ``TCP_INFO`` says of a
    listener is known to the client.

``OP_REFUSED`` (ip, port, name): "someone else connected to my listener"
    Sent after the client refused a connection on its listener ``name`` (listening on
    ip:port) that did not come from the service; the service counts it
    (``forged_deliveries_refused``) and logs it. The reply's status is 0.

A connection descriptor
    Bytes written are sent on the TCP connection; bytes the peer sends are read. Both
    directions are flow controlled end to end: the service reads from its end only
    while the TCP send buffer has room and writes to it only what it accepts, so a
    slow reader closes the TCP window and a slow network blocks the writer.
    ``shutdown(SHUT_WR)`` sends a FIN; the peer's FIN is EOF; ``close`` closes the TCP
    connection (a RST if received data was left unread, as Linux does). A peer reset,
    or the service dying, is EOF (``ECONNRESET`` if the application had data in
    flight towards the service) and writes fail with ``EPIPE``: never a hang.

Addresses without state
    ``getsockname``/``getpeername`` need no table: a connection's peer (the service's
    end) is bound to ``connection_name``, which spells the TCP 4-tuple, and a
    listener's own name spells its address. ``parse_name`` reads both; this survives
    ``dup``, ``fork`` and ``exec``.

    In a name an IPv4 address is dotted, an IPv6 one is its 16 bytes in base64url
    without padding (22 characters: two IPv6 addresses written out do not fit an
    abstract ``sun_path``'s 107 bytes beside the ports, pid and counter). The address
    form is the application socket's family: a connection delivered to a dual-stack
    ``AF_INET6`` listener from an IPv4 peer is named with v4-mapped addresses
    (``::ffff:a.b.c.d``), which is what Linux's ``accept`` and ``getpeername`` report
    on such a socket. A listener name ending in ``/v6only`` is an ``IPV6_V6ONLY``
    listener (it takes IPv6 connections only).
"""

from __future__ import annotations

import base64
import re
import socket
import struct
from dataclasses import dataclass
from typing import Final

from joyride.wire import addr

VERSION: Final = 2
MAGIC: Final = b"JRD2"

OP_LISTEN: Final = 1
OP_CONNECT: Final = 2
OP_SETOPT: Final = 3
OP_REFUSED: Final = 4
OP_GETINFO: Final = 5

# Request flags.
FLAG_NONBLOCK: Final = 1  # OP_CONNECT: reply at once, the handshake continues behind
FLAG_REUSEPORT: Final = 2  # OP_LISTEN: the application's socket has SO_REUSEPORT set
# OP_LISTEN, OP_CONNECT: the application will claim ring mode on each connection
# (docs/channels.md); the reply says whether the service grants it (REPLY_CHANNELS).
FLAG_CHANNELS: Final = 4

# Reply flags, in the high byte of a reply's op (its low byte is the request's op).
REPLY_OP_MASK: Final = 0xFF
REPLY_CHANNELS: Final = 0x100  # FLAG_CHANNELS granted: the client claims ring mode

# OP_SETOPT codes (the request's port) and the options they stand for.
SETOPT_OPTIONS: Final[dict[int, tuple[int, int]]] = {
    1: (socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    2: (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
    3: (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
    4: (socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
    5: (socket.SOL_SOCKET, socket.SO_SNDBUF),
    # No SO_RCVBUF: the receive buffer (and the window scale offered with it) is fixed
    # at the handshake, which the service completes before the application sees the
    # connection; on the application's descriptor it sizes the unix socket's buffer.
}

NOT_ACCELERATED: Final = -1
NOT_ADMITTED: Final = -3  # the service's --group does not include the caller

# magic, op, flags, family, ip (16 bytes), port, name (abstract, without the leading NUL)
REQUEST: Final = struct.Struct("<4sHHH16sH108s")
# magic, op (with the reply flags), family, status, local ip, local port, remote ip,
# remote port
REPLY: Final = struct.Struct("<4sHHi16sH16sH")
# OP_GETINFO's reply after REPLY: so_error, outq, notsent, window_clamp, struct tcp_info
TCP_INFO_SIZE: Final = 232
INFO: Final = struct.Struct(f"<iIII{TCP_INFO_SIZE}s")
INFO_REPLY: Final = REPLY.size + INFO.size

NAME_PREFIX: Final = "joyride/"
V6ONLY_SUFFIX: Final = "/v6only"
# An address in a name: dotted IPv4, or IPv6's 16 bytes in base64url (22 characters).
_ADDR: Final = r"(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|[A-Za-z0-9_-]{22})"
_LISTENER_RE: Final = re.compile(
    rf"joyride/l/{_ADDR}:(\d+)/(\d+)\.(\d+)({V6ONLY_SUFFIX})?$")
_CONNECTION_RE: Final = re.compile(
    rf"joyride/c/{_ADDR}:(\d+)/{_ADDR}:(\d+)/(\d+)\.(\d+)$")


class ProtocolError(ValueError):
    """A message that is not a well-formed version-2 message."""


def _family_of(ip: bytes) -> int:
    return socket.AF_INET6 if len(ip) == addr.WIDE else socket.AF_INET


def _unwiden(family: int, wide: bytes) -> bytes:
    """The 4 or 16 bytes a message's address field holds for ``family``. 0 (no
    address: ``OP_SETOPT``'s value, ``OP_GETINFO``) reads as the 4 bytes."""
    if family not in (0, socket.AF_INET, socket.AF_INET6):
        raise ProtocolError(f"address family {family}")
    if family != socket.AF_INET6 and any(wide[4:]):
        raise ProtocolError("an IPv4 address with bytes past its fourth")
    return addr.narrow(wide, family == socket.AF_INET6)


@dataclass(frozen=True)
class Request:
    op: int
    ip: bytes  # 4 bytes (IPv4, or OP_SETOPT's value) or 16 (IPv6)
    port: int
    name: str = ""
    flags: int = 0

    def encode(self) -> bytes:
        return REQUEST.pack(MAGIC, self.op, self.flags, _family_of(self.ip),
                            addr.widen(self.ip), self.port, self.name.encode())

    @classmethod
    def decode(cls, raw: bytes) -> Request:
        if len(raw) != REQUEST.size:
            raise ProtocolError(f"request of {len(raw)} bytes (want {REQUEST.size})")
        magic, op, flags, family, ip, port, name = REQUEST.unpack(raw)
        if magic != MAGIC:
            raise ProtocolError("bad magic")
        try:
            text = name.rstrip(b"\0").decode("ascii")
        except UnicodeDecodeError as exc:
            raise ProtocolError("name is not ASCII") from exc
        return cls(op, _unwiden(family, ip), port, text, flags)


def setopt_value(ip: bytes) -> int:
    """The option value an ``OP_SETOPT`` request carries in its address field."""
    return int.from_bytes(ip, "little", signed=True)


@dataclass(frozen=True)
class Reply:
    op: int
    status: int
    local_ip: bytes = bytes(4)
    local_port: int = 0
    remote_ip: bytes = bytes(4)
    remote_port: int = 0
    flags: int = 0  # REPLY_CHANNELS

    def encode(self) -> bytes:
        if len(self.local_ip) != len(self.remote_ip):
            raise ValueError("a reply's addresses are of one family")
        if self.flags & REPLY_OP_MASK:
            raise ValueError("a reply's flags go above its op's byte")
        # An unknown op (a hostile request's) is echoed by its low byte alone.
        return REPLY.pack(MAGIC, (self.op & REPLY_OP_MASK) | self.flags,
                          _family_of(self.local_ip),
                          self.status, addr.widen(self.local_ip), self.local_port,
                          addr.widen(self.remote_ip), self.remote_port)

    @classmethod
    def decode(cls, raw: bytes) -> Reply:
        if len(raw) != REPLY.size:
            raise ProtocolError(f"reply of {len(raw)} bytes (want {REPLY.size})")
        magic, op, family, status, lip, lport, rip, rport = REPLY.unpack(raw)
        if magic != MAGIC:
            raise ProtocolError("bad magic")
        return cls(op & REPLY_OP_MASK, status, _unwiden(family, lip), lport,
                   _unwiden(family, rip), rport, op & ~REPLY_OP_MASK)


def name_address(ip: bytes) -> str:
    """An address as names spell it: dotted IPv4, base64url IPv6 (22 characters)."""
    if len(ip) == addr.WIDE:
        return base64.urlsafe_b64encode(ip).rstrip(b"=").decode("ascii")
    return socket.inet_ntoa(ip)


def _name_address_bytes(token: str) -> bytes:
    if len(token) == 22:
        return base64.urlsafe_b64decode(token + "==")
    return socket.inet_aton(token)


def listener_name(ip: bytes, port: int, pid: int, n: int, *, v6only: bool = False) -> str:
    """The unix name of an application's listener on ``ip:port``; ``ip`` of 16 bytes
    is an ``AF_INET6`` socket's (``v6only``: ``IPV6_V6ONLY`` set)."""
    if v6only and len(ip) != addr.WIDE:
        raise ValueError("IPV6_V6ONLY is an AF_INET6 socket's")
    return (f"joyride/l/{name_address(ip)}:{port}/{pid}.{n}"
            f"{V6ONLY_SUFFIX if v6only else ''}")


def connection_name(local: tuple[bytes, int], remote: tuple[bytes, int], pid: int,
                    n: int) -> str:
    return (f"joyride/c/{name_address(local[0])}:{local[1]}/"
            f"{name_address(remote[0])}:{remote[1]}/{pid}.{n}")


def abstract(name: str) -> bytes:
    """The ``sun_path`` of an abstract name (leading NUL, no terminator)."""
    return b"\0" + name.encode()


@dataclass(frozen=True)
class Info:
    """What ``OP_GETINFO``'s reply carries after ``REPLY``."""

    so_error: int
    outq: int
    notsent: int
    window_clamp: int
    tcp_info: bytes

    def encode(self) -> bytes:
        return INFO.pack(self.so_error, self.outq, self.notsent, self.window_clamp,
                         self.tcp_info)

    @classmethod
    def decode(cls, raw: bytes) -> Info:
        if len(raw) != INFO.size:
            raise ProtocolError(f"info of {len(raw)} bytes (want {INFO.size})")
        return cls(*INFO.unpack(raw))


@dataclass(frozen=True)
class ParsedName:
    kind: str  # "listener" or "connection"
    local: tuple[str, int]  # addresses written out: dotted, or RFC 5952
    remote: tuple[str, int] | None
    pid: int
    family: int = socket.AF_INET  # the application socket's: AF_INET or AF_INET6
    v6only: bool = False  # a listener with IPV6_V6ONLY set

    @property
    def families(self) -> frozenset[int]:
        """The IP versions (4, 6) of the connections a listener takes, as Linux's
        ``inet6_bind``: an IPv4 socket's, IPv4; an ``AF_INET6`` one bound to ``::``,
        both unless ``v6only``; bound to a v4-mapped address, IPv4; to any other IPv6
        address, IPv6."""
        if self.family == socket.AF_INET:
            return frozenset({4})
        bound = addr.packed(self.local[0])
        if bound == bytes(addr.WIDE):
            return frozenset({6}) if self.v6only else frozenset({4, 6})
        return frozenset({4}) if engine_address(bound) != bound else frozenset({6})

    def key(self) -> tuple[bytes, int, bytes, int]:
        """A connection's 4-tuple as the engine keys it: v4-mapped addresses (a
        dual-stack listener's connection from an IPv4 peer) in their IPv4 form."""
        if self.remote is None:
            raise ValueError("a listener has no 4-tuple")
        return (engine_address(addr.packed(self.local[0])), self.local[1],
                engine_address(addr.packed(self.remote[0])), self.remote[1])


_V4_MAPPED: Final = bytes(10) + b"\xff\xff"


def engine_address(ip: bytes) -> bytes:
    """The address a connection runs with: an IPv4 peer of an ``AF_INET6`` socket is
    spelled v4-mapped (RFC 4291 §2.5.5.2) but is on the wire as IPv4."""
    return ip[12:] if len(ip) == addr.WIDE and ip[:12] == _V4_MAPPED else ip


def socket_address(ip: bytes, family: int) -> bytes:
    """``ip`` as a socket of ``family`` reports it: v4-mapped on ``AF_INET6``."""
    return _V4_MAPPED + ip if family == socket.AF_INET6 and len(ip) == 4 else ip


def _written(token: str) -> str:
    return addr.text(_name_address_bytes(token))


def parse_name(name: str | bytes) -> ParsedName | None:
    """Read a listener or connection name (with or without the leading NUL)."""
    if isinstance(name, bytes):
        try:
            name = name.decode("ascii")
        except UnicodeDecodeError:
            return None
    name = name.lstrip("\0")
    try:
        if m := _LISTENER_RE.match(name):
            family = socket.AF_INET6 if len(m[1]) == 22 else socket.AF_INET
            if m[5] is not None and family != socket.AF_INET6:
                return None  # IPV6_V6ONLY is an AF_INET6 socket's
            return ParsedName("listener", (_written(m[1]), int(m[2])), None, int(m[3]),
                              family, m[5] is not None)
        if m := _CONNECTION_RE.match(name):
            if (len(m[1]) == 22) != (len(m[3]) == 22):
                return None  # both addresses are of the socket's one family
            family = socket.AF_INET6 if len(m[1]) == 22 else socket.AF_INET
            return ParsedName("connection", (_written(m[1]), int(m[2])),
                              (_written(m[3]), int(m[4])), int(m[5]), family)
    except (OSError, ValueError):  # a dotted quad past 255, a bad base64 tail
        return None
    return None


# As the socket module gives an address: (host, port) for AF_INET, (host, port,
# flowinfo, scope_id) for AF_INET6.
TcpAddress = tuple[str, int] | tuple[str, int, int, int]


def _socket_form(address: tuple[str, int], family: int) -> TcpAddress:
    """``address`` as a socket of ``family`` reports it. The scope id of a link-local
    address is 0 here (the preload shim gives the interface's)."""
    return (*address, 0, 0) if family == socket.AF_INET6 else address


def descriptor_name(sock: socket.socket) -> ParsedName | None:
    """What an application's service descriptor stands for, from its unix names: a
    listener's own name is ``listener_name``; a connection's peer, the service's end,
    is bound to ``connection_name`` (the 4-tuple). None when the names spell neither:
    not a service descriptor, or the service's end is gone (and its name with it).

    The names are read with ``socket.socket``'s own methods, so a subclass may build
    its ``getsockname``/``getpeername`` on this."""
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            own = parse_name(socket.socket.getsockname(sock))
            return own if own is not None and own.kind == "listener" else None
        parsed = parse_name(socket.socket.getpeername(sock))
    except OSError:
        return None
    return parsed if parsed is not None and parsed.kind == "connection" else None


def tcp_addresses(sock: socket.socket) -> tuple[TcpAddress | None, TcpAddress | None]:
    """The TCP ``(local, remote)`` addresses a service descriptor stands for, in its
    family's form (``descriptor_name``; a listener has no remote). ``(None, None)``
    when it stands for none."""
    parsed = descriptor_name(sock)
    if parsed is None:
        return None, None
    remote = _socket_form(parsed.remote, parsed.family) if parsed.remote is not None \
        else None
    return _socket_form(parsed.local, parsed.family), remote
