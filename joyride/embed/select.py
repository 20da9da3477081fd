"""Which stack serves a port or a destination: the one place the front ends ask.

A listening port belongs to the embedded stack when it is one of the ports it steers
(and the address is the wildcard or one of the interface's); an outgoing connection
uses it when the kernel routes the destination out of the embedded interface. Anything
else stays with the kernel, so ``joyride.socket`` and ``joyride.asyncio`` are drop-ins
that accelerate what Joyride owns and leave the rest alone.
"""

from __future__ import annotations

import contextlib
import socket as _socket
from collections.abc import Iterator

from joyride.embed.embedded import current
from joyride.embed.stack import Stack

WILDCARDS = frozenset({"", "0.0.0.0"})

# Stacks set by ``serving`` (tests, tools that build their own stack): consulted first.
_listen_override: Stack | None = None
_connect_override: Stack | None = None


@contextlib.contextmanager
def serving(listen: Stack | None = None, connect: Stack | None = None) -> Iterator[None]:
    """Within the body, ``listen`` serves its ``ports`` and ``connect`` every outgoing
    connection (in place of the embedded instance)."""
    global _listen_override, _connect_override
    saved = _listen_override, _connect_override
    _listen_override, _connect_override = listen, connect
    try:
        yield
    finally:
        _listen_override, _connect_override = saved


def listening_stack(host: str | None, port: int | None) -> Stack | None:
    if _listen_override is not None and port in _listen_override.ports:
        return _listen_override
    emb = current()
    if emb is None or emb.closed or port is None or port not in emb.ports:
        return None
    if host is None or host in WILDCARDS:
        return emb.stack
    try:
        packed = _socket.inet_aton(host)
    except OSError:
        return None  # a name or IPv6: the kernel serves it
    return emb.stack if packed in emb.stack.engine.local_addresses else None


def connecting_stack(ip: bytes) -> Stack | None:
    if _connect_override is not None:
        return _connect_override
    emb = current()
    if emb is None or emb.closed or not emb.routes_to(ip):
        return None
    return emb.stack
