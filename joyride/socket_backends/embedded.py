"""A ``joyride.socket`` that lives in the in-process engine (``joyride.embed``).

The socket's ``fileno`` is one end of a private unix socket pair whose readiness
mirrors the TCP socket's (``Readiness``): readable while a ``recv``/``accept`` would
not block, writable while the TCP send buffer has room (or an error is pending) and
the handshake is over, so ``select``, ``selectors`` and ``socketserver`` work and a
non-blocking ``send`` after "writable" does not raise ``BlockingIOError``. Blocking
calls wait on a condition the engine's driver signals (a background thread, or the
asyncio loop when one already drives the engine).

``EmbeddedSocket`` is also what a socket is before it is placed (no stack yet): it
records options and answers as an unconnected socket.
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
from typing import Any, Final

from joyride import sockopts
from joyride.embed.drivers import drives_here, ensure_thread_driver, nic_fds
from joyride.embed.endpoint import address, connection_error
from joyride.embed.stack import Stack
from joyride.tcp.config import TcpConfig
from joyride.tcp.connection import TcpConnection
from joyride.tcp.listener import Listener
from joyride.tcp.state import SENDING_STATES, TcpState

INLINE_POLL: Final = 0.001  # seconds between polls when a blocking call drives the engine


def errno_error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class Readiness:
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


class EmbeddedSocket:
    """An embedded listener or connection, or a socket not placed yet (``stack`` None).

    ``options`` are those set so far, in order: applied to the TCP configuration at
    listen/connect, replayed if the socket turns out to be a kernel one."""

    mode = "embedded"

    def __init__(self, type_: int, timeout: float | None) -> None:
        self.type = type_
        self.timeout = timeout
        self.options: list[tuple[int, int, Any]] = []
        self.stack: Stack | None = None
        self.bound: tuple[str, int] | None = None
        self.listener: Listener | None = None
        self.conn: TcpConnection | None = None
        self.closed = False
        self._cond: threading.Condition | None = None
        self._ready: Readiness | None = None
        self._read_shut = False
        self._error = 0  # SO_ERROR

    def attach(self, stack: Stack) -> None:
        self.stack = stack
        self._cond = threading.Condition(stack.lock)
        ensure_thread_driver(stack)

    @classmethod
    def accepted(cls, stack: Stack, conn: TcpConnection, timeout: float | None
                 ) -> EmbeddedSocket:
        sock = cls(_stdlib.SOCK_STREAM, timeout)
        sock.attach(stack)
        sock.conn = conn
        stack.watch(conn, sock._notify)
        return sock

    def settimeout(self, value: float | None) -> None:
        self.timeout = None if value is None else float(value)

    # -- readiness -------------------------------------------------------------------------

    def _readable(self) -> bool:
        if self.closed:
            return True
        if self.listener is not None:
            return self.listener.accept_queue_len > 0
        conn = self.conn
        return conn is not None and (conn.readable or self._read_shut)

    def _notify(self) -> None:
        """Stack callback (lock held): wake blocked callers, update the readiness."""
        assert self._cond is not None
        self._cond.notify_all()
        self._sync_event()

    def _writable(self) -> bool:
        """A ``send`` would not block: room in the send buffer, or an error to report.
        As Linux, not while the handshake runs (non-blocking connect waits for POLLOUT)
        and never on a listener."""
        if self.closed:
            return True
        if self.listener is not None:
            return False
        conn = self.conn
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
        assert self.stack is not None and self._cond is not None
        if ready():
            return
        if self.timeout == 0.0:
            raise BlockingIOError(errno.EAGAIN, f"{what} would block")
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        stack = self.stack
        while not ready():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError("timed out")
            if stack.closed:
                raise errno_error(errno.ENETDOWN)
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
        if self.closed:
            raise errno_error(errno.EBADF)
        if self.conn is None:
            raise errno_error(errno.ENOTCONN)
        return self.conn

    # -- setup -----------------------------------------------------------------------------

    def listen(self, backlog: int) -> None:
        """Listen on the embedded port it is bound to (``stack`` and ``bound`` set)."""
        assert self.stack is not None and self.bound is not None
        with self.stack.lock:
            if self.listener is None:
                self.listener = self.stack.listen(self.bound[1], self._notify,
                                                  self._tcp_config(self.stack))

    def accept(self) -> tuple[Any, tuple[str, int]]:
        if self.listener is None or self.stack is None:
            raise errno_error(errno.EINVAL)
        stack, listener = self.stack, self.listener
        with stack.lock:
            self._wait(lambda: listener.accept_queue_len > 0 or self.closed, "accept")
            if self.closed:
                raise errno_error(errno.EBADF)
            conn = stack.accept(listener)
            assert conn is not None
            self._sync_event()
            # As the kernel: accepted sockets are blocking unless a default timeout is set.
            sock = EmbeddedSocket.accepted(stack, conn, _stdlib.getdefaulttimeout())
        return sock, address(conn.remote_ip, conn.remote_port)

    def connect_ex(self, addr: tuple[str, int]) -> int:
        """Connect (or go on connecting) through ``stack``, which the caller attached:
        ``addr`` is an IPv4 address as ``inet_aton`` packs it, and a port."""
        stack = self.stack
        assert stack is not None
        if self.conn is None:
            ip, port = _stdlib.inet_aton(addr[0]), addr[1]
            with stack.lock:
                self.conn = stack.connect(ip, port, self._notify, self._tcp_config(stack))
        conn = self.conn
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

    def connecting(self) -> bool:
        """A connect that timed out is still going on (the handshake runs)."""
        return self.stack is not None and self.conn is not None and \
            self.conn.state is not TcpState.CLOSED

    # -- data ------------------------------------------------------------------------------

    def send(self, data: bytes | bytearray | memoryview, flags: int) -> int:
        if flags:
            raise errno_error(errno.EOPNOTSUPP)
        conn = self._require_conn()
        assert self.stack is not None
        if not data:
            return 0
        with self.stack.lock:
            self._wait(lambda: conn.writable or conn.state not in SENDING_STATES, "send")
            if conn.state not in SENDING_STATES or (conn.send_queue == 0 and not conn.writable):
                raise self._send_error(conn)
            sent = conn.send(data)
            if sent == 0:
                raise self._send_error(conn)
            self.stack.touch(conn)
            self._sync_event()  # the buffer may be full now: stop polling writable
        return sent

    @staticmethod
    def _send_error(conn: TcpConnection) -> OSError:
        exc = connection_error(conn)
        if exc is not None and conn.state is TcpState.CLOSED:
            return exc
        return errno_error(errno.EPIPE)

    def sendall(self, data: bytes | bytearray | memoryview, flags: int) -> None:
        view = memoryview(data).cast("B")
        saved = self.timeout
        deadline = None if saved is None else time.monotonic() + saved
        try:
            while view:
                if deadline is not None:
                    self.timeout = max(0.0, deadline - time.monotonic())
                    if self.timeout == 0.0 and saved != 0.0:
                        raise TimeoutError("timed out")
                sent = self.send(view, flags)
                view = view[sent:]
        finally:
            self.timeout = saved

    def recv(self, bufsize: int, flags: int) -> bytes:
        buf = bytearray(bufsize)
        n = self.recv_into(buf, bufsize, flags)
        return bytes(buf[:n])

    def recv_into(self, buffer: Any, nbytes: int, flags: int) -> int:
        if flags:
            raise errno_error(errno.EOPNOTSUPP)
        conn = self._require_conn()
        assert self.stack is not None
        view = memoryview(buffer).cast("B")
        if nbytes:
            view = view[:nbytes]
        if not view or self._read_shut:
            return 0
        with self.stack.lock:
            self._wait(lambda: conn.readable or self._read_shut or self.closed, "recv")
            n = conn.recv_into(view)
            if n:
                self.stack.touch(conn)  # the window may open: tell the peer
            elif conn.state is TcpState.CLOSED and not conn.eof:
                exc = connection_error(conn)
                if exc is not None:
                    raise exc
            self._sync_event()
        return n

    def recvfrom(self, bufsize: int, flags: int) -> tuple[bytes, Any]:
        return self.recv(bufsize, flags), None

    def shutdown(self, how: int) -> None:
        conn = self._require_conn()
        assert self.stack is not None
        with self.stack.lock:
            if how in (_stdlib.SHUT_RD, _stdlib.SHUT_RDWR):
                self._read_shut = True
            if how in (_stdlib.SHUT_WR, _stdlib.SHUT_RDWR):
                conn.shutdown_write()
                self.stack.touch(conn)
            self._notify()

    # -- closing ---------------------------------------------------------------------------

    def close(self, *, deferred: bool) -> None:
        """Close; ``deferred``: ``makefile()`` objects still use it, the last one closes."""
        self.closed = True
        if deferred:
            return
        stack = self.stack
        if stack is not None:
            with stack.lock:
                if self.listener is not None:
                    stack.unlisten(self.listener)
                    self.listener = None
                if self.conn is not None:
                    stack.forget(self.conn)
                    # Unread data turns this into a reset (RFC 2525 §2.17), as in Linux.
                    self.conn.close()
                    stack.touch(self.conn)
                assert self._cond is not None
                self._cond.notify_all()
        if self._ready is not None:
            self._ready.close()
            self._ready = None

    def detach(self) -> int:
        raise errno_error(errno.EOPNOTSUPP)

    # -- descriptors and options -----------------------------------------------------------

    def fileno(self) -> int:
        if self.closed:
            return -1
        if self._ready is None:
            self._ready = Readiness()
            if self.stack is not None:
                with self.stack.lock:
                    self._sync_event()
            else:
                self._sync_event()
        return self._ready.fileno()

    def setsockopt(self, level: int, optname: int, value: Any) -> None:
        change = sockopts.changes(level, optname, value)  # OSError(EINVAL) if out of range
        self.options.append((level, optname, value))
        conn, stack = self.conn, self.stack
        if change and conn is not None and stack is not None:
            with stack.lock:
                conn.reconfigure(dataclasses.replace(conn.config, **change), stack.clock())
                stack.touch(conn)  # as Linux: TCP_NODELAY pushes what Nagle held back

    def _tcp_config(self, stack: Stack) -> TcpConfig | None:
        """The engine's TCP configuration with this socket's options applied, or None
        when no option changes it."""
        base = stack.engine.config
        config = sockopts.apply(base, self.options)
        return None if config is base else config

    def getsockopt(self, level: int, optname: int, buflen: int) -> Any:
        if (level, optname) == (_stdlib.SOL_SOCKET, _stdlib.SO_ERROR):
            code, self._error = self._error, 0
            return code
        if (level, optname) == (_stdlib.SOL_SOCKET, _stdlib.SO_TYPE):
            return self.type
        return self.recorded(level, optname)

    def recorded(self, level: int, optname: int) -> Any:
        """The value last set for an option this socket records itself (0 if never)."""
        for lvl, opt, value in reversed(self.options):
            if (lvl, opt) == (level, optname):
                return value
        return 0

    def getsockname(self) -> tuple[str, int]:
        if self.conn is not None:
            return address(self.conn.local_ip, self.conn.local_port)
        return self.bound or ("0.0.0.0", 0)

    def getpeername(self) -> tuple[str, int]:
        conn = self._require_conn()
        return address(conn.remote_ip, conn.remote_port)

    def describe(self) -> str:
        state = self.conn.state.value if self.conn is not None else \
            "LISTEN" if self.listener is not None else "unconnected"
        return f"<joyride.socket embedded {state} laddr={self.getsockname()}>"
