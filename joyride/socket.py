"""``joyride.socket``: the standard library's TCP socket API, served by Joyride.

A drop-in for ``socket``: ``socket``, ``create_connection``, ``create_server`` and every
constant and helper of the standard module (re-exported unchanged). A socket decides
where it lives when it is bound or connected, and from then on every call goes to that
backend (``joyride.socket_backends``, one implementation each):

* **embedded** — the port is one this process embeds (``joyride.embed``), or an
  outgoing connection's destination routes out of the embedded interface. On the C
  data plane (the default) the embedded instance is the network service's data path
  run by a thread of this process, and the socket is its real descriptor, as in
  service mode (``socket_backends.service``, reporting ``joyride_mode`` "embedded").
  On the Python data plane (``JOYRIDE_DATAPLANE=python``) the connection lives in the
  in-process engine (``socket_backends.embedded``: its ``fileno`` is a descriptor whose
  readiness mirrors the TCP socket's).
* **service** — the network service (``joyride attach``) accelerates the port: the
  socket is the real descriptor the service hands over, with the TCP socket's names
  and options (``socket_backends.service``).
* **kernel** — anything else: a plain kernel socket (``socket_backends.kernel``).

Until then (created, options set, bound to a port that may be the service's) it is an
unplaced embedded socket: it records options and answers as an unconnected socket.

Options on embedded sockets (``joyride.sockopts``): ``TCP_NODELAY``, ``SO_SNDBUF``,
``SO_RCVBUF``, ``SO_KEEPALIVE``, ``TCP_KEEPIDLE``, ``TCP_KEEPINTVL`` and ``TCP_KEEPCNT``
set before ``listen``/``connect`` configure the connection's TCP (``TcpConfig`` per
connection; a listener's accepted connections inherit its options, as in Linux); on a
connected socket all but ``SO_RCVBUF`` take effect at once. Other options are
recorded, reported back by ``getsockopt`` and replayed if the socket turns out to be a
kernel one, but have no effect on Joyride's TCP.

``AF_INET6`` stream sockets are served by the network service where it accelerates the
port, or by the embedded instance on the C data plane (its in-process service; the
Python data plane's stacks are IPv4): dual-stack unless ``IPV6_V6ONLY``, as on Linux,
addresses as 4-tuples; else by the kernel. Other families and types are kernel sockets
from the start. ``MSG_*`` flags other than 0 are refused on embedded sockets.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket as _stdlib
from typing import Any

from joyride.embed.select import (
    connecting_stack,
    connects_in_process,
    listening_stack,
    listens_in_process,
)
from joyride.socket_backends import Address, Backend, service
from joyride.socket_backends.embedded import EmbeddedSocket, errno_error
from joyride.socket_backends.kernel import KernelSocket
from joyride.socket_backends.service import ServiceSocket
from joyride.tcp.connection import TcpConnection
from joyride.wire.addr import written_ipv6

# Everything the standard module offers (constants, getaddrinfo, timeout, ...), so
# code doing ``socket.AF_INET`` or ``socket.getfqdn()`` on this module keeps working.
globals().update({name: getattr(_stdlib, name) for name in _stdlib.__all__
                  if name not in ("socket", "create_connection", "create_server")})
AF_INET = _stdlib.AF_INET
SOCK_STREAM = _stdlib.SOCK_STREAM
SHUT_RD, SHUT_WR, SHUT_RDWR = _stdlib.SHUT_RD, _stdlib.SHUT_WR, _stdlib.SHUT_RDWR
SOL_SOCKET, IPPROTO_TCP = _stdlib.SOL_SOCKET, _stdlib.IPPROTO_TCP
SO_SNDBUF, SO_RCVBUF, TCP_NODELAY = _stdlib.SO_SNDBUF, _stdlib.SO_RCVBUF, _stdlib.TCP_NODELAY
timeout = _stdlib.timeout
error = _stdlib.error
getdefaulttimeout = _stdlib.getdefaulttimeout

_TYPE_FLAGS = _stdlib.SOCK_NONBLOCK | _stdlib.SOCK_CLOEXEC
_GLOBAL_DEFAULT_TIMEOUT = object()
# Each backend has the one interface the facade relies on (checked by mypy).
_BACKENDS: tuple[type[Backend], ...] = (EmbeddedSocket, KernelSocket, ServiceSocket)


class socket:
    """A TCP socket that lives in Joyride when Joyride owns its port (module doc)."""

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1,
                 fileno: int | None = None) -> None:
        family = _stdlib.AF_INET if family == -1 else family
        type = _stdlib.SOCK_STREAM if type == -1 else type
        self._family, self._type, self._proto = family, type & ~_TYPE_FLAGS, max(proto, 0)
        timeout_: float | None = None if type & _stdlib.SOCK_NONBLOCK else \
            getdefaulttimeout()
        self._impl: EmbeddedSocket | KernelSocket  # KernelSocket: ServiceSocket too
        # An unplaced AF_INET6 socket waits as an embedded one, but only the service
        # or the kernel may take it (embedded stacks are IPv4).
        if fileno is not None or family not in (_stdlib.AF_INET, _stdlib.AF_INET6) or \
                type & ~_TYPE_FLAGS != _stdlib.SOCK_STREAM:
            self._impl = KernelSocket(_stdlib.socket(family, type, max(proto, 0), fileno),
                                      timeout_)
        else:
            self._impl = EmbeddedSocket(self._type, timeout_)
        self._io_refs = 0  # makefile() objects using this socket (the standard module's)

    @classmethod
    def _around(cls, impl: EmbeddedSocket | KernelSocket) -> socket:
        """A socket for an accepted connection's backend."""
        sock = cls()
        sock._impl = impl
        return sock

    def __getattr__(self, name: str) -> Any:
        impl = self.__dict__.get("_impl")
        if not isinstance(impl, KernelSocket):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(impl.sock, name)

    @property
    def _conn(self) -> TcpConnection | None:
        """An embedded socket's TCP connection (None: none, or not embedded)."""
        return self._impl.conn if isinstance(self._impl, EmbeddedSocket) else None

    @property
    def family(self) -> _stdlib.AddressFamily:
        return _stdlib.AddressFamily(self._family)

    @property
    def type(self) -> _stdlib.SocketKind:
        return _stdlib.SocketKind(self._type)

    @property
    def proto(self) -> int:
        return self._proto

    # -- where it lives: picked at bind, listen or connect ----------------------------------

    def _embedded(self) -> EmbeddedSocket | None:
        """The embedded backend (placed, or not yet: then the socket may still go
        elsewhere), or None once the socket is a kernel or service one."""
        impl = self._impl
        return impl if isinstance(impl, EmbeddedSocket) else None

    def _to_kernel(self, pending: EmbeddedSocket) -> KernelSocket:
        """Become a kernel socket, with the options recorded so far."""
        kernel = KernelSocket.fresh(self._family, self._type, self._proto, pending.options,
                                    pending.timeout)
        self._impl = kernel
        return kernel

    @property
    def _inet6(self) -> bool:
        return self._family == _stdlib.AF_INET6

    def bind(self, addr: Address) -> None:
        pending = self._embedded()
        if pending is None:
            assert isinstance(self._impl, KernelSocket)
            return self._impl.bind(addr)
        host, port = addr[0], int(addr[1])
        if host and not _literal_of(self._family, host):
            # A name, or an address of the other family: the kernel resolves the one
            # and refuses the other, as for any socket.
            return self._to_kernel(pending).bind(addr)
        stack = None if self._inet6 else listening_stack(host, port)
        if stack is None:
            pending.bound = (host, port)  # kernel or service: decided at listen/connect
            if port == 0 or not service.candidate():
                self._to_kernel(pending).bind(addr)
            return None
        pending.attach(stack)
        pending.bound = (host or "0.0.0.0", port)
        return None

    def listen(self, backlog: int = 128) -> None:
        pending = self._embedded()
        if pending is None:
            return self._impl.listen(backlog)
        if pending.bound is None:
            raise errno_error(errno.EINVAL)  # the kernel would pick a port: not ours
        if pending.stack is not None:
            return pending.listen(backlog)
        host, port = pending.bound
        reuseport = bool(pending.recorded(_stdlib.SOL_SOCKET, _stdlib.SO_REUSEPORT))
        v6only = bool(pending.recorded(_stdlib.IPPROTO_IPV6, _stdlib.IPV6_V6ONLY))
        descriptor = service.listening(host, port, backlog, reuseport,
                                       family=self._family, v6only=v6only)
        if descriptor is None:
            kernel = self._to_kernel(pending)
            kernel.bind(pending.bound)
            return kernel.listen(backlog)
        served = ServiceSocket(descriptor, pending.timeout, pending.options)
        if listens_in_process(host, port):
            served.mode = "embedded"  # this process's own data path serves it
        self._impl = served
        served.listening(backlog)
        return None

    def accept(self) -> tuple[Any, Address]:
        accepted, peer = self._impl.accept()
        if isinstance(accepted, (EmbeddedSocket, ServiceSocket)):
            return socket._around(accepted), peer
        return accepted, peer  # a kernel listener's: the standard module's socket

    def connect(self, addr: Address) -> None:
        code = self.connect_ex(addr)
        if code == errno.EINPROGRESS and self._impl.timeout == 0.0:
            raise BlockingIOError(errno.EINPROGRESS, os.strerror(errno.EINPROGRESS))
        if code == errno.ETIMEDOUT and isinstance(self._impl, EmbeddedSocket) \
                and self._impl.connecting():
            raise TimeoutError("timed out")
        if code:
            raise errno_error(code)

    def connect_ex(self, addr: Address) -> int:
        pending = self._embedded()
        if pending is None:
            return self._impl.connect_ex(addr)
        host, port = addr[0], int(addr[1])
        if self._inet6:
            ip = str(_stdlib.getaddrinfo(host, port, _stdlib.AF_INET6,
                                         _stdlib.SOCK_STREAM)[0][4][0])
            stack = None
        else:
            ip = _stdlib.gethostbyname(host)
            stack = pending.stack or connecting_stack(_stdlib.inet_aton(ip))
        if stack is not None:
            if pending.conn is None:
                pending.attach(stack)
            return pending.connect_ex((ip, port))
        if service.candidate():
            descriptor = service.connected(ip, port, pending.timeout)
            if descriptor is not None:
                self._impl = ServiceSocket(descriptor, pending.timeout, pending.options)
                if connects_in_process(_stdlib.inet_pton(self._family, ip)):
                    self._impl.mode = "embedded"
                # As the preload shim: the handshake goes on behind the descriptor.
                return errno.EINPROGRESS if pending.timeout == 0.0 else 0
        kernel = self._to_kernel(pending)
        if pending.bound is not None:
            kernel.bind(pending.bound)
        return kernel.connect_ex(addr)

    # -- data ------------------------------------------------------------------------------

    def send(self, data: bytes | bytearray | memoryview, flags: int = 0) -> int:
        return self._impl.send(data, flags)

    def sendall(self, data: bytes | bytearray | memoryview, flags: int = 0) -> None:
        return self._impl.sendall(data, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        return self._impl.recv(bufsize, flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        return self._impl.recv_into(buffer, nbytes, flags)

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        return self._impl.recvfrom(bufsize, flags)

    def shutdown(self, how: int) -> None:
        return self._impl.shutdown(how)

    # -- closing ---------------------------------------------------------------------------

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._impl.closed:
            self.close()

    def close(self) -> None:
        return self._impl.close(deferred=self._io_refs > 0)

    def detach(self) -> int:
        return self._impl.detach()

    def __enter__(self) -> socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        impl = self.__dict__.get("_impl")
        if isinstance(impl, EmbeddedSocket) and not impl.closed:
            with contextlib.suppress(Exception):  # interpreter shutdown: nobody to tell
                self.close()

    # -- descriptors and options ----------------------------------------------------------------

    def fileno(self) -> int:
        return self._impl.fileno()

    def settimeout(self, value: float | None) -> None:
        if value is not None and value < 0:
            raise ValueError("Timeout value out of range")
        self._impl.settimeout(value)

    def gettimeout(self) -> float | None:
        return self._impl.timeout

    def setblocking(self, flag: bool) -> None:
        self.settimeout(None if flag else 0.0)

    def getblocking(self) -> bool:
        return self._impl.timeout != 0.0

    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None
                   ) -> None:
        return self._impl.setsockopt(level, optname, value)

    def getsockopt(self, level: int, optname: int, buflen: int = 0) -> Any:
        return self._impl.getsockopt(level, optname, buflen)

    def getsockname(self) -> Address:
        pending = self._embedded()
        if pending is not None and self._inet6:  # unplaced: as an unlistening AF_INET6 one
            host, port = pending.bound or ("::", 0)
            return (host or "::", port, 0, 0)
        return self._impl.getsockname()

    def getpeername(self) -> Address:
        return self._impl.getpeername()

    def makefile(self, mode: str = "r", buffering: int | None = None, *,
                 encoding: str | None = None, errors: str | None = None,
                 newline: str | None = None) -> Any:
        if isinstance(self._impl, KernelSocket):
            return self._impl.makefile(mode, buffering, encoding=encoding, errors=errors,
                                       newline=newline)
        # The standard implementation needs only recv_into/send/fileno/_io_refs/
        # _decref_socketios, which this class provides: reuse it, don't copy it.
        makefile: Any = _stdlib.socket.makefile
        return makefile(self, mode, buffering, encoding=encoding, errors=errors,
                        newline=newline)

    @property
    def joyride_mode(self) -> str:
        """Where this socket lives: "embedded", "service", "kernel" or "unbound"."""
        impl = self._impl
        if isinstance(impl, EmbeddedSocket) and impl.stack is None:
            return "unbound"
        return impl.mode

    def __repr__(self) -> str:
        return self._impl.describe()


def _literal_of(family: int, host: str) -> bool:
    """Is ``host`` an address literal of ``family``?"""
    try:
        _stdlib.inet_pton(family, host)
    except OSError:
        return False
    return True


def create_connection(address: tuple[str, int], timeout: Any = _GLOBAL_DEFAULT_TIMEOUT,
                      source_address: tuple[str, int] | None = None, *,
                      all_errors: bool = False) -> socket:
    """``socket.create_connection`` to an IPv4 or IPv6 address (or an IPv4 name)."""
    host, port = address
    sock = socket(_stdlib.AF_INET6 if written_ipv6(host) else _stdlib.AF_INET,
                  _stdlib.SOCK_STREAM)
    try:
        if timeout is not _GLOBAL_DEFAULT_TIMEOUT:
            sock.settimeout(timeout)
        if source_address:
            sock.bind(source_address)
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def create_server(address: Address, *, family: int = _stdlib.AF_INET,
                  backlog: int | None = None, reuse_port: bool = False,
                  dualstack_ipv6: bool = False) -> socket:
    """``socket.create_server``: IPv4 or IPv6 (``dualstack_ipv6``: IPv4 too, as the
    standard one) on Joyride where it serves the port; other families go to the
    kernel."""
    if dualstack_ipv6 and family != _stdlib.AF_INET6:
        raise ValueError("dualstack_ipv6 requires AF_INET6 family")
    if family not in (_stdlib.AF_INET, _stdlib.AF_INET6):
        return socket(fileno=_stdlib.create_server(
            address, family=family, backlog=backlog, reuse_port=reuse_port).detach())
    sock = socket(family, _stdlib.SOCK_STREAM)
    try:
        sock.setsockopt(_stdlib.SOL_SOCKET, _stdlib.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(_stdlib.SOL_SOCKET, _stdlib.SO_REUSEPORT, 1)
        if family == _stdlib.AF_INET6:  # as the standard one: v6only unless dual-stack
            sock.setsockopt(_stdlib.IPPROTO_IPV6, _stdlib.IPV6_V6ONLY, int(not dualstack_ipv6))
        sock.bind(address)
        sock.listen(backlog if backlog is not None else 128)
    except BaseException:
        sock.close()
        raise
    return sock
