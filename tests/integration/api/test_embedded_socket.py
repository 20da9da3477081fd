"""The stdlib's http.server and socketserver on joyride.socket (embedded), kernel peers."""

from __future__ import annotations

import functools
import http.server
import socket
import socketserver
import subprocess
import threading
import time
from pathlib import Path

import pytest
from api_peers import PORT, EchoHandler, serve_in_thread
from peers import digest, kernel_echo, peer_client, random_payload, roundtrip

import joyride.socket as jsocket
from joyride.claim.statedir import StateDir
from joyride.dataplane import plane as dataplane
from joyride.embed import embed
from joyride.service import control
from joyride.steer import xdp
from joyride.tcp.state import TcpState
from joyride.testbed import Testbed

pytestmark = pytest.mark.integration


def test_socketserver_echo_kernel_client(testbed: Testbed, monkeypatch: pytest.MonkeyPatch,
                                         plane: str) -> None:
    monkeypatch.setattr(socketserver, "socket", jsocket)
    payload = random_payload(1 << 20)
    with testbed.joy.inside(), embed(testbed.joy.ifname, [PORT]):
        server = socketserver.ThreadingTCPServer(("", PORT), EchoHandler)
        assert isinstance(server.socket, jsocket.socket)
        assert server.socket.joyride_mode == "embedded"
        with serve_in_thread(server):
            echoed = kernel_echo(testbed, payload, port=PORT)
    assert digest(echoed) == digest(payload)


def test_http_server_serves_files_to_curl(testbed: Testbed, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch, plane: str) -> None:
    monkeypatch.setattr(socketserver, "socket", jsocket)
    monkeypatch.setattr(http.server, "socket", jsocket)
    body = random_payload(300_000)
    (tmp_path / "blob.bin").write_bytes(body)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with testbed.joy.inside(), embed(testbed.joy.ifname, [PORT]):
        server = http.server.ThreadingHTTPServer(("", PORT), handler)
        assert isinstance(server.socket, jsocket.socket)
        assert server.socket.joyride_mode == "embedded"
        with serve_in_thread(server):
            out = testbed.peer.run("curl", "-s", "--max-time", "20",
                                   f"http://{testbed.joy.ip}:{PORT}/blob.bin").stdout
            many = testbed.peer.run("curl", "-s", "--max-time", "20", *(
                [f"http://{testbed.joy.ip}:{PORT}/blob.bin"] * 5)).stdout
    assert digest(out) == digest(body)
    assert digest(many) == digest(body * 5)


def test_keepalive_probes_a_kernel_peer_that_answers(testbed: Testbed, plane: str) -> None:
    """SO_KEEPALIVE and TCP_KEEP* on the listener reach what it accepts (as Linux):
    an idle kernel peer gets probes (RFC 9293 §3.8.4), answers them, and the
    connection stays up and carries data afterwards."""
    client = (
        "import socket, sys, time\n"
        f"s = socket.create_connection(({testbed.joy.ip!r}, {PORT}), timeout=10)\n"
        "time.sleep(3.5)\n"
        "s.sendall(b'ping')\n"
        "sys.stdout.write(s.recv(4).decode())\n"
    )
    with testbed.joy.inside(), embed(testbed.joy.ifname, [PORT]) as emb:
        server = jsocket.socket()
        server.setsockopt(jsocket.SOL_SOCKET, jsocket.SO_KEEPALIVE, 1)
        server.setsockopt(jsocket.IPPROTO_TCP, jsocket.TCP_KEEPIDLE, 1)
        server.setsockopt(jsocket.IPPROTO_TCP, jsocket.TCP_KEEPINTVL, 1)
        server.bind(("", PORT))
        server.listen()
        with server:
            peer = testbed.peer.popen("python3", "-c", client, stdout=subprocess.PIPE)
            try:
                server.settimeout(10)
                conn, _ = server.accept()
                with conn:
                    conn.settimeout(10)
                    assert conn.recv(4) == b"ping"  # after 3.5 s of silence
                    assert conn.joyride_mode == "embedded"
                    tcp = conn._conn
                    if plane == "c":  # the in-process service's connection
                        assert tcp is None
                        assert emb.counters()["keepalive_probes"] >= 2
                    else:
                        assert tcp is not None
                        assert tcp.counters["keepalive_probes"] >= 2
                        assert tcp.state is TcpState.ESTABLISHED
                    conn.sendall(b"pong")
                    out, _ = peer.communicate(timeout=10)
            finally:
                if peer.poll() is None:
                    peer.kill()
                    peer.wait()
    assert out == b"pong"


def test_data_path_stopped_from_outside_gives_the_port_back_to_the_kernel(
        testbed: Testbed) -> None:
    """C data plane: `joyride detach` (the control socket's shutdown) stops the
    embedding process's data path; the claim is undone at once, so the steering program
    is gone and a new socket on the port is a kernel one, without waiting for close."""
    if not dataplane.wanted():
        pytest.skip("the C data plane is not built here")
    with testbed.joy.inside(), embed(testbed.joy.ifname, [PORT]) as emb:
        control.request(emb.dir.control_path, {"op": "shutdown"})
        deadline = time.monotonic() + 10
        while emb.serving() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not emb.serving()
        while xdp.query(xdp.ifindex(testbed.joy.ifname)) is not None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert xdp.query(xdp.ifindex(testbed.joy.ifname)) is None
        server = jsocket.socket()
        with server:
            server.bind(("", PORT))
            server.listen()
            assert server.joyride_mode == "kernel"
    assert not StateDir(testbed.joy.ifname).path.exists()



def test_an_inet6_socket_is_embedded_on_the_c_data_plane(plane: str) -> None:
    """A dual-stack AF_INET6 server embedded: on the C data plane its in-process service
    serves both families (IPv6 and v4-mapped IPv4 clients, echoed, hash-checked); on the
    Python data plane, whose stacks are IPv4, the socket is the kernel's and still
    serves them."""
    port = PORT + 1
    with Testbed(ipv6=True) as bed, bed.joy.inside(), embed(bed.joy.ifname, [port]):
        server = jsocket.create_server(("::", port), family=socket.AF_INET6,
                                       dualstack_ipv6=True)
        with server:
            assert server.joyride_mode == ("embedded" if plane == "c" else "kernel")
            for ipv6 in (True, False):
                payload = random_payload(256 << 10)
                thread = threading.Thread(target=echo_until_eof, args=(server,))
                thread.start()
                with peer_client(bed, port, ipv6=ipv6) as client:
                    assert digest(roundtrip(client, payload)) == digest(payload)
                thread.join(30)


def echo_until_eof(server: jsocket.socket) -> None:
    """Accept one connection and send back what it sends, until its EOF."""
    conn, _ = server.accept()
    with conn:
        while data := conn.recv(1 << 16):
            conn.sendall(data)
