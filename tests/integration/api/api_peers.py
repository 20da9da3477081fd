"""Helpers for the API integration tests: small asyncio servers and peer commands (the
kernel-socket clients are the shared ``peers``)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socketserver
import threading
from collections.abc import Iterator

from joyride.testbed import Testbed

PORT = 8080
HTTP_BODY = hashlib.sha256(b"joyride").hexdigest().encode() * 64  # 4 KiB, checkable


async def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def http_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A minimal keep-alive HTTP/1.1 server: every GET gets HTTP_BODY."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            close = b"connection: close" in head.lower()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: %d\r\n%s\r\n" % (
                             len(HTTP_BODY), b"Connection: close\r\n" if close else b"")
                         + HTTP_BODY)
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()


async def run_in_peer(bed: Testbed, *args: str, timeout: float = 60) -> tuple[int, bytes]:
    """Run a command in the peer namespace without blocking the event loop."""
    proc = await asyncio.create_subprocess_exec(
        *bed.peer.cmd(*args), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out


class EchoHandler(socketserver.BaseRequestHandler):
    """The stdlib ``socketserver`` echo the ``joyride.socket`` tests serve."""

    def handle(self) -> None:
        while data := self.request.recv(1 << 16):
            self.request.sendall(data)


@contextlib.contextmanager
def serve_in_thread(server: socketserver.BaseServer) -> Iterator[None]:
    """Run ``server.serve_forever`` in a thread for the block; shut down after."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
