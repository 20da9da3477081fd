"""Which stack serves a port or a destination: the one place the front ends ask.

A listening port belongs to the embedded stack when it is one of the ports it steers
(and the address is the wildcard or one of the interface's); an outgoing connection
uses it when the kernel routes the destination out of the embedded interface. Anything
else stays with the kernel, so ``joyride.socket`` and ``joyride.asyncio`` are drop-ins
that accelerate what Joyride owns and leave the rest alone.
"""

from __future__ import annotations

import socket as _socket

from joyride.embed.embedded import current
from joyride.embed.stack import Stack

WILDCARDS = frozenset({"", "0.0.0.0"})


def listening_stack(host: str | None, port: int | None) -> Stack | None:
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
    emb = current()
    if emb is None or emb.closed or not emb.routes_to(ip):
        return None
    return emb.stack
