"""The stdlib's socketserver and http.server on joyride.socket in service mode
(``joyride attach``): connections are the service's descriptors, kernel peers, data
verified by hash; addresses are the TCP ones."""

from __future__ import annotations

import errno
import functools
import http.server
import os
import select
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_peers import PORT, EchoHandler, serve_in_thread
from api_service import service
from peers import digest, kernel_echo, random_payload, when_listening

import joyride.socket as jsocket
from joyride import sockopts
from joyride.testbed import Testbed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service_bed() -> Iterator[Testbed]:
    with Testbed() as bed, service(bed):
        yield bed


def test_socketserver_echo_kernel_client(service_bed: Testbed,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socketserver, "socket", jsocket)
    payload = random_payload(1 << 20)
    with service_bed.joy.inside():
        server = socketserver.ThreadingTCPServer(("", PORT), EchoHandler)
        assert isinstance(server.socket, jsocket.socket)
        assert server.socket.joyride_mode == "service"
        with serve_in_thread(server):
            echoed = kernel_echo(service_bed, payload, port=PORT)
    assert digest(echoed) == digest(payload)


def test_http_server_serves_files_to_curl(service_bed: Testbed, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socketserver, "socket", jsocket)
    monkeypatch.setattr(http.server, "socket", jsocket)
    body = random_payload(300_000)
    (tmp_path / "blob.bin").write_bytes(body)
    seen: list[tuple[str, int]] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            seen.append(self.client_address)  # the TCP peer, not a unix name

    port = PORT + 1
    handler = functools.partial(Handler, directory=str(tmp_path))
    bed = service_bed
    with bed.joy.inside():
        server = http.server.ThreadingHTTPServer(("", port), handler)
        assert isinstance(server.socket, jsocket.socket)
        assert server.socket.joyride_mode == "service"
        with serve_in_thread(server):
            url = f"http://{bed.joy.ip}:{port}/blob.bin"
            out = bed.peer.run("curl", "-s", "--max-time", "20", url).stdout
            many = bed.peer.run("curl", "-s", "--max-time", "20", *([url] * 5)).stdout
    assert digest(out) == digest(body)
    assert digest(many) == digest(body * 5)
    assert seen and all(addr[0] == bed.peer.ip and addr[1] > 0 for addr in seen), seen


def test_addresses_are_tcp_names(service_bed: Testbed) -> None:
    """getsockname/getpeername/accept report the TCP 4-tuple, as a kernel socket would."""
    bed, port = service_bed, PORT + 2
    with bed.joy.inside():
        listener = jsocket.create_server(("", port))
    with listener:
        assert listener.joyride_mode == "service"
        assert listener.getsockname() == ("0.0.0.0", port)
        with pytest.raises(OSError):
            listener.getpeername()
        with bed.peer.inside():
            client = socket.create_connection((bed.joy.ip, port), timeout=10)
        with client:
            listener.settimeout(10)
            conn, addr = listener.accept()
            with conn:
                assert isinstance(conn, jsocket.socket) and conn.joyride_mode == "service"
                assert addr == client.getsockname()
                assert conn.getpeername() == client.getsockname()
                assert conn.getsockname() == (bed.joy.ip, port)
                assert conn.gettimeout() is None  # accepted sockets block, as the kernel's
                with pytest.raises(OSError):  # an AF_INET socket has no IPV6_MTU
                    conn.getsockopt(socket.IPPROTO_IPV6, sockopts.IPV6_MTU)
                client.sendall(b"ping")
                assert conn.recv(4) == b"ping"


def test_client_connection_through_service(service_bed: Testbed) -> None:
    """create_connection to a kernel server in the peer: a service connection (its
    ephemeral range) whose names are the TCP ones; data hashed both ways."""
    bed, port = service_bed, 9000
    server = bed.peer.popen("python3", "-c", (
        "import socket\n"
        f"s = socket.create_server(('0.0.0.0', {port}))\n"
        "c, _ = s.accept()\n"
        "while d := c.recv(65536): c.sendall(d)\n"))
    payload = random_payload(256 << 10)
    with bed.joy.inside():
        sock = when_listening(lambda: jsocket.create_connection((bed.peer.ip, port),
                                                                timeout=10))
    with sock:
        assert sock.joyride_mode == "service"
        assert sock.getpeername() == (bed.peer.ip, port)
        local_ip, local_port = sock.getsockname()
        assert local_ip == bed.joy.ip and local_port > 0
        received = bytearray()
        reader = threading.Thread(target=lambda: _read_all(sock, received, len(payload)))
        reader.start()
        sock.sendall(payload)
        reader.join(30)
    server.wait(10)
    assert digest(bytes(received)) == digest(payload)


def _read_all(sock: jsocket.socket, into: bytearray, size: int) -> None:
    while len(into) < size:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return
        into.extend(chunk)


def test_keepalive_detects_a_vanished_peer(testbed: Testbed) -> None:
    """SO_KEEPALIVE and TCP_KEEP* on an accepted service-mode connection reach the
    service (OP_SETOPT): when the peer vanishes (its link goes down, so nothing
    answers the probes) the connection ends after idle + count x interval, instead
    of hanging (RFC 9293 §3.8.4)."""
    bed = testbed
    with service(bed), bed.joy.inside():
        server = jsocket.socket()
        server.bind(("", PORT))
        server.listen()
        client = bed.peer.popen("python3", "-c", (
            "import socket, time\n"
            f"s = socket.create_connection(({bed.joy.ip!r}, {PORT}), timeout=10)\n"
            "time.sleep(60)\n"))
        with server:
            server.settimeout(15)
            conn, _ = server.accept()
            with conn:
                assert conn.joyride_mode == "service"
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2)
                assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 2
                with pytest.raises(OSError):
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 0)
                bed.peer.run("ip", "link", "set", "dev", bed.peer.ifname, "down")
                conn.settimeout(15)
                start = time.monotonic()
                try:
                    got = conn.recv(1)
                except ConnectionError:
                    got = b""
                elapsed = time.monotonic() - start
    client.kill()
    assert got == b""
    assert elapsed < 10, f"the vanished peer was noticed only after {elapsed:.1f} s"


def test_nonblocking_connect_through_service(service_bed: Testbed) -> None:
    """A non-blocking joyride.socket connect in service mode returns EINPROGRESS at
    once (the handshake goes on in the service), becomes writable, then carries data."""
    bed, port = service_bed, 9001
    bed.peer.popen("python3", "-c", (
        "import socket\n"
        f"s = socket.create_server(('0.0.0.0', {port}))\n"
        "c, _ = s.accept()\n"
        "while d := c.recv(65536): c.sendall(d)\n"))
    deadline = time.monotonic() + 10
    with bed.joy.inside():
        while True:
            sock = jsocket.socket()
            sock.setblocking(False)
            start = time.monotonic()
            code = sock.connect_ex((bed.peer.ip, port))
            took = time.monotonic() - start
            assert code == errno.EINPROGRESS and took < 0.5
            assert sock.joyride_mode == "service"
            _, writable, _ = select.select([], [sock], [], 10)
            # 0, or ECONNREFUSED once the service saw the server was not there yet (as a
            # kernel socket's SO_ERROR says).
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            assert writable and error in (0, errno.ECONNREFUSED)
            sock.settimeout(10)
            try:
                if error:
                    raise ConnectionRefusedError(error, os.strerror(error))
                sock.sendall(b"ping")
                got = sock.recv(4)
            except ConnectionError:
                got = b""
            if got or time.monotonic() > deadline:
                break
            sock.close()  # refused: the server had not bound yet
            time.sleep(0.1)
    with sock:
        assert got == b"ping"
        assert sock.getpeername() == (bed.peer.ip, port)
