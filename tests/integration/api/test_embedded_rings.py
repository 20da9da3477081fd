"""Embedded mode on the C data plane: joyride.asyncio's servers over shared-memory
channels (``joyride.aio.rings``, ``joyride/dataplane/hub.c``), against kernel peers.

Each test embeds in this process, serves with ``joyride.asyncio`` and drives the server
from kernel sockets in the peer namespace; bytes are checked by hash. What each checks:
the channel is really used (the transport's mode, the data plane's claim counters, no
stream bytes); both directions, half-closes, a server that speaks first, flow control
both ways (a server that does not read, a client that does not read); more connections
than slots (the rest are streams, and slots are reused after release); a client that
resets mid-transfer; the opt-out.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from api_peers import PORT, echo_handler
from peers import digest, kernel_echo, peer_client, random_payload, read_to_eof

import joyride.asyncio as jasyncio
from joyride.aio.rings import RingServer, RingTransport
from joyride.dataplane import hub as hubmod
from joyride.dataplane import plane as dataplane
from joyride.embed import current, embed
from joyride.testbed import Testbed

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not dataplane.available(), reason="the C data plane is not built"),
]

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def serve(bed: Testbed, handler: Handler, client: Callable[[Testbed], Awaitable[Any]]
          ) -> tuple[Any, dict[str, int], list[str]]:
    """Embed on the bed, serve ``handler`` on PORT, run ``client``; return its result,
    the data plane's counters and the modes of the transports the handler saw."""
    transports: list[RingTransport] = []

    async def recording(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        assert isinstance(transport, RingTransport)
        transports.append(transport)
        await handler(reader, writer)

    async def main() -> tuple[Any, dict[str, int]]:
        server = await jasyncio.start_server(recording, None, PORT)
        assert isinstance(server, RingServer)
        try:
            result = await client(bed)
            await asyncio.sleep(0.2)  # the handlers' last steps
            emb = current()
            assert emb is not None
            return result, emb.counters()
        finally:
            server.close()

    with bed.joy.inside(), embed(bed.joy.ifname, [PORT]):
        result, counters = asyncio.run(main())
    # The mode each connection ended in (a claim's verdict may come after the handler).
    return result, counters, [t._mode for t in transports]


def test_echo_both_ways_through_the_rings(testbed: Testbed) -> None:
    async def client(bed: Testbed) -> list[tuple[str, str]]:
        sizes = [1, 1000, 300_000, 4 << 20]

        def one(size: int) -> tuple[str, str]:
            payload = random_payload(size)
            return digest(payload), digest(kernel_echo(bed, payload, port=PORT))

        return list(await asyncio.gather(*(asyncio.to_thread(one, n) for n in sizes)))

    results, counters, modes = serve(testbed, echo_handler, client)
    assert all(sent == echoed for sent, echoed in results)
    assert modes == ["ring"] * 4
    assert counters["dataplane_chan_ring"] >= 4, counters


def test_half_close_then_answer(testbed: Testbed) -> None:
    """The peer sends and shuts down its side; the server reads to EOF, answers with the
    digest and closes: the answer and the EOF both reach the peer."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # to EOF
        writer.write(hashlib.sha256(data).digest())
        await writer.drain()
        writer.close()

    payload = random_payload(2 << 20)

    async def client(bed: Testbed) -> bytes:
        def run() -> bytes:
            with peer_client(bed, PORT) as sock:
                return read_to_eof(sock, send=payload)

        return await asyncio.to_thread(run)

    answer, _, modes = serve(testbed, handler, client)
    assert answer == hashlib.sha256(payload).digest()
    assert modes == ["ring"]


def test_server_speaks_first(testbed: Testbed) -> None:
    """A write before the claim's verdict waits for it; a close right after still sends
    everything."""
    banner = random_payload(700_000)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(banner)
        writer.close()

    async def client(bed: Testbed) -> bytes:
        def run() -> bytes:
            with peer_client(bed, PORT) as sock:
                return read_to_eof(sock)

        return await asyncio.to_thread(run)

    got, _, modes = serve(testbed, handler, client)
    assert digest(got) == digest(banner)
    assert modes == ["ring"]


def test_a_server_that_waits_before_reading(testbed: Testbed) -> None:
    """Flow control toward the server: it reads nothing for a while, so the receive ring
    fills and TCP's window closes; then it reads everything, in order."""
    payload = random_payload(6 << 20)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(1.0)
        digest_ = hashlib.sha256()
        while data := await reader.read(1 << 16):
            digest_.update(data)
        writer.write(digest_.digest())
        await writer.drain()
        writer.close()

    async def client(bed: Testbed) -> bytes:
        def run() -> bytes:
            with peer_client(bed, PORT) as sock:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                return sock.recv(64)

        return await asyncio.to_thread(run)

    answer, _, _ = serve(testbed, handler, client)
    assert answer == hashlib.sha256(payload).digest()


def test_a_client_that_waits_before_reading(testbed: Testbed) -> None:
    """Flow control toward the peer: the transmit ring fills, the transport buffers and
    pauses the writer (``drain``), and everything arrives once the client reads."""
    payload = random_payload(8 << 20)
    paused: list[int] = []
    sndbuf: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for i in range(0, len(payload), 1 << 20):
            writer.write(payload[i:i + (1 << 20)])
            paused.append(writer.transport.get_write_buffer_size())
            await writer.drain()
        sock = writer.transport.get_extra_info("socket")
        sndbuf.append(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
        writer.close()

    async def client(bed: Testbed) -> bytes:
        def run() -> bytes:
            with peer_client(bed, PORT) as sock:
                return read_to_eof(sock, delay=1.0)

        return await asyncio.to_thread(run)

    got, _, modes = serve(testbed, handler, client)
    assert digest(got) == digest(payload)
    assert modes == ["ring"]
    assert max(paused) > 0  # the ring and the socket were full: the transport buffered
    # The kernel's minimum on a ring-mode socket (chan.h's writable rule): with the
    # default, each fill took hundreds of sends, and the data plane's drains kept the
    # writer filling for up to a second at a time (this transfer took 4-12 s).
    assert sndbuf and sndbuf[0] <= 8192, sndbuf


def test_more_connections_than_slots(testbed: Testbed, monkeypatch: pytest.MonkeyPatch
                                     ) -> None:
    """With 4 slots, 10 concurrent connections: 4 rings, 6 streams, all echoed; then 40
    more one after another, each in a slot the service released."""
    monkeypatch.setattr(hubmod, "SLOTS", 4)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await echo_handler(reader, writer)

    async def client(bed: Testbed) -> tuple[list[bool], list[bool]]:
        def concurrent() -> list[bool]:
            with contextlib.ExitStack() as stack:
                socks = [stack.enter_context(peer_client(bed, PORT)) for _ in range(10)]
                ok = []
                for i, sock in enumerate(socks):
                    payload = b"%02d" % i * 5000
                    sock.sendall(payload)
                    got = bytearray()
                    while len(got) < len(payload):
                        got += sock.recv(1 << 16)
                    ok.append(bytes(got) == payload)
                return ok

        first = await asyncio.to_thread(concurrent)
        await asyncio.sleep(0.3)

        def serial() -> list[bool]:
            ok = []
            for i in range(40):
                payload = struct.pack("!I", i) * 1000
                ok.append(kernel_echo(bed, payload, port=PORT) == payload)
            return ok

        return first, await asyncio.to_thread(serial)

    (first, then), _, modes = serve(testbed, handler, client)
    assert all(first) and all(then)
    assert modes[:10].count("ring") == 4 and modes[:10].count("stream") == 6, modes[:10]
    assert modes[10:].count("ring") >= 36, modes[10:]  # a slot may still be releasing


def test_a_client_that_resets_mid_transfer(testbed: Testbed) -> None:
    """RST in the middle of a download: the server's transport is lost with an error or
    EOF, the slot comes back, and the next connection works."""
    lost: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.read(1)
        if first == b"D":
            try:
                for _ in range(200):
                    writer.write(bytes(1 << 16))
                    await writer.drain()
            except ConnectionError as exc:
                lost.append(type(exc).__name__)
            writer.close()
            return
        writer.write(first)
        await echo_handler(reader, writer)

    async def client(bed: Testbed) -> tuple[bytes, int]:
        def run() -> bytes:
            with peer_client(bed, PORT) as sock:
                sock.sendall(b"D")
                sock.recv(100_000)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            time.sleep(0.5)
            return kernel_echo(bed, b"after" * 1000, port=PORT)

        echoed = await asyncio.to_thread(run)
        emb = current()
        assert emb is not None and emb.hub is not None
        await asyncio.sleep(0.3)
        return echoed, emb.hub.live

    (echoed, live), _, _ = serve(testbed, handler, client)
    assert echoed == b"after" * 1000
    assert lost, "the writer never saw the reset"
    assert live == 0, f"{live} slots still held after both connections ended"


def test_opt_out_keeps_the_unix_streams(testbed: Testbed, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    monkeypatch.setenv("JOYRIDE_EMBED_CHANNELS", "0")

    async def main() -> tuple[str, str, type]:
        server = await jasyncio.start_server(echo_handler, None, PORT)
        try:
            payload = random_payload(100_000)
            echoed = await asyncio.to_thread(kernel_echo, testbed, payload, port=PORT)
            return digest(payload), digest(echoed), type(server)
        finally:
            server.close()

    with testbed.joy.inside(), embed(testbed.joy.ifname, [PORT]):
        emb = current()
        assert emb is not None and emb.hub is None
        sent, echoed, kind = asyncio.run(main())
    assert sent == echoed
    assert kind is not RingServer
