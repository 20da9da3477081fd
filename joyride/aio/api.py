"""``asyncio``'s server and connection functions, routed through Joyride.

Each function takes the standard arguments and returns the standard objects. A port
or destination that a Joyride stack owns (``joyride.embed.select``) is served by it;
everything else goes to the running loop's own (kernel) implementation, so replacing
``import asyncio`` calls by ``joyride.asyncio`` ones changes nothing else.

``stack=`` names a stack explicitly (tests and tools that build their own).

IPv6: a server on an IPv6 host (``"::"`` or an address) and a connection to an IPv6
address are the network service's where it accelerates the port (the server
``IPV6_V6ONLY``, as asyncio makes its own); embedded stacks are IPv4, and a server
without a host listens for IPv4 only on Joyride (asyncio's own would add ``[::]``).
"""

from __future__ import annotations

import asyncio as _asyncio
import socket as _socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from joyride.aio.rings import RingServer, bell_for
from joyride.aio.server import JoyrideServer
from joyride.aio.transport import JoyrideTransport
from joyride.embed.drivers import DEFAULT_SPIN, ensure_asyncio_driver
from joyride.embed.embedded import current
from joyride.embed.endpoint import connection_error
from joyride.embed.select import connecting_stack, listening_stack
from joyride.embed.stack import Stack
from joyride.tcp.state import TcpState
from joyride.wire.addr import written_ipv6

STREAM_LIMIT = 2**16  # asyncio.streams._DEFAULT_LIMIT

ProtocolFactory = Callable[[], _asyncio.BaseProtocol]
ClientConnected = Callable[[_asyncio.StreamReader, _asyncio.StreamWriter],
                           Awaitable[None] | None]


def _spin() -> float:
    emb = current()
    return emb.spin if emb is not None else DEFAULT_SPIN


def _refuse_unsupported(kwargs: dict[str, Any]) -> None:
    if kwargs.get("ssl") is not None:
        raise ValueError("joyride.asyncio: TLS is not supported on a Joyride port yet; "
                         "serve TLS on a kernel port")
    if kwargs.get("sock") is not None:
        raise ValueError("joyride.asyncio: sock= is a kernel socket; pass host and port")
    family = kwargs.get("family", 0)
    if family not in (0, _socket.AF_INET, _socket.AF_UNSPEC):
        raise ValueError("joyride.asyncio: the embedded stack's ports are IPv4 (AF_INET); "
                         "IPv6 is served through the network service or the C data plane")


async def create_server(protocol_factory: ProtocolFactory, host: str | None = None,
                        port: int | None = None, *, stack: Stack | None = None,
                        start_serving: bool = True, **kwargs: Any) -> _asyncio.AbstractServer:
    """``loop.create_server`` for a Joyride port (else the loop's own)."""
    loop = _asyncio.get_running_loop()
    chosen = stack or (None if written_ipv6(host) else listening_stack(host, port))
    if chosen is None or port is None:
        bell = _ring_bell(loop)
        service = _service_listener(host, port, bool(kwargs.get("reuse_port")),
                                    channels=bell is not None)
        if service is not None and bell is not None and service.channels:
            # Embedded on the C data plane: this process's own data path serves the
            # port, and each connection's bytes move through shared rings.
            return RingServer(bell, service, protocol_factory, start_serving=start_serving)
        if service is not None:
            # Service mode: connections arrive as real descriptors on a unix listener
            # (joyride.service.protocol), so the loop's own machinery serves them; the
            # descriptor reports the TCP addresses (joyride.aio.service).
            return await loop.create_unix_server(protocol_factory, sock=service,
                                                 start_serving=start_serving)
        return await loop.create_server(protocol_factory, host, port,
                                        start_serving=start_serving, **kwargs)
    _refuse_unsupported(kwargs)
    ensure_asyncio_driver(chosen, loop, spin=_spin())
    return JoyrideServer(chosen, loop, protocol_factory, host or "0.0.0.0", port,
                         start_serving=start_serving)


def _service_listener(host: str | None, port: int | None, reuse_port: bool, *,
                      channels: bool = False) -> Any:
    """A listening descriptor (``joyride.aio.service.ServiceSocket``) from a live
    network service owning ``port``, or None."""
    try:
        from joyride.aio import service
    except ImportError:  # no service support in this installation
        return None
    return service.listener(host, port, reuse_port, channels=channels)


def _ring_bell(loop: _asyncio.AbstractEventLoop) -> Any:
    """The bell of this process's channels in ``loop`` (``joyride.aio.rings``), when the
    process embeds on the C data plane with channels; else None."""
    emb = current()
    if emb is None or emb.hub is None or emb.closed:
        return None
    return bell_for(emb.hub, loop)


async def _resolve(loop: _asyncio.AbstractEventLoop, host: str, port: int) -> bytes:
    """``host``'s address: 4 bytes, or 16 for an IPv6 literal (names resolve IPv4)."""
    if written_ipv6(host):
        return _socket.inet_pton(_socket.AF_INET6, host)
    try:
        return _socket.inet_aton(host)
    except OSError:
        infos = await loop.getaddrinfo(host, port, family=_socket.AF_INET,
                                       type=_socket.SOCK_STREAM)
        if not infos:
            raise OSError(f"getaddrinfo({host!r}) returned nothing") from None
        return _socket.inet_aton(str(infos[0][4][0]))


async def create_connection(protocol_factory: ProtocolFactory, host: str, port: int, *,
                            stack: Stack | None = None, **kwargs: Any
                            ) -> tuple[_asyncio.Transport, _asyncio.BaseProtocol]:
    """``loop.create_connection`` through Joyride when it routes ``host`` (else the
    loop's own)."""
    loop = _asyncio.get_running_loop()
    ip = await _resolve(loop, host, port)
    chosen = stack or (None if len(ip) == 16 else connecting_stack(ip))
    if chosen is None:
        service = await loop.run_in_executor(None, _service_connection, ip, port)
        if service is not None:
            return await loop.create_connection(protocol_factory, sock=service)
        return await loop.create_connection(protocol_factory, host, port, **kwargs)
    _refuse_unsupported(kwargs)
    ensure_asyncio_driver(chosen, loop, spin=_spin())
    waiter: _asyncio.Future[None] = loop.create_future()
    loop_thread = threading.get_ident()

    def settle() -> None:
        if waiter.done():
            return
        if conn.state is TcpState.CLOSED:
            waiter.set_exception(connection_error(conn) or ConnectionResetError())
        elif conn.state not in (TcpState.SYN_SENT, TcpState.SYN_RECEIVED):
            waiter.set_result(None)

    def on_activity() -> None:  # stack callback, lock held
        if threading.get_ident() == loop_thread:
            settle()
        else:
            loop.call_soon_threadsafe(settle)

    with chosen.lock:
        conn = chosen.connect(ip, port, on_activity)
    try:
        await waiter
    except BaseException:
        with chosen.lock:
            chosen.forget(conn)
            conn.abort()
            chosen.touch(conn)
        raise
    protocol = protocol_factory()
    transport = JoyrideTransport(chosen, conn, protocol, loop)
    transport.start()
    return transport, protocol


def _service_connection(ip: bytes, port: int) -> _socket.socket | None:
    try:
        from joyride.aio import service
    except ImportError:
        return None
    return service.connection(ip, port)


async def start_server(client_connected_cb: ClientConnected, host: str | None = None,
                       port: int | None = None, *, limit: int = STREAM_LIMIT,
                       stack: Stack | None = None, **kwargs: Any) -> _asyncio.AbstractServer:
    """``asyncio.start_server``: streams for every connection."""
    loop = _asyncio.get_running_loop()

    def factory() -> _asyncio.BaseProtocol:
        reader = _asyncio.StreamReader(limit=limit, loop=loop)
        return _asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    return await create_server(factory, host, port, stack=stack, **kwargs)


async def open_connection(host: str, port: int, *, limit: int = STREAM_LIMIT,
                          stack: Stack | None = None, **kwargs: Any
                          ) -> tuple[_asyncio.StreamReader, _asyncio.StreamWriter]:
    """``asyncio.open_connection``: a (reader, writer) pair."""
    loop = _asyncio.get_running_loop()
    reader = _asyncio.StreamReader(limit=limit, loop=loop)
    protocol = _asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await create_connection(lambda: protocol, host, port, stack=stack,
                                           **kwargs)
    writer = _asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer
