"""Socket options that mean something to Joyride's TCP, as ``TcpConfig`` changes.

One table for every front end: ``joyride.socket`` applies it to embedded sockets, and
the network service applies what the preload shim forwards for unmodified
applications. Options not listed here are accepted and recorded by the front ends
(``getsockopt`` gives them back) but change nothing in Joyride's TCP.

On a live connection (``TcpConnection.reconfigure``) Nagle, keepalive and the send
buffer's size take effect at once; the receive buffer keeps the size its window scale
was negotiated for, as it would on Linux after the handshake.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
from collections.abc import Iterable
from typing import Any, Final

from joyride.tcp.config import TcpConfig

# Linux's floors for SO_SNDBUF/SO_RCVBUF (SOCK_MIN_SNDBUF/SOCK_MIN_RCVBUF, net/sock.h).
MIN_SNDBUF: Final = 4608
MIN_RCVBUF: Final = 2304
# Linux's bounds (include/net/tcp.h): MAX_TCP_KEEPIDLE/KEEPINTVL 32767 s, KEEPCNT 127.
MAX_KEEP_SECONDS: Final = 32767
MAX_KEEPCNT: Final = 127

Option = tuple[int, int]


def _bounded(value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))  # as Linux answers
    return value


def changes(level: int, optname: int, value: Any) -> dict[str, Any]:
    """The ``TcpConfig`` fields option ``(level, optname)`` set to ``value`` changes
    (empty: no TCP meaning). An out-of-range value raises ``OSError(EINVAL)``."""
    if not isinstance(value, int):
        return {}  # a bytes value: no TCP meaning we could honour
    key = (level, optname)
    if key == (socket.IPPROTO_TCP, socket.TCP_NODELAY):
        return {"nodelay": bool(value)}
    if key == (socket.SOL_SOCKET, socket.SO_SNDBUF):
        return {"send_buffer": max(value, MIN_SNDBUF)}
    if key == (socket.SOL_SOCKET, socket.SO_RCVBUF):
        # A fixed receive buffer, as Linux's SO_RCVBUF locks autotuning off.
        size = max(value, MIN_RCVBUF)
        return {"receive_buffer": size, "receive_buffer_max": size}
    if key == (socket.SOL_SOCKET, socket.SO_KEEPALIVE):
        return {"keepalive": bool(value)}  # RFC 9293 §3.8.4
    if key == (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE):
        return {"keepalive_idle": float(_bounded(value, 1, MAX_KEEP_SECONDS))}
    if key == (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL):
        return {"keepalive_interval": float(_bounded(value, 1, MAX_KEEP_SECONDS))}
    if key == (socket.IPPROTO_TCP, socket.TCP_KEEPCNT):
        return {"keepalive_probes": _bounded(value, 1, MAX_KEEPCNT)}
    return {}


def apply(config: TcpConfig, options: Iterable[tuple[int, int, Any]]) -> TcpConfig:
    """``config`` with ``options`` (``(level, optname, value)``, in order) applied."""
    merged: dict[str, Any] = {}
    for level, optname, value in options:
        merged.update(changes(level, optname, value))
    return dataclasses.replace(config, **merged) if merged else config
