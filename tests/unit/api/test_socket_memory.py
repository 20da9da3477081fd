"""joyride.socket between two in-memory stacks: blocking, timeouts, selectors, makefile."""

from __future__ import annotations

import hashlib
import os
import selectors
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest
from api_memory import PORT

import joyride.socket as jsocket
from joyride import sockopts
from joyride.embed.select import serving
from joyride.embed.stack import Stack
from joyride.tcp.timers import Timer

A_HOST = "198.18.0.1"


@pytest.fixture
def routed(stacks: tuple[Stack, Stack]) -> Iterator[tuple[Stack, Stack]]:
    with serving(listen=stacks[0], connect=stacks[1]):
        yield stacks


def _echo_once(server: jsocket.socket) -> None:
    conn, _ = server.accept()
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def test_blocking_echo_hash_and_addresses(routed: tuple[Stack, Stack]) -> None:
    payload = os.urandom(600_000)
    with jsocket.create_server(("", PORT)) as server:
        assert server.joyride_mode == "embedded"
        thread = threading.Thread(target=_echo_once, args=(server,), daemon=True)
        thread.start()
        with jsocket.create_connection((A_HOST, PORT), timeout=20) as client:
            assert client.getpeername() == (A_HOST, PORT)
            received = bytearray()
            reader = threading.Thread(target=lambda: _read_n(client, len(payload), received))
            reader.start()
            client.sendall(payload)
            reader.join(30)
            client.shutdown(jsocket.SHUT_WR)
            assert client.recv(10) == b""  # the server closed after our FIN
        thread.join(10)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


def _read_n(sock: jsocket.socket, n: int, into: bytearray) -> None:
    while len(into) < n:
        chunk = sock.recv(65536)
        if not chunk:
            return
        into.extend(chunk)


def test_timeout_and_nonblocking(routed: tuple[Stack, Stack]) -> None:
    with jsocket.create_server(("", PORT)) as server:
        server.settimeout(0.05)
        with pytest.raises(TimeoutError):
            server.accept()
        server.setblocking(False)
        assert not server.getblocking()
        with pytest.raises(BlockingIOError):
            server.accept()
        client = jsocket.create_connection((A_HOST, PORT), timeout=5)
        server.settimeout(5)
        conn, peer = server.accept()
        assert peer == client.getsockname()
        conn.settimeout(0.05)
        with pytest.raises(TimeoutError):
            conn.recv(10)
        client.close()
        conn.close()


def test_selectors_readiness(routed: tuple[Stack, Stack]) -> None:
    with jsocket.create_server(("", PORT)) as server, selectors.DefaultSelector() as sel:
        server.setblocking(False)
        sel.register(server, selectors.EVENT_READ)
        assert sel.select(0.05) == []  # nothing to accept: not readable
        client = jsocket.create_connection((A_HOST, PORT), timeout=5)
        assert sel.select(5), "a pending connection makes the listener readable"
        conn, _ = server.accept()
        assert sel.select(0.05) == []  # accept queue drained: readable no more
        conn.setblocking(False)
        sel.register(conn, selectors.EVENT_READ)
        client.sendall(b"ping")
        events = sel.select(5)
        assert [key.fileobj for key, _ in events] == [conn]
        assert conn.recv(100) == b"ping"
        assert sel.select(0.05) == []
        client.close()
        assert sel.select(5), "EOF makes it readable"
        assert conn.recv(100) == b""
        conn.close()


class _Upper(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.upper())


def test_socketserver_with_makefile(routed: tuple[Stack, Stack],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socketserver, "socket", jsocket)
    server = socketserver.ThreadingTCPServer(("", PORT), _Upper)
    assert isinstance(server.socket, jsocket.socket)
    assert server.socket.joyride_mode == "embedded"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        with jsocket.create_connection((A_HOST, PORT), timeout=10) as client:
            reader = client.makefile("rb")
            for i in range(50):
                client.sendall(b"line %d\n" % i)
                assert reader.readline() == b"LINE %d\n" % i
            reader.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_unowned_port_falls_back_to_kernel(routed: tuple[Stack, Stack]) -> None:
    with jsocket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        assert sock.joyride_mode == "kernel"
        assert sock.getsockname()[1] != 0


def test_writable_tracks_send_buffer_with_slow_reader(routed: tuple[Stack, Stack]) -> None:
    """selectors' "writable" means a non-blocking send succeeds: it turns off once the
    peer stops reading (window shut, send buffer full) and back on as it reads."""
    chunk = os.urandom(32 << 10)
    with jsocket.create_server(("", PORT)) as server:
        client = jsocket.create_connection((A_HOST, PORT), timeout=10)
        conn, _ = server.accept()
        with client, conn, selectors.DefaultSelector() as sel:
            client.setblocking(False)
            sel.register(client, selectors.EVENT_WRITE)
            sent = bytearray()
            deadline = time.monotonic() + 20
            while sel.select(0.5):  # writable: send must not raise BlockingIOError
                sent += chunk[:client.send(chunk)]
                assert time.monotonic() < deadline, "never stopped being writable"
            assert sent
            with pytest.raises(BlockingIOError):  # not writable really means full
                client.send(chunk)
            # The slow reader drains everything: writability comes back.
            received = bytearray()
            conn.settimeout(10)
            while len(received) < len(sent):
                received.extend(conn.recv(65536))
            assert sel.select(5), "writable again once the reader caught up"
            assert client.send(b"x") == 1
    assert received == sent


def test_tcp_options_configure_the_connection(routed: tuple[Stack, Stack]) -> None:
    """TCP_NODELAY and buffer sizes reach the connection's TcpConfig: a listener's
    options are inherited by what it accepts; TCP_NODELAY also applies when connected."""
    server = jsocket.socket()
    server.setsockopt(jsocket.IPPROTO_TCP, jsocket.TCP_NODELAY, 1)
    server.setsockopt(jsocket.SOL_SOCKET, jsocket.SO_SNDBUF, 64 << 10)
    server.setsockopt(jsocket.SOL_SOCKET, jsocket.SO_RCVBUF, 1)  # raised to Linux's floor
    server.bind(("", PORT))
    server.listen()
    with server:
        client = jsocket.socket()
        client.setsockopt(jsocket.SOL_SOCKET, jsocket.SO_RCVBUF, 32 << 10)
        client.settimeout(10)
        client.connect((A_HOST, PORT))
        server.settimeout(10)
        conn, _ = server.accept()
        with client, conn:
            accepted = conn._conn
            assert accepted is not None
            assert accepted.config.nodelay
            assert accepted.config.send_buffer == 64 << 10
            assert accepted.config.receive_buffer == sockopts.MIN_RCVBUF
            mine = client._conn
            assert mine is not None
            assert mine.config.receive_buffer == 32 << 10 and not mine.config.nodelay
            client.setsockopt(jsocket.IPPROTO_TCP, jsocket.TCP_NODELAY, 1)
            assert mine.config.nodelay
            assert client.getsockopt(jsocket.IPPROTO_TCP, jsocket.TCP_NODELAY) == 1
            # Keepalive on the connected socket: armed at once, idle as asked.
            client.setsockopt(jsocket.IPPROTO_TCP, jsocket.TCP_KEEPIDLE, 600)
            client.setsockopt(jsocket.SOL_SOCKET, jsocket.SO_KEEPALIVE, 1)
            assert mine.config.keepalive and mine.config.keepalive_idle == 600.0
            assert mine._timers.is_set(Timer.KEEPALIVE)
            with pytest.raises(OSError):
                client.setsockopt(jsocket.IPPROTO_TCP, jsocket.TCP_KEEPCNT, 0)
            payload = os.urandom(100_000)  # data still flows with the tiny receive buffer
            client.sendall(payload)
            received = bytearray()
            while len(received) < len(payload):
                received.extend(conn.recv(65536))
            assert received == payload
