"""The service's data path through the application protocol (Python client, no shim):
kernel clients in the peer namespace, byte-exact, flow controlled both ways."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import pytest
from peers import digest, peer_client, roundtrip
from service_helpers import app_path, stats, wait_for

from joyride.service import appclient, protocol
from joyride.testbed import Testbed

pytestmark = pytest.mark.integration


def _echo_server(lsock: socket.socket, count: int) -> threading.Thread:
    def serve_one(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(1 << 16):
                conn.sendall(data)

    def run() -> None:
        for _ in range(count):
            conn, _ = lsock.accept()
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_echo_kernel_client_hash_and_addresses(service_bed: Testbed) -> None:
    bed = service_bed
    with bed.joy.inside():
        lsock = appclient.listen(8080, path=app_path(bed.joy))
    with lsock:
        _echo_server(lsock, 2)
        payload = os.urandom(4 << 20)
        with peer_client(bed, 8080, timeout=30) as client:
            echoed = roundtrip(client, payload)
            local = client.getsockname()
        assert digest(echoed) == digest(payload)
        # The accepted socket's peer name spells the TCP 4-tuple.
        with peer_client(bed, 8080, timeout=30) as second:
            second.sendall(b"ping")
            assert second.recv(4) == b"ping"
        assert local[0] == bed.peer.ip
    s = stats(bed.joy)
    assert s["datapath"]["service"]["delivered"] >= 2
    assert s["datapath"]["engine"]["rx_segments"] > 0


def test_accepted_socket_names_the_tcp_connection(service_bed: Testbed) -> None:
    bed = service_bed
    with bed.joy.inside():
        lsock = appclient.listen(8081, path=app_path(bed.joy))
    with lsock, peer_client(bed, 8081, timeout=30) as client:
        lsock.settimeout(10)
        conn, peer = lsock.accept()
        with conn:
            parsed = protocol.parse_name(peer)
            assert parsed is not None and parsed.remote is not None
            assert parsed.local == (bed.joy.ip, 8081)
            assert parsed.remote == client.getsockname()
            assert appclient.peer_of(conn) == (parsed.local, parsed.remote)


def test_not_accelerated_port_and_foreign_address(service_bed: Testbed) -> None:
    bed = service_bed
    with bed.joy.inside():
        with pytest.raises(appclient.NotAccelerated):
            appclient.listen(9999, path=app_path(bed.joy))
        with pytest.raises(appclient.NotAccelerated):
            appclient.listen(8082, ip="127.0.0.1", path=app_path(bed.joy))


def test_slow_reader_throttles_the_window(service_bed: Testbed) -> None:
    """An application that does not read: the kernel sender stalls (zero window), the
    service holds at most a bounded amount, and everything arrives once it reads."""
    bed = service_bed
    with bed.joy.inside():
        lsock = appclient.listen(8083, path=app_path(bed.joy))
    payload = os.urandom(32 << 20)
    sent = [0]
    with lsock:
        with bed.peer.inside():
            client = socket.create_connection((bed.joy.ip, 8083), timeout=30)
        lsock.settimeout(10)
        conn, _ = lsock.accept()

        def writer() -> None:
            view = memoryview(payload)
            while sent[0] < len(payload):
                sent[0] += client.send(view[sent[0]:sent[0] + (1 << 16)])

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        # Wait until the sender stalls.
        last = -1
        while sent[0] != last:
            last = sent[0]
            time.sleep(0.5)
        stalled_at = sent[0]
        assert stalled_at < len(payload) // 2, stalled_at
        held = stats(bed.joy)["datapath"]["pump_buffered_bytes"]
        assert held <= 2 * 64 * 1024
        got = hashlib.sha256()
        total = 0
        with conn:
            while total < len(payload):
                chunk = conn.recv(1 << 20)
                assert chunk, "EOF before the whole payload"
                got.update(chunk)
                total += len(chunk)
        t.join(30)
        client.close()
    assert got.digest() == hashlib.sha256(payload).digest()


def test_outgoing_connect_to_kernel_server(service_bed: Testbed) -> None:
    bed = service_bed
    with bed.peer.inside():
        server = socket.create_server(("0.0.0.0", 7000))
    payload = os.urandom(1 << 20)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            assert conn.recv(16) == b"thanks"

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    before = stats(bed.joy)["datapath"]["service"].get("connect_established", 0)
    with server:
        with bed.joy.inside():
            sock = appclient.connect(bed.peer.ip, 7000, path=app_path(bed.joy))
        with sock:
            local, remote = appclient.peer_of(sock) or ((None, 0), (None, 0))
            assert remote == (bed.peer.ip, 7000)
            assert 60000 <= local[1] <= 60999  # the service's ephemeral range
            got = bytearray()
            while chunk := sock.recv(1 << 16):
                got.extend(chunk)
            sock.sendall(b"thanks")
        t.join(10)
    assert bytes(got) == payload
    after = stats(bed.joy)["datapath"]["service"]["connect_established"]
    assert after == before + 1


def test_connect_refused(service_bed: Testbed) -> None:
    bed = service_bed
    with bed.joy.inside(), pytest.raises(ConnectionRefusedError):
        appclient.connect(bed.peer.ip, 7001, path=app_path(bed.joy))


def test_closed_listener_is_forgotten(service_bed: Testbed) -> None:
    bed = service_bed
    with bed.joy.inside():
        lsock = appclient.listen(8084, path=app_path(bed.joy))
    lsock.close()
    wait_for(lambda: "8084" not in stats(bed.joy)["datapath"]["listeners"], 5,
             "the service to forget the closed listener")
    with bed.peer.inside(), pytest.raises(ConnectionRefusedError):
        socket.create_connection((bed.joy.ip, 8084), timeout=10)
