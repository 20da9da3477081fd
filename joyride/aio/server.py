"""``asyncio.AbstractServer`` for a listening port of an in-process Joyride stack."""

from __future__ import annotations

import asyncio as _asyncio
import socket as _socket
from collections.abc import Callable
from typing import Any

from joyride.aio.transport import JoyrideTransport
from joyride.embed.drivers import AsyncioDriver
from joyride.embed.stack import Stack
from joyride.tcp.listener import Listener


class ListeningSocket:
    """What ``Server.sockets`` shows: the address, as ``getsockname`` (no kernel fd)."""

    family = _socket.AF_INET
    type = _socket.SOCK_STREAM
    proto = _socket.IPPROTO_TCP

    def __init__(self, host: str, port: int) -> None:
        self._addr = (host, port)

    def getsockname(self) -> tuple[str, int]:
        return self._addr

    def fileno(self) -> int:
        return -1

    def __repr__(self) -> str:
        return f"<joyride listening socket {self._addr[0]}:{self._addr[1]}>"


class ServerBase(_asyncio.AbstractServer):
    """What every Joyride ``asyncio`` server shares: the connections it accepted (each
    transport attaches and detaches), ``close``/``wait_closed``/``serve_forever`` and the
    context manager. A subclass starts and stops the listening (``_start``,
    ``_stop_listening``) and says what it listens on (``is_serving``, ``sockets``)."""

    def __init__(self, loop: _asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._active = 0  # connections not yet lost
        self._waiters: list[_asyncio.Future[None]] = []
        self._serving_forever: _asyncio.Future[None] | None = None
        self._closed = False
        self.accepted = 0

    def _start(self) -> None:
        raise NotImplementedError

    def _stop_listening(self) -> None:
        raise NotImplementedError

    # -- bookkeeping used by transports --------------------------------------------------

    def _attach(self) -> None:
        self._active += 1

    def _detach(self) -> None:
        self._active -= 1
        if self._active == 0 and self._closed:
            self._wake()

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    # -- AbstractServer ------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_listening()
        if self._serving_forever is not None and not self._serving_forever.done():
            self._serving_forever.cancel()
        self._serving_forever = None
        if self._active == 0:
            self._wake()

    def get_loop(self) -> _asyncio.AbstractEventLoop:
        return self._loop

    async def start_serving(self) -> None:
        self._start()

    async def serve_forever(self) -> None:
        if self._serving_forever is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._closed:
            raise RuntimeError(f"server {self!r} is closed")
        self._start()
        self._serving_forever = self._loop.create_future()
        try:
            await self._serving_forever
        except _asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever = None

    async def wait_closed(self) -> None:
        """Return once the server is closed (listening stopped); like Python 3.12+,
        also wait for the connections it accepted to be lost."""
        if self._closed and self._active == 0:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter

    async def __aenter__(self) -> ServerBase:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


class JoyrideServer(ServerBase):
    """Accepts connections on ``port`` and gives each a ``JoyrideTransport``."""

    def __init__(self, stack: Stack, loop: _asyncio.AbstractEventLoop,
                 protocol_factory: Callable[[], _asyncio.BaseProtocol], host: str, port: int,
                 *, start_serving: bool = True) -> None:
        super().__init__(loop)
        self._stack = stack
        self._factory = protocol_factory
        self._host = host
        self._port = port
        self._listener: Listener | None = None
        if start_serving:
            self._start()

    def _start(self) -> None:
        if self._listener is None and not self._closed:
            self._listener = self._stack.listen(self._port, self._on_listener)

    def _stop_listening(self) -> None:
        if self._listener is not None:
            self._stack.unlisten(self._listener)
            self._listener = None

    def _on_listener(self) -> None:
        """Stack callback (lock held): connections may wait in the accept queue."""
        listener = self._listener
        if listener is None:
            return
        if self._loop.is_closed():
            return
        while (conn := self._stack.accept(listener)) is not None:
            self.accepted += 1
            try:
                protocol = self._factory()
            except Exception as exc:
                conn.abort()
                self._stack.touch(conn)
                self._loop.call_exception_handler({
                    "message": "protocol factory failed", "exception": exc})
                continue
            transport = JoyrideTransport(self._stack, conn, protocol, self._loop, server=self)
            if self._in_loop_thread():
                transport.start()
            else:
                self._loop.call_soon_threadsafe(transport.start)

    def _in_loop_thread(self) -> bool:
        driver = self._stack.driver
        return isinstance(driver, AsyncioDriver) and driver.loop is self._loop \
            and driver.alive

    def is_serving(self) -> bool:
        return self._listener is not None

    @property
    def sockets(self) -> tuple[Any, ...]:
        if self._listener is None:
            return ()
        return (ListeningSocket(self._host, self._port),)

    def __repr__(self) -> str:
        return f"<JoyrideServer {self._host}:{self._port} serving={self.is_serving()}>"
