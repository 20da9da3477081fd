"""What a Python endpoint reports about an embedded connection, for both APIs.

``joyride.socket`` and ``joyride.aio`` (the asyncio transport) hand out the same two
things about a ``TcpConnection``: its addresses as the standard library spells them,
and the exception a call on it raises once it failed (``ConnectionFailure``'s own,
so every front end agrees with the service's errno).
"""

from __future__ import annotations

import socket as _socket

from joyride.tcp.connection import TcpConnection


def address(ip: bytes, port: int) -> tuple[str, int]:
    """``(host, port)`` as ``getsockname``/``getpeername`` return them."""
    return _socket.inet_ntoa(ip), port


def connection_error(conn: TcpConnection) -> OSError | None:
    """The exception a failed connection reports (None: it closed cleanly)."""
    return None if conn.error is None else conn.error.exception()
