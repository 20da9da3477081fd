"""An asyncio ``Transport`` over one Joyride connection of an in-process stack.

It behaves like the selector transports of the standard library, so
``StreamReaderProtocol``/``StreamWriter`` and hand-written protocols work unchanged:

* ``data_received`` gets bytes as the TCP core delivers them in order; ``pause_reading``
  leaves them in the TCP receive buffer, so the advertised window closes and the peer
  slows down (flow control end to end, as with a kernel socket);
* ``write`` hands bytes to the TCP send buffer at once; what does not fit waits in the
  transport, and the protocol is paused above the high-water mark and resumed below
  the low one (``get_write_buffer_size`` counts only those waiting bytes, like the
  standard transports count only their user-space buffer);
* ``eof_received`` follows the peer's FIN; returning false closes our side, as usual;
* ``close`` sends what is buffered and then a FIN; ``abort`` resets at once;
  ``connection_lost`` gets ``None`` after a close, or ``ConnectionResetError`` /
  ``TimeoutError`` when the peer reset or stopped answering.

Callbacks come from the stack's poll. Under the asyncio driver that poll runs in the
loop's thread and the transport handles them directly; under the thread driver they
are handed to the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio as _asyncio
import logging
import socket as _socket
import threading
from typing import Any, Final

from joyride.embed.stack import Stack
from joyride.tcp.connection import TcpConnection
from joyride.tcp.state import TcpState

log = logging.getLogger(__name__)

READ_CHUNK: Final = 256 * 1024  # bytes handed to data_received at most per call
HIGH_WATER: Final = 64 * 1024
LOG_WRITES_AFTER_LOSS: Final = 5  # as asyncio's constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES


def connection_error(conn: TcpConnection) -> BaseException | None:
    """The exception a failed connection reports (None: it closed cleanly)."""
    if conn.error == "refused":
        return ConnectionRefusedError(111, "Connection refused")
    if conn.error == "timeout":
        return TimeoutError(110, "Connection timed out")
    if conn.error is not None:
        return ConnectionResetError(104, "Connection reset by peer")
    return None


def address(ip: bytes, port: int) -> tuple[str, int]:
    return _socket.inet_ntoa(ip), port


class JoyrideTransport(_asyncio.Transport):
    """A stream transport over one ``TcpConnection`` (see module doc)."""

    def __init__(self, stack: Stack, conn: TcpConnection, protocol: _asyncio.BaseProtocol,
                 loop: _asyncio.AbstractEventLoop, *, server: Any = None) -> None:
        super().__init__({
            "peername": address(conn.remote_ip, conn.remote_port),
            "sockname": address(conn.local_ip, conn.local_port),
            "joyride_connection": conn,
        })
        self._stack = stack
        self._conn = conn
        self._protocol: Any = protocol
        self._loop = loop
        self._server = server
        self._thread_id = threading.get_ident()
        self._pending = bytearray()  # written, not yet taken by the TCP send buffer
        self._high = HIGH_WATER
        self._low = HIGH_WATER // 4
        self._protocol_paused = False
        self._reading_paused = False
        self._closing = False  # close() called: FIN after the pending bytes
        self._eof_requested = False  # write_eof() called
        self._eof_seen = False
        self._lost = False  # connection_lost scheduled
        self._writes_after_loss = 0
        if server is not None:
            server._attach()

    # -- wiring (called by the server / connector) ------------------------------------------

    def start(self) -> None:
        """Tell the protocol, then deliver whatever already arrived."""
        self._protocol.connection_made(self)
        self._stack.watch(self._conn, self._notify)
        with self._stack.lock:
            self._on_activity()
        if self._conn.state is TcpState.CLOSED:  # reset before we watched it
            self._lose(connection_error(self._conn))

    def _notify(self) -> None:
        """Stack callback (lock held): the connection has news."""
        if threading.get_ident() == self._thread_id:
            self._on_activity()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_activity_locked)

    def _on_activity_locked(self) -> None:
        with self._stack.lock:
            self._on_activity()

    def _on_activity(self) -> None:
        if self._lost:
            return
        conn = self._conn
        if self._pending:
            self._push()
        if not self._reading_paused:
            while conn.recv_queue and not self._reading_paused and not self._lost:
                data = conn.recv(READ_CHUNK)
                if not data:
                    break
                self._stack.touch(conn)  # a window update may be due
                self._protocol.data_received(data)
        if self._lost:
            return
        if conn.eof and not conn.recv_queue and not self._eof_seen and not self._reading_paused:
            self._eof_seen = True
            keep_open = self._protocol.eof_received()
            if not keep_open:
                self.close()
        if conn.state is TcpState.CLOSED:
            self._lose(connection_error(conn))

    # -- writing -----------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data argument must be a bytes-like object, "
                            f"not {type(data).__name__!r}")
        if self._eof_requested:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data:
            return
        if self._lost or self._closing:
            self._writes_after_loss += 1
            if self._writes_after_loss >= LOG_WRITES_AFTER_LOSS:
                log.warning("write() on a closed Joyride transport (%d times)",
                            self._writes_after_loss)
            return
        with self._stack.lock:
            if self._pending:
                self._pending += data
            else:
                sent = self._conn.send(data)
                if sent < len(data):
                    self._pending += memoryview(data)[sent:]
            self._stack.touch(self._conn)
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def _push(self) -> None:
        """Move waiting bytes into the TCP send buffer (lock held)."""
        conn = self._conn
        if self._pending:
            sent = conn.send(self._pending)
            if sent:
                del self._pending[:sent]
                self._stack.touch(conn)
        if not self._pending:
            if self._eof_requested or self._closing:
                self._finish_write_side()
            if self._closing:
                self._lose(None)  # everything is in TCP's hands, as close() promised
                return
            self._maybe_resume_protocol()

    def _finish_write_side(self) -> None:
        conn = self._conn
        if self._closing:
            # Unread data turns close into a reset (RFC 2525 §2.17) in the TCP core.
            # A transport being closed discards what it did not deliver, like a kernel
            # socket closed with data in its receive queue.
            conn.close()
        else:
            conn.shutdown_write()
        self._stack.touch(conn)

    def write_eof(self) -> None:
        if self._eof_requested or self._closing:
            return
        self._eof_requested = True
        with self._stack.lock:
            if not self._pending:
                self._finish_write_side()

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return len(self._pending)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if not self._protocol_paused and len(self._pending) > self._high:
            self._protocol_paused = True
            try:
                self._protocol.pause_writing()
            except Exception as exc:
                self._report("protocol.pause_writing() failed", exc)

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and len(self._pending) <= self._low:
            self._protocol_paused = False
            try:
                self._protocol.resume_writing()
            except Exception as exc:
                self._report("protocol.resume_writing() failed", exc)

    # -- reading -----------------------------------------------------------------------------

    def is_reading(self) -> bool:
        return not self._reading_paused and not self._lost

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        if not self._reading_paused:
            return
        self._reading_paused = False
        # Deliver what waited in the TCP receive buffer (and open the window again).
        self._loop.call_soon(self._on_activity_locked)

    # -- closing -----------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def close(self) -> None:
        if self._closing or self._lost:
            return
        self._closing = True
        self._reading_paused = True  # no more data_received after close (asyncio rule)
        with self._stack.lock:
            if not self._pending:
                self._finish_write_side()
        # As the selector transports: connection_lost follows close() at once when
        # nothing is buffered; TCP finishes the FIN exchange on its own.
        if not self._pending:
            self._lose(None)

    def abort(self) -> None:
        if self._lost:
            return
        with self._stack.lock:
            self._pending.clear()
            self._conn.abort()
            self._stack.touch(self._conn)
        self._lose(None)

    def _lose(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._stack.forget(self._conn)
        if not self._loop.is_closed():
            self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            if self._server is not None:
                self._server._detach()
                self._server = None

    def _report(self, message: str, exc: BaseException) -> None:
        self._loop.call_exception_handler({
            "message": message, "exception": exc, "transport": self,
            "protocol": self._protocol})

    # -- protocol swapping -------------------------------------------------------------------

    def set_protocol(self, protocol: _asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> _asyncio.BaseProtocol:
        protocol: _asyncio.BaseProtocol = self._protocol
        return protocol

    def __repr__(self) -> str:
        peer = self.get_extra_info("peername")
        return f"<JoyrideTransport {peer[0]}:{peer[1]} {self._conn.state.value}>"
