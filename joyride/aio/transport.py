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

The state and the per-request paths (delivery, ``write``) live in a compiled
``StreamCore`` (``joyride.aio.stream``, which says why); this class is the asyncio
face of it.
"""

from __future__ import annotations

import asyncio as _asyncio
from typing import Any

from joyride.aio.stream import HIGH_WATER, StreamCore
from joyride.embed.endpoint import address, connection_error
from joyride.embed.stack import Stack
from joyride.tcp.connection import TcpConnection
from joyride.tcp.state import TcpState

__all__ = ["JoyrideTransport"]


def write_buffer_limits(high: int | None, low: int | None) -> tuple[int, int]:
    """``set_write_buffer_limits``' arguments as asyncio's transports take them: (high,
    low), a missing one derived from the other (or the defaults)."""
    if high is None:
        high = HIGH_WATER if low is None else 4 * low
    if low is None:
        low = high // 4
    if not high >= low >= 0:
        raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
    return high, low


class JoyrideTransport(_asyncio.Transport):
    """A stream transport over one ``TcpConnection`` (see module doc)."""

    def __init__(self, stack: Stack, conn: TcpConnection, protocol: _asyncio.BaseProtocol,
                 loop: _asyncio.AbstractEventLoop, *, server: Any = None) -> None:
        super().__init__({
            "peername": address(conn.remote_ip, conn.remote_port),
            "sockname": address(conn.local_ip, conn.local_port),
            "joyride_connection": conn,
        })
        self._core = StreamCore(self, stack, conn, protocol, loop, server)
        if server is not None:
            server._attach()

    # -- wiring (called by the server / connector) ------------------------------------------

    def start(self) -> None:
        """Tell the protocol, then deliver whatever already arrived."""
        core = self._core
        core.protocol.connection_made(self)
        core.stack.watch(core.conn, core.notify)
        core.on_activity_locked()
        if core.conn.state is TcpState.CLOSED:  # reset before we watched it
            core.lose(connection_error(core.conn))

    # -- writing -----------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._core.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self._core.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        core = self._core
        if core.eof_requested or core.closing:
            return
        core.eof_requested = True
        with core.stack.lock:
            if not core.pending:
                core.finish_write_side()

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return len(self._core.pending)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._core.low, self._core.high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._core.high, self._core.low = write_buffer_limits(high, low)
        self._core.maybe_pause_protocol()

    # -- reading -----------------------------------------------------------------------------

    def is_reading(self) -> bool:
        return not self._core.reading_paused and not self._core.lost

    def pause_reading(self) -> None:
        self._core.reading_paused = True

    def resume_reading(self) -> None:
        core = self._core
        if not core.reading_paused:
            return
        core.reading_paused = False
        # Deliver what waited in the TCP receive buffer (and open the window again).
        core.loop.call_soon(core.on_activity_locked)

    # -- closing -----------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._core.closing or self._core.lost

    def close(self) -> None:
        core = self._core
        if core.closing or core.lost:
            return
        core.closing = True
        core.reading_paused = True  # no more data_received after close (asyncio rule)
        with core.stack.lock:
            if not core.pending:
                core.finish_write_side()
        # As the selector transports: connection_lost follows close() at once when
        # nothing is buffered; TCP finishes the FIN exchange on its own.
        if not core.pending:
            core.lose(None)

    def abort(self) -> None:
        core = self._core
        if core.lost:
            return
        with core.stack.lock:
            core.pending.clear()
            core.conn.abort()
            core.stack.touch(core.conn)
        core.lose(None)

    # -- protocol swapping -------------------------------------------------------------------

    def set_protocol(self, protocol: _asyncio.BaseProtocol) -> None:
        self._core.protocol = protocol

    def get_protocol(self) -> _asyncio.BaseProtocol:
        protocol: _asyncio.BaseProtocol = self._core.protocol
        return protocol

    def __repr__(self) -> str:
        peer = self.get_extra_info("peername")
        return f"<JoyrideTransport {peer[0]}:{peer[1]} {self._core.conn.state.value}>"
