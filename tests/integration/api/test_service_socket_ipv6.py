"""joyride.socket's and joyride.asyncio's IPv6 in service mode (issue 18): a dual-stack
listener takes IPv6 and IPv4 (v4-mapped) kernel clients, a v6only one refuses IPv4, an
outgoing IPv6 connection goes through the service, and asyncio serves and connects over
IPv6; addresses are 4-tuples as a kernel AF_INET6 socket reports them, data verified by
hash."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest
from api_peers import PORT, echo_handler
from api_service import service
from peers import digest, peer_client, random_payload, roundtrip, when_listening

import joyride.asyncio as jasyncio
import joyride.socket as jsocket
from joyride import sockopts
from joyride.testbed import Testbed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bed6() -> Iterator[Testbed]:
    with Testbed(ipv6=True) as bed, service(bed):
        yield bed


def echo_one(listener: jsocket.socket) -> threading.Thread:
    """Accept one connection and echo it until EOF, in a thread."""
    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(1 << 16):
                conn.sendall(data)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_dual_stack_listener_takes_both_families(bed6: Testbed) -> None:
    bed, port = bed6, PORT + 3
    with bed.joy.inside():
        listener = jsocket.create_server(("::", port), family=socket.AF_INET6,
                                         dualstack_ipv6=True)
    with listener:
        assert listener.joyride_mode == "service"
        assert listener.getsockname() == ("::", port, 0, 0)
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) == socket.AF_INET6
        assert listener.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        listener.settimeout(10)
        for ipv6 in (True, False):
            with peer_client(bed, port, ipv6=ipv6) as client:
                conn, addr = listener.accept()
                with conn:
                    host, cport = client.getsockname()[:2]
                    mapped = host if ipv6 else f"::ffff:{host}"
                    assert addr == (mapped, cport, 0, 0) == conn.getpeername()
                    ours = bed.joy.ip6 if ipv6 else f"::ffff:{bed.joy.ip}"
                    assert conn.getsockname() == (ours, port, 0, 0)
                    assert conn.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) == \
                        socket.AF_INET6
                    with bed.joy.inside():  # OP_GETINFO goes to its namespace's service
                        assert conn.getsockopt(socket.IPPROTO_IPV6, sockopts.IPV6_MTU) == 1500
                    payload = random_payload(256 << 10)
                    echo = threading.Thread(target=echo_exactly, args=(conn, len(payload)))
                    echo.start()
                    assert digest(roundtrip(client, payload)) == digest(payload)
                    echo.join(30)


def echo_exactly(sock: jsocket.socket, size: int) -> None:
    """Send back the first ``size`` bytes received (or all up to EOF)."""
    done = 0
    while done < size and (chunk := sock.recv(min(1 << 16, size - done))):
        sock.sendall(chunk)
        done += len(chunk)


def test_an_address_of_the_other_family_is_refused_as_by_the_kernel(bed6: Testbed) -> None:
    """bind checks the host against the socket's family, as a kernel socket does."""
    with bed6.joy.inside():
        for family, host in ((socket.AF_INET, "::"), (socket.AF_INET6, "0.0.0.0")):
            sock = jsocket.socket(family, socket.SOCK_STREAM)
            with sock, pytest.raises(OSError):
                sock.bind((host, PORT + 6))


def test_a_v6only_listener_leaves_ipv4_clients_refused(bed6: Testbed) -> None:
    """create_server(AF_INET6) without dualstack_ipv6 is IPV6_V6ONLY, as the standard
    one: IPv6 clients reach it; an IPv4 client finds nobody listening (a RST)."""
    bed, port = bed6, PORT + 4
    with bed.joy.inside():
        listener = jsocket.create_server(("::", port), family=socket.AF_INET6)
    with listener:
        assert listener.joyride_mode == "service"
        assert listener.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        listener.settimeout(10)
        thread = echo_one(listener)
        payload = random_payload(64 << 10)
        with peer_client(bed, port, ipv6=True) as client:
            assert digest(roundtrip(client, payload)) == digest(payload)
        thread.join(10)
        with pytest.raises(ConnectionRefusedError), peer_client(bed, port):
            pass


def test_an_outgoing_ipv6_connection_goes_through_the_service(bed6: Testbed) -> None:
    bed, port = bed6, 9001
    server = bed.peer.popen("python3", "-c", (
        "import socket\n"
        f"s = socket.create_server(('::', {port}), family=socket.AF_INET6)\n"
        "c, _ = s.accept()\n"
        "while d := c.recv(65536): c.sendall(d)\n"))
    peer_ip6 = bed.peer.ip6
    assert peer_ip6 is not None
    with bed.joy.inside():
        sock = when_listening(lambda: jsocket.create_connection((peer_ip6, port),
                                                               timeout=10))
    with sock:
        assert sock.joyride_mode == "service" and sock.family == socket.AF_INET6
        assert sock.getpeername() == (bed.peer.ip6, port, 0, 0)
        local = sock.getsockname()
        assert local[0] == bed.joy.ip6 and local[1] > 0 and len(local) == 4
        payload = random_payload(256 << 10)
        assert digest(roundtrip(sock, payload)) == digest(payload)  # type: ignore[arg-type]
    server.wait(10)


def test_asyncio_serves_and_connects_over_ipv6(bed6: Testbed) -> None:
    """start_server on "::" (IPV6_V6ONLY, as asyncio's own) is the service's: an IPv6
    kernel client is echoed and seen at its address; open_connection to the peer's
    IPv6 kernel server goes through the service too."""
    bed, port, peer_port = bed6, PORT + 5, 9002
    peer_ip6 = bed.peer.ip6
    assert peer_ip6 is not None
    server = bed.peer.popen("python3", "-c", (
        "import socket\n"
        f"s = socket.create_server(('::', {peer_port}), family=socket.AF_INET6)\n"
        "c, _ = s.accept()\n"
        "while d := c.recv(65536): c.sendall(d)\n"))
    seen: list[object] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("peername"))
        await echo_handler(reader, writer)

    def kernel_client(payload: bytes) -> tuple[object, bytes]:
        with peer_client(bed, port, ipv6=True) as client:
            return client.getsockname(), roundtrip(client, payload)

    async def main() -> None:
        listener = await jasyncio.start_server(handler, "::", port)
        try:
            [sock] = listener.sockets  # type: ignore[attr-defined]
            assert sock.family == socket.AF_UNIX  # the service's descriptor
            assert sock.getsockname() == ("::", port, 0, 0)
            payload = random_payload(256 << 10)
            client_name, echoed = await asyncio.to_thread(kernel_client, payload)
            assert digest(echoed) == digest(payload)
            assert seen == [(*client_name[:2], 0, 0)]  # type: ignore[index]
        finally:
            listener.close()
            await listener.wait_closed()
        for _ in range(100):  # until the peer's server has bound
            try:
                reader, writer = await jasyncio.open_connection(peer_ip6, peer_port)
                break
            except ConnectionRefusedError:
                await asyncio.sleep(0.1)
        assert writer.get_extra_info("peername") == (peer_ip6, peer_port, 0, 0)
        assert writer.get_extra_info("socket").family == socket.AF_UNIX
        payload = random_payload(128 << 10)
        writer.write(payload)
        await writer.drain()
        echoed = await reader.readexactly(len(payload))
        assert digest(echoed) == digest(payload)
        writer.close()
        await writer.wait_closed()

    with bed.joy.inside(), asyncio.Runner() as runner:
        runner.run(main())
    server.wait(10)
