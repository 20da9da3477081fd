"""``joyride.socket``: the standard library's TCP socket API, served by Joyride.

A drop-in for ``socket``: ``socket``, ``create_connection``, ``create_server`` and every
constant and helper of the standard module (re-exported unchanged). A socket decides
where it lives when it is bound or connected:

* **embedded** — the port is one this process embeds (``joyride.embed``), or an
  outgoing connection's destination routes out of the embedded interface: the
  connection lives in the in-process engine. The socket's ``fileno`` is one end of a
  private unix socket pair whose readiness mirrors the TCP socket's (``_Readiness``):
  readable while a ``recv``/``accept`` would not block, writable while the TCP send
  buffer has room (or an error is pending) and the handshake is over, so ``select``,
  ``selectors`` and ``socketserver`` work and a non-blocking ``send`` after "writable"
  does not raise ``BlockingIOError``.
  Blocking calls wait on a condition the engine's driver signals (a background
  thread, or the asyncio loop when one already drives the engine).
* **service** — the network service (``joyride attach``) accelerates the port: the
  socket is the real descriptor the service hands over (``joyride.service.appclient``),
  so everything the kernel offers on a descriptor keeps working. The descriptor is an
  ``AF_UNIX`` socket, but ``getsockname``/``getpeername`` and ``accept`` report the TCP
  addresses, read from the unix names the service binds (they spell the 4-tuple:
  ``joyride.service.protocol``), so the answer survives ``dup``/``fork``/``exec``;
  ``getsockopt``/``setsockopt`` answer as a kernel TCP socket would, as the preload
  shim does (``sockopts.TcpAnswers``: ``TCP_INFO``, ``SO_ERROR`` ... from the service).
* **kernel** — anything else: a plain kernel socket.

Options on embedded sockets (``joyride.sockopts``): ``TCP_NODELAY``, ``SO_SNDBUF``,
``SO_RCVBUF``, ``SO_KEEPALIVE``, ``TCP_KEEPIDLE``, ``TCP_KEEPINTVL`` and ``TCP_KEEPCNT``
set before ``listen``/``connect`` configure the connection's TCP (``TcpConfig`` per
connection; a listener's accepted connections inherit its options, as in Linux); on a
connected socket all but ``SO_RCVBUF`` take effect at once. Other options are
recorded, reported back by ``getsockopt`` and replayed if the socket turns out to be a
kernel one, but have no effect on Joyride's TCP.

Embedded sockets are IPv4 stream sockets; other families and types are kernel sockets
from the start. ``MSG_*`` flags other than 0 are refused on embedded sockets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import selectors
import socket as _stdlib
import threading
import time
from collections.abc import Callable
from typing import Any

from joyride import sockopts
from joyride.aio.transport import address, connection_error
from joyride.embed.drivers import drives_here, ensure_thread_driver, nic_fds
from joyride.embed.select import connecting_stack, listening_stack
from joyride.embed.stack import Stack
from joyride.tcp.config import TcpConfig
from joyride.tcp.connection import TcpConnection
from joyride.tcp.listener import Listener
from joyride.tcp.state import SENDING_STATES, TcpState

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
INLINE_POLL = 0.001  # seconds between polls when a blocking call drives the engine itself


def _errno_error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _service_listen(host: str, port: int, backlog: int, reuseport: bool) -> Any:
    """A listening descriptor from the network service, or None (not accelerated)."""
    try:
        from joyride.service import appclient
    except ImportError:
        return None
    try:
        return appclient.listen(port, host or "0.0.0.0", backlog, reuseport=reuseport)
    except (appclient.NotAccelerated, FileNotFoundError, ConnectionRefusedError):
        return None


class _Readiness:
    """A descriptor whose poll readiness is set by hand, for an embedded socket.

    One end (``fileno``) of a non-blocking ``AF_UNIX`` stream pair. Readable: one byte
    waits in it, sent from the other end. Not writable: its send path is filled until
    ``EAGAIN`` (a unix stream socket polls writable again only once its queued bytes
    are consumed: ``unix_writable``), and draining the other end makes it writable.
    An eventfd cannot do this: it is writable unless it is also readable. The send
    buffer is shrunk to the kernel's minimum, so blocking costs a few kilobytes.
    """

    __slots__ = ("_end", "_other", "_readable", "_writable")

    def __init__(self) -> None:
        self._end, self._other = _stdlib.socketpair(
            _stdlib.AF_UNIX, _stdlib.SOCK_STREAM | _stdlib.SOCK_NONBLOCK | _stdlib.SOCK_CLOEXEC)
        self._end.setsockopt(_stdlib.SOL_SOCKET, _stdlib.SO_SNDBUF, 1)
        self._readable = False
        self._writable = True

    def fileno(self) -> int:
        return self._end.fileno()

    def set(self, readable: bool, writable: bool) -> None:
        if readable != self._readable:
            if readable:
                self._other.send(b"r")
            else:
                with contextlib.suppress(BlockingIOError):
                    self._end.recv(16)
            self._readable = readable
        if writable != self._writable:
            if writable:
                with contextlib.suppress(BlockingIOError):
                    while self._other.recv(1 << 16):
                        pass
            else:
                filler = bytes(4096)
                with contextlib.suppress(BlockingIOError):
                    while True:
                        self._end.send(filler)
            self._writable = writable

    def close(self) -> None:
        self._end.close()
        self._other.close()


class socket:
    """A TCP socket that lives in Joyride when Joyride owns its port (module doc)."""

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1,
                 fileno: int | None = None) -> None:
        family = _stdlib.AF_INET if family == -1 else family
        type = _stdlib.SOCK_STREAM if type == -1 else type
        self._kernel: Any = None
        if fileno is not None or family != _stdlib.AF_INET or \
                type & ~_TYPE_FLAGS != _stdlib.SOCK_STREAM:
            self._kernel = _stdlib.socket(family, type, max(proto, 0), fileno)
        self._family, self._type, self._proto = family, type & ~_TYPE_FLAGS, max(proto, 0)
        self._timeout: float | None = None if type & _stdlib.SOCK_NONBLOCK else \
            getdefaulttimeout()
        self._opts: list[tuple[int, int, Any]] = []
        self._stack: Stack | None = None
        self._bound: tuple[str, int] | None = None
        self._listener: Listener | None = None
        self._conn: TcpConnection | None = None
        self._cond: threading.Condition | None = None
        self._ready: _Readiness | None = None
        self._read_shut = False
        self._closed = False
        self._io_refs = 0
        self._error = 0
        self._service = False  # _kernel is a service descriptor (unix, TCP names)
        # A service descriptor's options, answered as a kernel TCP socket would.
        self._answers: sockopts.TcpAnswers | None = None
        self._service_uids: set[int] | None = None  # a service listener: who delivers

    # -- which backend -----------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        kernel = self.__dict__.get("_kernel")
        if kernel is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(kernel, name)

    def _to_kernel(self, sock: Any = None) -> Any:
        """Become a kernel socket (replaying options), or wrap a service descriptor."""
        if sock is None:
            sock = _stdlib.socket(self._family, self._type, self._proto)
            for level, opt, value in self._opts:
                sock.setsockopt(level, opt, value)
        else:
            # A service descriptor: the options with a TCP meaning set so far go to
            # the service (OP_SETOPT), as the preload shim carries them over.
            self._service = True
            from joyride.service import appclient

            for level, opt, value in self._opts:
                if isinstance(value, int) and sockopts.changes(level, opt, value):
                    with contextlib.suppress(OSError):
                        appclient.set_option(sock, level, opt, value)
            # The rest as the shim carries them: the unix socket takes the SOL_SOCKET
            # ones it can hold, TCP's are answered as a kernel socket would.
            self._answers = sockopts.TcpAnswers(sock, self._opts)
            self._answers.adopt()
        sock.settimeout(self._timeout)
        self._kernel = sock
        return sock

    def _service_name(self, peer: bool) -> tuple[str, int] | None:
        """The TCP address a service descriptor's unix names spell, or None."""
        from joyride.service import protocol

        local, remote = protocol.tcp_addresses(self._kernel)
        return remote if peer else local

    def _attach(self, stack: Stack) -> None:
        self._stack = stack
        self._cond = threading.Condition(stack.lock)
        ensure_thread_driver(stack)

    @classmethod
    def _accepted(cls, stack: Stack, conn: TcpConnection, timeout_: float | None) -> socket:
        sock = cls()
        sock._attach(stack)
        sock._conn = conn
        sock._timeout = timeout_
        stack.watch(conn, sock._notify)
        return sock

    @property
    def family(self) -> _stdlib.AddressFamily:
        return _stdlib.AddressFamily(self._family)

    @property
    def type(self) -> _stdlib.SocketKind:
        return _stdlib.SocketKind(self._type)

    @property
    def proto(self) -> int:
        return self._proto

    # -- readiness (embedded) -------------------------------------------------------------

    def _readable(self) -> bool:
        if self._closed:
            return True
        if self._listener is not None:
            return self._listener.accept_queue_len > 0
        conn = self._conn
        return conn is not None and (conn.readable or self._read_shut)

    def _notify(self) -> None:
        """Stack callback (lock held): wake blocked callers, update the eventfd."""
        assert self._cond is not None
        self._cond.notify_all()
        self._sync_event()

    def _writable(self) -> bool:
        """A ``send`` would not block: room in the send buffer, or an error to report.
        As Linux, not while the handshake runs (non-blocking connect waits for POLLOUT)
        and never on a listener."""
        if self._closed:
            return True
        if self._listener is not None:
            return False
        conn = self._conn
        if conn is None:
            return True
        if conn.state in (TcpState.SYN_SENT, TcpState.SYN_RECEIVED):
            return False
        return conn.writable or conn.state not in SENDING_STATES

    def _sync_event(self) -> None:
        if self._ready is not None:
            self._ready.set(self._readable(), self._writable())

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        """Block until ``ready()`` (lock held by the caller), honouring the timeout."""
        assert self._stack is not None and self._cond is not None
        if ready():
            return
        if self._timeout == 0.0:
            raise BlockingIOError(errno.EAGAIN, f"{what} would block")
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        stack = self._stack
        while not ready():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError("timed out")
            if stack.closed:
                raise _errno_error(errno.ENETDOWN)
            if drives_here(stack):
                self._poll_inline(stack, remaining)
            else:
                self._cond.wait(remaining)

    @staticmethod
    def _poll_inline(stack: Stack, remaining: float | None) -> None:
        """This thread drives the engine (an asyncio loop calling a blocking method):
        poll here, or the wait would wait for itself."""
        fds = nic_fds(stack.engine.nic)
        wait = INLINE_POLL if remaining is None else max(0.0, min(INLINE_POLL, remaining))
        if fds:
            with selectors.DefaultSelector() as sel:
                for fd in fds:
                    sel.register(fd, selectors.EVENT_READ)
                sel.select(wait)
        else:
            time.sleep(wait)
        stack.poll()

    def _require_conn(self) -> TcpConnection:
        if self._closed:
            raise _errno_error(errno.EBADF)
        if self._conn is None:
            raise _errno_error(errno.ENOTCONN)
        return self._conn

    # -- setup -----------------------------------------------------------------------------

    def bind(self, addr: tuple[str, int]) -> None:
        if self._kernel is not None:
            return self._kernel.bind(addr)
        host, port = addr[0], int(addr[1])
        stack = listening_stack(host, port)
        if stack is None:
            self._bound = (host, port)  # kernel or service: decided at listen/connect
            if port == 0 or not self._service_candidate():
                self._to_kernel().bind(addr)
            return None
        self._attach(stack)
        self._bound = (host or "0.0.0.0", port)
        return None

    @staticmethod
    def _service_candidate() -> bool:
        try:
            from joyride.service.state import StateDir
        except ImportError:
            return False
        return any(d.service_alive() for d in StateDir.all_in_netns())

    def listen(self, backlog: int = 128) -> None:
        if self._kernel is not None:
            return self._kernel.listen(backlog)
        if self._bound is None:
            raise _errno_error(errno.EINVAL)  # the kernel would pick a port: not ours
        if self._stack is None:
            host, port = self._bound
            service = _service_listen(
                host, port, backlog,
                bool(self._recorded(_stdlib.SOL_SOCKET, _stdlib.SO_REUSEPORT)))
            if service is None:
                kernel = self._to_kernel()
                kernel.bind(self._bound)
                return kernel.listen(backlog)
            self._to_kernel(service)
            assert self._answers is not None
            self._answers.backlog = min(max(backlog, 0), sockopts.somaxconn())
            from joyride.service import appclient

            # Who may deliver connections to it, found now, in the listener's namespace.
            self._service_uids = appclient.service_uids()
            return None
        with self._stack.lock:
            if self._listener is None:
                self._listener = self._stack.listen(self._bound[1], self._notify,
                                                    self._tcp_config(self._stack))
        return None

    def accept(self) -> tuple[Any, tuple[str, int]]:
        if self._service:
            from joyride.service import appclient

            delivered, _unix_name = appclient.accept(self._kernel, self._service_uids)
            # As the kernel: accepted sockets are blocking unless a default timeout is set.
            sock = socket()
            sock._to_kernel(delivered)
            if self._answers is not None:  # as Linux: it has its listener's options
                sock._answers = self._answers.inherited(delivered)
            peer = sock._service_name(peer=True)
            return sock, peer if peer is not None else ("0.0.0.0", 0)
        if self._kernel is not None:
            return self._kernel.accept()
        if self._listener is None or self._stack is None:
            raise _errno_error(errno.EINVAL)
        stack, listener = self._stack, self._listener
        with stack.lock:
            self._wait(lambda: listener.accept_queue_len > 0 or self._closed, "accept")
            if self._closed:
                raise _errno_error(errno.EBADF)
            conn = stack.accept(listener)
            assert conn is not None
            self._sync_event()
            # As the kernel: accepted sockets are blocking unless a default timeout is set.
            sock = socket._accepted(stack, conn, getdefaulttimeout())
        return sock, address(conn.remote_ip, conn.remote_port)

    def connect(self, addr: tuple[str, int]) -> None:
        code = self.connect_ex(addr)
        if code == errno.EINPROGRESS and self._timeout == 0.0:
            raise BlockingIOError(errno.EINPROGRESS, os.strerror(errno.EINPROGRESS))
        if code == errno.ETIMEDOUT and self._stack is not None and self._conn is not None \
                and self._conn.state is not TcpState.CLOSED:
            raise TimeoutError("timed out")
        if code:
            raise _errno_error(code)

    def connect_ex(self, addr: tuple[str, int]) -> int:
        if self._kernel is not None:
            return int(self._kernel.connect_ex(addr))
        host, port = addr[0], int(addr[1])
        ip = _stdlib.inet_aton(_stdlib.gethostbyname(host))
        stack = self._stack or connecting_stack(ip)
        if stack is None:
            return self._connect_elsewhere(host, port)
        if self._conn is None:
            self._attach(stack)
            with stack.lock:
                self._conn = stack.connect(ip, port, self._notify, self._tcp_config(stack))
        conn = self._conn
        with stack.lock:
            try:
                self._wait(lambda: conn.state not in (TcpState.SYN_SENT,
                                                      TcpState.SYN_RECEIVED), "connect")
            except BlockingIOError:
                return errno.EINPROGRESS
            except TimeoutError:
                return errno.ETIMEDOUT
        exc = connection_error(conn) if conn.state is TcpState.CLOSED else None
        if isinstance(exc, OSError) and exc.errno:
            self._error = exc.errno
            return exc.errno
        return 0

    def _connect_elsewhere(self, host: str, port: int) -> int:
        if self._service_candidate():
            from joyride.service import appclient

            nonblocking = self._timeout == 0.0
            try:
                sock = appclient.connect(_stdlib.gethostbyname(host), port,
                                         timeout=self._timeout, nonblocking=nonblocking)
            except (appclient.NotAccelerated, FileNotFoundError, ConnectionRefusedError):
                sock = None
            if sock is not None:
                self._to_kernel(sock)
                # As the preload shim: the handshake goes on behind the descriptor.
                return errno.EINPROGRESS if nonblocking else 0
        kernel = self._to_kernel()
        if self._bound is not None:
            kernel.bind(self._bound)
        return int(kernel.connect_ex((host, port)))

    # -- data ------------------------------------------------------------------------------

    def send(self, data: bytes | bytearray | memoryview, flags: int = 0) -> int:
        if self._kernel is not None:
            return int(self._kernel.send(data, flags))
        if flags:
            raise _errno_error(errno.EOPNOTSUPP)
        conn = self._require_conn()
        assert self._stack is not None
        if not data:
            return 0
        with self._stack.lock:
            self._wait(lambda: conn.writable or conn.state not in SENDING_STATES, "send")
            if conn.state not in SENDING_STATES or (conn.send_queue == 0 and not conn.writable):
                raise self._send_error(conn)
            sent = conn.send(data)
            if sent == 0:
                raise self._send_error(conn)
            self._stack.touch(conn)
            self._sync_event()  # the buffer may be full now: stop polling writable
        return sent

    @staticmethod
    def _send_error(conn: TcpConnection) -> OSError:
        exc = connection_error(conn)
        if isinstance(exc, OSError) and conn.state is TcpState.CLOSED:
            return exc
        return _errno_error(errno.EPIPE)

    def sendall(self, data: bytes | bytearray | memoryview, flags: int = 0) -> None:
        if self._kernel is not None:
            return self._kernel.sendall(data, flags)
        view = memoryview(data).cast("B")
        saved = self._timeout
        deadline = None if saved is None else time.monotonic() + saved
        try:
            while view:
                if deadline is not None:
                    self._timeout = max(0.0, deadline - time.monotonic())
                    if self._timeout == 0.0 and saved != 0.0:
                        raise TimeoutError("timed out")
                sent = self.send(view, flags)
                view = view[sent:]
        finally:
            self._timeout = saved
        return None

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if self._kernel is not None:
            return self._kernel.recv(bufsize, flags)
        buf = bytearray(bufsize)
        n = self.recv_into(buf, bufsize, flags)
        return bytes(buf[:n])

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        if self._kernel is not None:
            return int(self._kernel.recv_into(buffer, nbytes, flags))
        if flags:
            raise _errno_error(errno.EOPNOTSUPP)
        conn = self._require_conn()
        assert self._stack is not None
        view = memoryview(buffer).cast("B")
        if nbytes:
            view = view[:nbytes]
        if not view or self._read_shut:
            return 0
        with self._stack.lock:
            self._wait(lambda: conn.readable or self._read_shut or self._closed, "recv")
            n = conn.recv_into(view)
            if n:
                self._stack.touch(conn)  # the window may open: tell the peer
            elif conn.state is TcpState.CLOSED and not conn.eof:
                exc = connection_error(conn)
                if exc is not None:
                    raise exc
            self._sync_event()
        return n

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        if self._kernel is not None:
            return self._kernel.recvfrom(bufsize, flags)
        return self.recv(bufsize, flags), None

    def shutdown(self, how: int) -> None:
        if self._kernel is not None:
            return self._kernel.shutdown(how)
        conn = self._require_conn()
        assert self._stack is not None
        with self._stack.lock:
            if how in (SHUT_RD, SHUT_RDWR):
                self._read_shut = True
            if how in (SHUT_WR, SHUT_RDWR):
                conn.shutdown_write()
                self._stack.touch(conn)
            self._notify()
        return None

    # -- closing ---------------------------------------------------------------------------

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed:
            self.close()

    def close(self) -> None:
        if self._kernel is not None:
            self._closed = True
            return self._kernel.close()
        self._closed = True
        if self._io_refs > 0:
            return None  # makefile() objects still use it: the last one closes
        stack = self._stack
        if stack is not None:
            with stack.lock:
                if self._listener is not None:
                    stack.unlisten(self._listener)
                    self._listener = None
                if self._conn is not None:
                    stack.forget(self._conn)
                    # Unread data turns this into a reset (RFC 2525 §2.17), as in Linux.
                    self._conn.close()
                    stack.touch(self._conn)
                assert self._cond is not None
                self._cond.notify_all()
        if self._ready is not None:
            self._ready.close()
            self._ready = None
        return None

    def detach(self) -> int:
        if self._kernel is not None:
            return int(self._kernel.detach())
        raise _errno_error(errno.EOPNOTSUPP)

    def __enter__(self) -> socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if self._kernel is None and not self.__dict__.get("_closed", True):
            with contextlib.suppress(Exception):  # interpreter shutdown: nobody to tell
                self.close()

    # -- descriptors and options ----------------------------------------------------------------

    def fileno(self) -> int:
        if self._kernel is not None:
            return int(self._kernel.fileno())
        if self._closed:
            return -1
        if self._ready is None:
            self._ready = _Readiness()
            if self._stack is not None:
                with self._stack.lock:
                    self._sync_event()
            else:
                self._sync_event()
        return self._ready.fileno()

    def settimeout(self, value: float | None) -> None:
        if value is not None and value < 0:
            raise ValueError("Timeout value out of range")
        self._timeout = None if value is None else float(value)
        if self._kernel is not None:
            self._kernel.settimeout(value)

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self.settimeout(None if flag else 0.0)

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None
                   ) -> None:
        if self._service:
            return self._service_setsockopt(level, optname, value)
        if self._kernel is not None:
            return self._kernel.setsockopt(level, optname, value)
        # Recorded: applied to the TCP configuration at listen/connect (_tcp_config),
        # replayed if the socket turns out to be a kernel one.
        change = sockopts.changes(level, optname, value)  # OSError(EINVAL) if out of range
        self._opts.append((level, optname, value))
        conn, stack = self._conn, self._stack
        if change and conn is not None and stack is not None:
            with stack.lock:
                conn.reconfigure(dataclasses.replace(conn.config, **change), stack.clock())
                stack.touch(conn)  # as Linux: TCP_NODELAY pushes what Nagle held back
        return None

    def _service_setsockopt(self, level: int, optname: int, value: Any) -> None:
        """A service descriptor is a unix socket: as the preload shim, options with a
        TCP meaning go to the service, the others are answered as a kernel TCP socket
        would (``sockopts.TcpAnswers``)."""
        assert self._answers is not None
        self._answers.setsockopt(level, optname, value)
        self._opts = list(self._answers.options)

    def _tcp_config(self, stack: Stack) -> TcpConfig | None:
        """The engine's TCP configuration with this socket's options applied, or None
        when no option changes it."""
        base = stack.engine.config
        config = sockopts.apply(base, self._opts)
        return None if config is base else config

    def getsockopt(self, level: int, optname: int, buflen: int = 0) -> Any:
        if self._service and self._answers is not None:
            # The unix descriptor's answers are a unix socket's: a TCP socket's, as the
            # shim gives them (TCP_INFO, SO_ERROR ... from the service).
            return self._answers.getsockopt(level, optname, buflen)
        if self._kernel is not None:
            return self._kernel.getsockopt(level, optname, buflen) if buflen else \
                self._kernel.getsockopt(level, optname)
        if (level, optname) == (_stdlib.SOL_SOCKET, _stdlib.SO_ERROR):
            code, self._error = self._error, 0
            return code
        if (level, optname) == (_stdlib.SOL_SOCKET, _stdlib.SO_TYPE):
            return self._type
        return self._recorded(level, optname)

    def _recorded(self, level: int, optname: int) -> Any:
        """The value last set for an option this socket records itself (0 if never)."""
        for lvl, opt, value in reversed(self._opts):
            if (lvl, opt) == (level, optname):
                return value
        return 0

    def getsockname(self) -> tuple[str, int]:
        if self._service:
            name = self._service_name(peer=False)
            if name is None:
                raise _errno_error(errno.EBADF if self._closed else errno.ENOTCONN)
            return name
        if self._kernel is not None:
            return self._kernel.getsockname()
        if self._conn is not None:
            return address(self._conn.local_ip, self._conn.local_port)
        return self._bound or ("0.0.0.0", 0)

    def getpeername(self) -> tuple[str, int]:
        if self._service:
            name = self._service_name(peer=True)
            if name is None:  # a listener, or the service's end went away
                raise _errno_error(errno.EBADF if self._closed else errno.ENOTCONN)
            return name
        if self._kernel is not None:
            return self._kernel.getpeername()
        conn = self._require_conn()
        return address(conn.remote_ip, conn.remote_port)

    def makefile(self, mode: str = "r", buffering: int | None = None, *,
                 encoding: str | None = None, errors: str | None = None,
                 newline: str | None = None) -> Any:
        if self._kernel is not None:
            return self._kernel.makefile(mode, buffering, encoding=encoding, errors=errors,
                                         newline=newline)
        # The standard implementation needs only recv_into/send/fileno/_io_refs/
        # _decref_socketios, which this class provides: reuse it, don't copy it.
        makefile: Any = _stdlib.socket.makefile
        return makefile(self, mode, buffering, encoding=encoding, errors=errors,
                        newline=newline)

    @property
    def joyride_mode(self) -> str:
        """Where this socket lives: "embedded", "service", "kernel" or "unbound"."""
        if self._stack is not None:
            return "embedded"
        if self._service:
            return "service"
        return "kernel" if self._kernel is not None else "unbound"

    def __repr__(self) -> str:
        if self._service:
            laddr = self._service_name(peer=False)
            return f"<joyride.socket service fd={self._kernel.fileno()} laddr={laddr}>"
        if self._kernel is not None:
            return f"<joyride.socket kernel {self._kernel!r}>"
        state = self._conn.state.value if self._conn is not None else \
            "LISTEN" if self._listener is not None else "unconnected"
        return f"<joyride.socket embedded {state} laddr={self.getsockname()}>"


def create_connection(address: tuple[str, int], timeout: Any = _GLOBAL_DEFAULT_TIMEOUT,
                      source_address: tuple[str, int] | None = None, *,
                      all_errors: bool = False) -> socket:
    """``socket.create_connection`` (IPv4)."""
    host, port = address
    sock = socket(_stdlib.AF_INET, _stdlib.SOCK_STREAM)
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


def create_server(address: tuple[str, int], *, family: int = _stdlib.AF_INET,
                  backlog: int | None = None, reuse_port: bool = False,
                  dualstack_ipv6: bool = False) -> socket:
    """``socket.create_server`` (IPv4 on Joyride; other families go to the kernel)."""
    if family != _stdlib.AF_INET or dualstack_ipv6:
        return socket(fileno=_stdlib.create_server(
            address, family=family, backlog=backlog, reuse_port=reuse_port,
            dualstack_ipv6=dualstack_ipv6).detach())
    sock = socket(_stdlib.AF_INET, _stdlib.SOCK_STREAM)
    try:
        sock.setsockopt(_stdlib.SOL_SOCKET, _stdlib.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(_stdlib.SOL_SOCKET, _stdlib.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(backlog if backlog is not None else 128)
    except BaseException:
        sock.close()
        raise
    return sock
