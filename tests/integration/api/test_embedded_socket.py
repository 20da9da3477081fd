"""The stdlib's http.server and socketserver on joyride.socket (embedded), kernel peers."""

from __future__ import annotations

import contextlib
import functools
import http.server
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_peers import PORT
from peers import digest, kernel_echo, random_payload

import joyride.socket as jsocket
from joyride.embed import embed
from joyride.testbed import Testbed

pytestmark = pytest.mark.integration


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(1 << 16):
            self.request.sendall(data)


@contextlib.contextmanager
def _serve(server: socketserver.BaseServer) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_socketserver_echo_kernel_client(testbed: Testbed,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socketserver, "socket", jsocket)
    payload = random_payload(1 << 20)
    with testbed.joy.inside(), embed(testbed.joy.ifname, [PORT]):
        server = socketserver.ThreadingTCPServer(("", PORT), _Echo)
        assert isinstance(server.socket, jsocket.socket)
        assert server.socket.joyride_mode == "embedded"
        with _serve(server):
            echoed = kernel_echo(testbed, payload, port=PORT)
    assert digest(echoed) == digest(payload)


def test_http_server_serves_files_to_curl(testbed: Testbed, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socketserver, "socket", jsocket)
    monkeypatch.setattr(http.server, "socket", jsocket)
    body = random_payload(300_000)
    (tmp_path / "blob.bin").write_bytes(body)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with testbed.joy.inside(), embed(testbed.joy.ifname, [PORT]):
        server = http.server.ThreadingHTTPServer(("", PORT), handler)
        assert isinstance(server.socket, jsocket.socket)
        assert server.socket.joyride_mode == "embedded"
        with _serve(server):
            out = testbed.peer.run("curl", "-s", "--max-time", "20",
                                   f"http://{testbed.joy.ip}:{PORT}/blob.bin").stdout
            many = testbed.peer.run("curl", "-s", "--max-time", "20", *(
                [f"http://{testbed.joy.ip}:{PORT}/blob.bin"] * 5)).stdout
    assert digest(out) == digest(body)
    assert digest(many) == digest(body * 5)
