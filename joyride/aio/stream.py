"""The per-request half of ``JoyrideTransport``: its state, data delivery and writes.

``JoyrideTransport`` subclasses ``asyncio.Transport``, so it stays interpreted: mypyc
compiles a class with a non-native base into one the cycle collector cannot see, and
every closed connection's transport/protocol cycle leaked (see setup.py). What runs
per request lives here instead, in a native class that is compiled and collected
like any other: the stack's callback (``notify``), which hands received bytes to the
protocol, and ``write``. The transport delegates to it and keeps the rest of the
asyncio API; the behaviour is described in ``joyride.aio.transport``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Final

from joyride.embed.endpoint import connection_error
from joyride.embed.stack import Stack
from joyride.tcp.connection import TcpConnection
from joyride.tcp.state import TcpState

log = logging.getLogger("joyride.aio.transport")

READ_CHUNK: Final = 256 * 1024  # bytes handed to data_received at most per call
HIGH_WATER: Final = 64 * 1024
LOG_WRITES_AFTER_LOSS: Final = 5  # as asyncio's constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES


class StreamCore:
    """One transport's state; ``transport`` is the asyncio object users hold (it is
    what exception-handler contexts name)."""

    def __init__(self, transport: Any, stack: Stack, conn: TcpConnection, protocol: Any,
                 loop: Any, server: Any) -> None:
        self.transport = transport
        self.stack = stack
        self.conn = conn
        self.protocol = protocol
        self.loop = loop
        self.server = server
        self.thread_id = threading.get_ident()
        self.pending = bytearray()  # written, not yet taken by the TCP send buffer
        self.high = HIGH_WATER
        self.low = HIGH_WATER // 4
        self.protocol_paused = False
        self.reading_paused = False
        self.closing = False  # close() called: FIN after the pending bytes
        self.eof_requested = False  # write_eof() called
        self.eof_seen = False
        self.lost = False  # connection_lost scheduled
        self.writes_after_loss = 0

    # -- delivery ------------------------------------------------------------------------------

    def notify(self) -> None:
        """Stack callback (lock held): the connection has news."""
        if threading.get_ident() == self.thread_id:
            self.on_activity()
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.on_activity_locked)

    def on_activity_locked(self) -> None:
        with self.stack.lock:
            self.on_activity()

    def on_activity(self) -> None:
        if self.lost:
            return
        conn = self.conn
        if self.pending:
            self.push()
        while conn.recv_queue and not self.reading_paused and not self.lost:
            data = conn.recv(READ_CHUNK)
            if not data:
                break
            self.stack.touch_read(conn)  # a window update may be due
            self.protocol.data_received(data)
        if self.lost:
            return
        if conn.eof and not conn.recv_queue and not self.eof_seen and not self.reading_paused:
            self.eof_seen = True
            keep_open = self.protocol.eof_received()
            if not keep_open:
                self.transport.close()
        if conn.state is TcpState.CLOSED:
            self.lose(connection_error(conn))

    # -- writing -------------------------------------------------------------------------------

    def write(self, data: Any) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, "
                            f"not {type(data).__name__!r}")
        if self.eof_requested:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data:
            return
        if self.lost or self.closing:
            self.writes_after_loss += 1
            if self.writes_after_loss >= LOG_WRITES_AFTER_LOSS:
                log.warning("write() on a closed Joyride transport (%d times)",
                            self.writes_after_loss)
            return
        stack, conn = self.stack, self.conn
        with stack.lock:
            if self.pending:
                self.pending += data
            else:
                sent = conn.send(data)
                if sent < len(data):
                    self.pending += memoryview(data)[sent:]
            stack.touch(conn)
        self.maybe_pause_protocol()

    def push(self) -> None:
        """Move waiting bytes into the TCP send buffer (lock held)."""
        conn = self.conn
        if self.pending:
            sent = conn.send(self.pending)
            if sent:
                del self.pending[:sent]
                self.stack.touch(conn)
        if not self.pending:
            if self.eof_requested or self.closing:
                self.finish_write_side()
            if self.closing:
                self.lose(None)  # everything is in TCP's hands, as close() promised
                return
            self.maybe_resume_protocol()

    def finish_write_side(self) -> None:
        conn = self.conn
        if self.closing:
            # Unread data turns close into a reset (RFC 2525 §2.17) in the TCP core.
            # A transport being closed discards what it did not deliver, like a kernel
            # socket closed with data in its receive queue.
            conn.close()
        else:
            conn.shutdown_write()
        self.stack.touch(conn)

    def maybe_pause_protocol(self) -> None:
        if not self.protocol_paused and len(self.pending) > self.high:
            self.protocol_paused = True
            try:
                self.protocol.pause_writing()
            except Exception as exc:
                self.report("protocol.pause_writing() failed", exc)

    def maybe_resume_protocol(self) -> None:
        if self.protocol_paused and len(self.pending) <= self.low:
            self.protocol_paused = False
            try:
                self.protocol.resume_writing()
            except Exception as exc:
                self.report("protocol.resume_writing() failed", exc)

    # -- the end -------------------------------------------------------------------------------

    def lose(self, exc: BaseException | None) -> None:
        if self.lost:
            return
        self.lost = True
        self.closing = True
        self.stack.forget(self.conn)
        if not self.loop.is_closed():
            self.loop.call_soon(self.call_connection_lost, exc)

    def call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            self.protocol.connection_lost(exc)
        finally:
            if self.server is not None:
                self.server._detach()
                self.server = None

    def report(self, message: str, exc: BaseException) -> None:
        self.loop.call_exception_handler({
            "message": message, "exception": exc, "transport": self.transport,
            "protocol": self.protocol})
