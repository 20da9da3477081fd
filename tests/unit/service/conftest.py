"""Fixtures of the service's unit tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected unix socket pair: the application's end, then the service's."""
    a, b = socket.socketpair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()
