"""The Python servers of the benchmark: one process, one asyncio loop, three ports.

* ``--rr PORT``: sockperf ping-pong peer. sockperf messages start with a 14-byte
  header (sequence u64, flags u16, length u32, network order); the server answers
  each whole message with the client bit of the flags cleared, as ``sockperf server``
  does, so the unmodified ``sockperf ping-pong`` client can measure it.
* ``--http PORT``: keep-alive HTTP/1.1 answering every request with ``BODY`` (the same
  bytes nginx serves in the benchmark), closing when asked (``Connection: close``).
* ``--sink PORT``: reads and discards until EOF, then closes (throughput).
* ``--bulk PORT``: the transfers of the impairment benchmark (``joyride.bench.impair``):
  ``b"D"`` and a length (8 bytes, network order) is answered with that many bytes of
  ``bulk_bytes`` and a close; ``b"U"`` and a length is followed by that many bytes
  from the client, answered with their SHA-256 and a close.

The same code runs on the kernel (stdlib ``asyncio``), under ``joyride run`` (the shim
moves its listeners to the network service) and embedded (``--embed IFACE``:
``joyride.embed`` + ``joyride.asyncio``), so a comparison changes the stack only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import random
import signal
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from typing import Any

BODY = b"joyride-bench-0123456789abcdef\n" * 33  # 1023 bytes
SOCKPERF_HEADER = struct.Struct("!QHI")
SOCKPERF_CLIENT_FLAG = 0x1
MAX_SOCKPERF_MESSAGE = 65536 + SOCKPERF_HEADER.size

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def sockperf_replies(buf: bytearray) -> bytes | None:
    """Consume the whole messages at the front of ``buf``; return their replies.

    Returns None when the stream is not sockperf's (a length shorter than the header
    or absurdly long): the caller closes that connection.
    """
    out = bytearray()
    while len(buf) >= SOCKPERF_HEADER.size:
        _seq, flags, length = SOCKPERF_HEADER.unpack_from(buf)
        if length < SOCKPERF_HEADER.size or length > MAX_SOCKPERF_MESSAGE:
            return None
        if len(buf) < length:
            break
        msg = buf[:length]
        del buf[:length]
        struct.pack_into("!H", msg, 8, flags & ~SOCKPERF_CLIENT_FLAG)
        out += msg
    return bytes(out)


async def rr_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    buf = bytearray()
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(1 << 16):
            buf += data
            reply = sockperf_replies(buf)
            if reply is None:
                break
            if reply:
                writer.write(reply)
                await writer.drain()
    writer.close()


def http_response(close: bool) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n"
            % (len(BODY), b"Connection: close\r\n" if close else b"")) + BODY


async def http_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError,
                             asyncio.LimitOverrunError):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            close = b"connection: close" in head.lower()
            writer.write(http_response(close))
            await writer.drain()
            if close:
                break
    writer.close()


async def sink_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while await reader.read(1 << 18):
            pass
    writer.close()


#: The largest transfer ``--bulk`` takes.
MAX_BULK = 1 << 30


@functools.lru_cache(maxsize=2)
def bulk_bytes(n: int) -> bytes:
    """``n`` bytes the client can check by hash (the same for every server)."""
    return random.Random(n).randbytes(n)


async def _read_exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n and (data := await reader.read(n - len(buf))):
        buf += data
    return bytes(buf)


async def bulk_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        head = await _read_exactly(reader, 9)
        n = int.from_bytes(head[1:], "big") if len(head) == 9 else MAX_BULK + 1
        if head[:1] == b"D" and n <= MAX_BULK:
            writer.write(bulk_bytes(n))
            await writer.drain()
        elif head[:1] == b"U" and n <= MAX_BULK:
            digest, left = hashlib.sha256(), n
            while left and (data := await reader.read(min(left, 1 << 18))):
                digest.update(data)
                left -= len(data)
            writer.write(digest.digest())
            await writer.drain()
    writer.close()


async def serve(ports: dict[str, int], start_server: Any, host: str | None,
                cc: str | None = None) -> None:
    handlers: dict[str, Handler] = {"rr": rr_handler, "http": http_handler,
                                    "sink": sink_handler, "bulk": bulk_handler}
    servers = [await start_server(handlers[kind], host, port)
               for kind, port in ports.items()]
    if cc is not None:  # accepted connections inherit the listener's controller
        for server in servers:
            for sock in server.sockets:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rr", type=int)
    ap.add_argument("--http", type=int)
    ap.add_argument("--sink", type=int)
    ap.add_argument("--bulk", type=int)
    ap.add_argument("--embed", metavar="IFACE", help="serve through joyride.embed on IFACE")
    ap.add_argument("--cc", help="kernel mode: the congestion controller (TCP_CONGESTION)")
    args = ap.parse_args(argv)
    ports = {k: v for k, v in (("rr", args.rr), ("http", args.http), ("sink", args.sink),
                               ("bulk", args.bulk))
             if v is not None}
    if not ports:
        ap.error("give at least one of --rr, --http, --sink, --bulk")
    if args.embed is None:
        asyncio.run(serve(ports, asyncio.start_server, "0.0.0.0", args.cc))
        return 0
    import joyride.asyncio as jasyncio
    from joyride.embed import embed

    # embed's close (resets, detach, state directory) must run on SIGTERM too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with embed(args.embed, list(ports.values())):
        asyncio.run(serve(ports, jasyncio.start_server, None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
