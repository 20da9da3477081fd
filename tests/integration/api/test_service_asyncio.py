"""Service mode (``joyride attach``) with joyride.asyncio against kernel peers: the same
echo and HTTP checks as embedded mode, data verified by hash, also under loss and
reordering."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from api_peers import HTTP_BODY, PORT, echo_handler, http_handler, run_in_peer
from api_service import service
from peers import digest, kernel_echo, random_payload

import joyride.asyncio as jasyncio
from joyride.testbed import Impairment, Testbed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service_bed() -> Iterator[Testbed]:
    """One attached bed for the clean tests of this module (attach compiles BPF)."""
    with Testbed() as bed, service(bed):
        yield bed


def serve_and(bed: Testbed, handler: Any, client: Callable[[Testbed], Any],
              port: int = PORT,
              loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None) -> Any:
    """Serve ``handler`` on ``port`` through the attached service with joyride.asyncio,
    run the async ``client(bed)`` and return its result (on a loop from
    ``loop_factory``, asyncio's own by default)."""

    async def main() -> Any:
        server = await jasyncio.start_server(handler, None, port)
        # Service mode: the listener is the service's unix descriptor, served by the
        # loop's own machinery (not the embedded JoyrideServer).
        assert not isinstance(server, jasyncio.JoyrideServer)
        sock = server.sockets[0]
        assert sock.family == socket.AF_UNIX
        try:
            return await client(bed)
        finally:
            server.close()
            await server.wait_closed()

    with bed.joy.inside(), asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


async def _echo_client(bed: Testbed, size: int, port: int = PORT) -> tuple[str, str]:
    payload = random_payload(size)
    echoed = await asyncio.to_thread(kernel_echo, bed, payload, port=port)
    return digest(payload), digest(echoed)


def test_echo_kernel_client_hash(service_bed: Testbed) -> None:
    async def client(bed: Testbed) -> tuple[str, str]:
        return await _echo_client(bed, 2 << 20, PORT)

    sent, echoed = serve_and(service_bed, echo_handler, client, PORT)
    assert sent == echoed


def test_echo_on_uvloop(service_bed: Testbed) -> None:
    """The issue asks for uvloop too: the same echo server, on uvloop's loop."""
    uvloop = pytest.importorskip("uvloop")

    async def client(bed: Testbed) -> tuple[str, tuple[str, str]]:
        loop_module = type(asyncio.get_running_loop()).__module__
        return loop_module, await _echo_client(bed, 1 << 20, PORT)

    loop_module, (sent, echoed) = serve_and(service_bed, echo_handler, client, PORT,
                                            loop_factory=uvloop.new_event_loop)
    assert loop_module.startswith("uvloop")
    assert sent == echoed


def test_http_curl_and_wrk(service_bed: Testbed) -> None:
    port = PORT + 1

    async def client(bed: Testbed) -> tuple[int, bytes, int, bytes]:
        url = f"http://{bed.joy.ip}:{port}/"
        rc, body = await run_in_peer(bed, "curl", "-s", "--max-time", "10", url)
        wrc, report = await run_in_peer(bed, "wrk", "-t1", "-c8", "-d2s", url, timeout=30)
        return rc, body, wrc, report

    rc, body, wrc, report = serve_and(service_bed, http_handler, client, port)
    assert rc == 0 and digest(body) == digest(HTTP_BODY)
    assert wrc == 0, report
    text = report.decode()
    found = re.search(r"(\d+) requests in", text)
    assert found is not None, text
    assert int(found.group(1)) > 100, text
    assert "Non-2xx" not in text and "Socket errors" not in text, text


@pytest.mark.parametrize("impairment", [
    Impairment(loss=0.02),
    Impairment(reorder=0.05, delay=0.002),
], ids=["loss", "reorder"])
def test_echo_under_impairments(make_testbed: Callable[..., Testbed],
                                impairment: Impairment) -> None:
    bed = make_testbed(to_joy=impairment, to_peer=impairment, seed=7)

    async def client(bed: Testbed) -> tuple[str, str]:
        return await _echo_client(bed, 512 << 10)

    with service(bed):
        sent, echoed = serve_and(bed, echo_handler, client)
    assert sent == echoed


def test_transport_reports_tcp_addresses(service_bed: Testbed) -> None:
    """get_extra_info('peername'/'sockname') and Server.sockets show the TCP addresses
    the service's unix names spell, on accepted and on connected transports, matching
    what the kernel peer's socket sees."""
    bed = service_bed
    port = PORT + 2
    seen: list[tuple[Any, Any]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append((writer.get_extra_info("sockname"), writer.get_extra_info("peername")))
        await echo_handler(reader, writer)

    async def accepted(bed: Testbed) -> tuple[tuple[str, int], bytes]:
        def client() -> tuple[tuple[str, int], bytes]:
            with bed.peer.inside():
                sock = socket.create_connection((bed.joy.ip, port), timeout=10)
            with sock:
                sock.sendall(b"ping")
                return sock.getsockname(), sock.recv(4)

        return await asyncio.to_thread(client)

    async def main() -> tuple[tuple[str, int], bytes, Any]:
        server = await jasyncio.start_server(handler, None, port)
        assert isinstance(server, asyncio.Server)  # service mode: the loop's own server
        try:
            listening = server.sockets[0].getsockname()
            name, echoed = await accepted(bed)
            return name, echoed, listening
        finally:
            server.close()
            await server.wait_closed()

    with bed.joy.inside():
        client_name, echoed, listening = asyncio.run(main())
    assert echoed == b"ping"
    assert listening == ("0.0.0.0", port)
    assert seen == [((bed.joy.ip, port), client_name)]
    assert client_name[0] == bed.peer.ip

    # A connected transport: to a kernel listener in the peer namespace.
    with bed.peer.inside():
        lsock = socket.create_server((bed.peer.ip, port), backlog=1)
    accepted_from: list[tuple[str, int]] = []

    def peer_accept() -> None:
        lsock.settimeout(10)
        conn, addr = lsock.accept()
        accepted_from.append(addr)
        conn.close()

    async def connect() -> tuple[Any, Any]:
        peer = asyncio.create_task(asyncio.to_thread(peer_accept))
        _reader, writer = await jasyncio.open_connection(bed.peer.ip, port)
        names = writer.get_extra_info("sockname"), writer.get_extra_info("peername")
        await peer
        writer.close()
        return names

    try:
        with bed.joy.inside():
            sockname, peername = asyncio.run(connect())
    finally:
        lsock.close()
    assert peername == (bed.peer.ip, port)
    assert accepted_from == [sockname]
    assert sockname[0] == bed.joy.ip
