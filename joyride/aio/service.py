"""Service-mode descriptors for ``joyride.asyncio``: the TCP addresses, not unix names.

Under a live network service (``joyride attach``) a Joyride port is a unix descriptor
handed out by the service (``joyride.service.appclient``), and the loop's own unix
transports serve it. Those transports read ``sockname``/``peername`` from the socket
and from ``accept``'s address, which would be abstract unix names. The service binds
names that spell the TCP addresses (``joyride.service.protocol``: a listener's own name
is its address, a connection's peer, the service's end, spells the 4-tuple), so
``ServiceSocket`` answers ``getsockname``/``getpeername``/``accept`` with those, decoded
by ``protocol.tcp_addresses`` (as ``joyride.socket`` does).
``transport.get_extra_info('peername')`` then shows the TCP peer, as it would on a
kernel socket. Its ``getsockopt``/``setsockopt`` answer as a kernel TCP socket's, as
the preload shim's do (``sockopts.TcpAnswers``). (uvloop reads the names from the
descriptor itself: on uvloop, service mode transports show the unix names.)
"""

from __future__ import annotations

import errno
import os
import socket as _socket
from typing import TYPE_CHECKING, Any, overload

from joyride import sockopts
from joyride.service import appclient, protocol
from joyride.wire.addr import text, written_ipv6

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


def _not_connected() -> OSError:
    return OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN))


class ServiceSocket(_socket.socket):
    """A service's unix descriptor that reports the TCP addresses its names spell.

    Connections accepted on a ``ServiceSocket`` listener are ``ServiceSocket`` too, and
    ``accept``'s address is the TCP peer (asyncio takes a transport's ``peername`` from
    it)."""

    # A listener: the uids that may deliver connections to it (appclient.service_uids),
    # found when it was made, in its network namespace.
    service_uids: set[int] | None = None
    # Its options, answered as a kernel TCP socket would (made on first use).
    answers: sockopts.TcpAnswers | None = None
    # A listener: the service granted shared-memory channels on its connections
    # (appclient.listen_claiming; joyride.aio.rings claims one on each).
    channels: bool = False

    @classmethod
    def adopt(cls, sock: _socket.socket) -> ServiceSocket:
        """Take over ``sock``'s descriptor (``sock`` is left detached)."""
        return cls(sock.family, sock.type, sock.proto, fileno=sock.detach())

    def getsockname(self) -> protocol.TcpAddress:
        local, _ = protocol.tcp_addresses(self)
        if local is None:
            raise _not_connected()  # the service's end went away, and its name with it
        return local

    def getpeername(self) -> protocol.TcpAddress:
        _, remote = protocol.tcp_addresses(self)
        if remote is None:
            raise _not_connected()  # a listener, as the kernel's; or the service's end left
        return remote

    def _tcp(self) -> sockopts.TcpAnswers:
        if self.answers is None:
            self.answers = sockopts.TcpAnswers(self)
        return self.answers

    @overload
    def getsockopt(self, level: int, optname: int, /) -> int: ...
    @overload
    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...
    def getsockopt(self, level: int, optname: int, buflen: int = 0, /) -> Any:
        return self._tcp().getsockopt(level, optname, buflen)

    @overload
    def setsockopt(self, level: int, optname: int, value: int | ReadableBuffer, /
                   ) -> None: ...
    @overload
    def setsockopt(self, level: int, optname: int, value: None, optlen: int, /) -> None: ...
    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None,
                   /) -> None:
        if optlen is not None:
            return _socket.socket.setsockopt(self, level, optname, None, optlen)
        return self._tcp().setsockopt(level, optname, value)

    def accept(self) -> tuple[_socket.socket, protocol.TcpAddress | None]:
        # socket.socket.accept would build a plain socket.socket: wrap the fd here.
        # Only what the service delivers.
        conn, _unix_name = appclient.accept(self, self.service_uids)
        conn = ServiceSocket.adopt(conn)
        conn.answers = self._tcp().inherited(conn)  # as Linux: its listener's options
        try:
            peer: protocol.TcpAddress | None = conn.getpeername()
        except OSError:  # the service dropped it already: the transport sees EOF
            peer = None
        return conn, peer


def listener(host: str | None, port: int | None, reuse_port: bool = False, *,
             channels: bool = False) -> ServiceSocket | None:
    """A listening descriptor from a live network service owning ``port``, or None.
    ``channels``: ask for shared-memory channels (granted: ``ServiceSocket.channels``)."""
    if port is None or not port:
        return None
    if not _service_alive():
        return None
    try:
        # An IPv6 host: IPV6_V6ONLY, as asyncio makes its own AF_INET6 listeners.
        sock, granted = appclient.listen_claiming(
            port, host or "0.0.0.0", reuseport=reuse_port, v6only=written_ipv6(host),
            channels=channels)
    except (appclient.NotAccelerated, FileNotFoundError, ConnectionRefusedError):
        return None
    adopted = ServiceSocket.adopt(sock)
    adopted.channels = granted
    adopted.service_uids = appclient.service_uids()
    # appclient.listen's backlog, as the kernel keeps it (TCP_INFO's tcpi_sacked).
    adopted.answers = sockopts.TcpAnswers(adopted, backlog=min(128, sockopts.somaxconn()))
    return adopted


def connection(ip: bytes, port: int) -> ServiceSocket | None:
    """A connection to ``ip:port`` through a live network service, or None (blocking:
    run it in an executor)."""
    if not _service_alive():
        return None
    try:
        sock = appclient.connect(text(ip), port)
    except (appclient.NotAccelerated, FileNotFoundError, ConnectionRefusedError):
        return None
    return ServiceSocket.adopt(sock)


def _service_alive() -> bool:
    from joyride.claim.statedir import StateDir

    return any(d.service_alive() for d in StateDir.all_in_netns())
