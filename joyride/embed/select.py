"""Which stack serves a port or a destination: the one place the front ends ask.

A listening port belongs to the embedded stack when it is one of the ports it steers
(and the address is the wildcard or one of the interface's); an outgoing connection
uses it when the kernel routes the destination out of the embedded interface. Anything
else stays with the kernel, so ``joyride.socket`` and ``joyride.asyncio`` are drop-ins
that accelerate what Joyride owns and leave the rest alone.

On the Python data plane the answer is a ``Stack``; on the C data plane the embedded
instance serves through its in-process network service, so the stack functions say
None and the front ends take the service's descriptors (``listens_in_process`` and
``connects_in_process`` tell them the descriptor is this process's own). IPv6 is the C
data plane's only: the Python data plane's stacks are IPv4, so the front ends ask the
stack functions about IPv4 alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from joyride.embed.embedded import Embedded, current
from joyride.embed.stack import Stack
from joyride.wire import addr

WILDCARDS = frozenset({"", "0.0.0.0", "::"})

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


def _embedded_listener(host: str | None, port: int | None) -> Embedded | None:
    """The embedded instance that serves ``port`` on ``host``, if any."""
    emb = current()
    if emb is None or not emb.serving() or port is None or port not in emb.ports:
        return None
    if host is None or host in WILDCARDS:
        return emb
    try:
        packed = addr.packed(host)
    except OSError:
        return None  # a name: the kernel serves it
    return emb if packed in emb.local_addresses() else None


def _embedded_route(ip: bytes) -> Embedded | None:
    """The embedded instance whose interface the kernel routes ``ip`` out of, if any."""
    emb = current()
    if emb is None or not emb.serving() or not emb.routes_to(ip):
        return None
    return emb


def listening_stack(host: str | None, port: int | None) -> Stack | None:
    """The Python data plane's stack that serves ``port`` on ``host`` (on the C data
    plane the in-process service does: ``served_in_process``)."""
    if _listen_override is not None and port in _listen_override.ports:
        return _listen_override
    emb = _embedded_listener(host, port)
    return None if emb is None else emb.stack


def connecting_stack(ip: bytes) -> Stack | None:
    if _connect_override is not None:
        return _connect_override
    emb = _embedded_route(ip)
    return None if emb is None else emb.stack


def listens_in_process(host: str | None, port: int | None) -> bool:
    """The embedded instance serves this listener on the C data plane: through its
    in-process service, whose descriptors the service backends take."""
    emb = _embedded_listener(host, port)
    return emb is not None and emb.service is not None


def connects_in_process(ip: bytes) -> bool:
    emb = _embedded_route(ip)
    return emb is not None and emb.service is not None
