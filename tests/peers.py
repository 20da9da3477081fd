"""Kernel-peer clients shared by the integration tests of every folder.

A kernel socket in the bed's peer namespace connects to Joyride (``peer_client``),
sends and receives at the same time (``roundtrip``: sending everything before reading
would deadlock once both directions' buffers fill, since an echo server stops reading
when it cannot write), and the tests compare ``digest``s of what was sent and what came
back. Importable as ``peers`` from any test folder: pytest puts ``tests/`` (the
folder of the top ``conftest.py``) on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from joyride.testbed import Testbed

ROUNDTRIP_TIMEOUT = 60.0  # seconds the reader may take after the last byte is sent
T = TypeVar("T")


def when_listening(connect: Callable[[], T], timeout: float = 10.0) -> T:
    """``connect()`` again while it is refused: a server started just now may not
    have bound yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect()
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def peer_client(bed: Testbed, port: int, *, timeout: float = 20.0, ipv6: bool = False
                ) -> Iterator[socket.socket]:
    """A kernel TCP connection from the peer namespace to ``bed.joy.ip:port`` (its IPv6
    address with ``ipv6``), closed on exit (the socket is created inside the namespace;
    using it needs no setns)."""
    host = bed.joy.ip6 if ipv6 else bed.joy.ip
    assert host is not None, "a test bed made without ipv6=True"
    with bed.peer.inside():
        sock = socket.create_connection((host, port), timeout=timeout)
    with sock:
        yield sock


def roundtrip(sock: socket.socket, payload: bytes, *,
              timeout: float = ROUNDTRIP_TIMEOUT) -> bytes:
    """Send ``payload`` while a thread reads up to as many bytes back (or EOF)."""
    received = bytearray()

    def reader() -> None:
        while len(received) < len(payload):
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            received.extend(chunk)

    thread = threading.Thread(target=reader)
    thread.start()
    sock.sendall(payload)
    thread.join(timeout)
    return bytes(received)


def read_to_eof(sock: socket.socket, *, send: bytes = b"", delay: float = 0.0) -> bytes:
    """Send ``send`` (then shut down writing, if any), wait ``delay`` seconds, then
    read until the peer's EOF."""
    if send:
        sock.sendall(send)
        sock.shutdown(socket.SHUT_WR)
    if delay:
        time.sleep(delay)
    got = bytearray()
    while chunk := sock.recv(1 << 16):
        got += chunk
    return bytes(got)


def kernel_echo(bed: Testbed, payload: bytes, *, port: int, timeout: float = 60.0
                ) -> bytes:
    """Send ``payload`` from a kernel socket in the peer namespace; return the echo."""
    with peer_client(bed, port, timeout=timeout) as sock:
        return roundtrip(sock, payload, timeout=timeout)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def random_payload(size: int) -> bytes:
    return os.urandom(size)
