"""The service's data path without privileges: the engine over an in-memory wire to a
peer engine, the real application socket and the Python client in threads."""

from __future__ import annotations

import contextlib
import hashlib
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from joyride.engine.engine import Engine
from joyride.engine.network import StaticNetwork
from joyride.engine.nic import MemoryNic
from joyride.service import appclient, apps, protocol
from joyride.service.datapath import Datapath, pop_due
from joyride.service.pump import CHUNK
from joyride.steer.ports import PortSet
from joyride.tcp.config import TcpConfig

IP_SVC, IP_PEER = socket.inet_aton("10.9.0.1"), socket.inet_aton("10.9.0.2")
MAC_SVC, MAC_PEER = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
PORT = 47123  # unusual: the data path also adopts host listeners of this port
SPIN_TIMEOUT = 20.0  # seconds: generous, a bound on a failing test, not a speed limit


class Wire:
    def __init__(self, tmp: Path) -> None:
        svc_nic, peer_nic = MemoryNic.pair()
        self.path = tmp / "app.sock"
        self.app_socket = apps.listen_app_socket(self.path, None)
        self.dp = Datapath([svc_nic], StaticNetwork("svc0", MAC_SVC, frozenset({IP_SVC}),
                                                    {IP_PEER: MAC_PEER}),
                           ports=PortSet([PORT]), ephemeral=PortSet(range(60000, 60100)),
                           app_socket=self.app_socket, group=os.getgid())
        self.sel = selectors.DefaultSelector()
        self.dp.register(self.sel)
        self.peer = Engine(peer_nic, StaticNetwork("peer0", MAC_PEER, frozenset({IP_PEER}),
                                                   {IP_SVC: MAC_SVC}),
                           TcpConfig(nodelay=True))

    def spin(self, until: Callable[[], object], timeout: float = SPIN_TIMEOUT) -> None:
        """Step both ends until ``until()`` holds, for at most ``timeout`` seconds.

        Bounded by time, not by a count of iterations: a condition may wait for a
        client thread, which runs only when this loop lets go of the GIL (a count
        that suffices on one machine starves the thread on a faster or busier one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for key, mask in self.sel.select(0):
                key.data(mask)
            self.dp.step()
            self.peer.poll()
            self.peer.flush()
            if until():
                return
            time.sleep(0)  # let a waiting client thread take the GIL
        raise AssertionError(f"condition not reached in {timeout} s")

    def in_thread(self, fn: Callable[[], Any]) -> dict[str, Any]:
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:
                box["error"] = exc

        threading.Thread(target=run, daemon=True).start()
        return box

    def close(self) -> None:
        self.dp.close()
        self.app_socket.close()
        self.sel.close()


@pytest.fixture
def wire(tmp_path: Path) -> Iterator[Wire]:
    w = Wire(tmp_path)
    try:
        yield w
    finally:
        w.close()


def collect(into: bytearray, data: bytes) -> bytes:
    """Append ``data``; everything collected so far (for ``spin`` predicates)."""
    into.extend(data)
    return bytes(into)


def listen(wire: Wire) -> socket.socket:
    box = wire.in_thread(lambda: appclient.listen(PORT, path=wire.path))
    wire.spin(lambda: box)
    assert "error" not in box, box
    lsock: socket.socket = box["value"]
    lsock.setblocking(False)
    return lsock


def test_listen_deliver_exchange_and_half_close(wire: Wire) -> None:
    lsock = listen(wire)
    conn = wire.peer.connect(IP_SVC, PORT)
    wire.spin(lambda: wire.dp.counters["delivered"] == 1)
    app, peer_name = lsock.accept()
    app.setblocking(False)
    parsed = protocol.parse_name(peer_name)
    assert parsed is not None and parsed.remote == ("10.9.0.2", conn.local_port)
    conn.send(b"hello")
    wire.peer.mark(conn)
    got = bytearray()

    def read_app() -> bool:
        with contextlib.suppress(BlockingIOError):
            got.extend(app.recv(100))
        return bytes(got) == b"hello"

    wire.spin(read_app)
    app.sendall(b"world")
    echoed = bytearray()
    wire.spin(lambda: collect(echoed, conn.recv()) == b"world")
    tcp = wire.dp.stats()["tcp"]  # every live connection's counters, summed
    assert tcp["segments_received"] >= 2 and tcp["segments_sent"] >= 1
    app.shutdown(socket.SHUT_WR)  # FIN towards the peer
    wire.spin(lambda: conn.eof)
    conn.close()
    wire.peer.mark(conn)

    def app_eof() -> bool:
        try:
            return app.recv(10) == b""
        except BlockingIOError:
            return False

    wire.spin(app_eof)
    app.close()
    wire.spin(lambda: not wire.dp.pumps)
    lsock.close()


def test_slow_reader_bounds_memory_then_delivers_everything(wire: Wire) -> None:
    lsock = listen(wire)
    conn = wire.peer.connect(IP_SVC, PORT)
    wire.spin(lambda: wire.dp.counters["delivered"] == 1)
    app, _ = lsock.accept()
    payload = os.urandom(6 << 20)
    offset = 0
    for _ in range(3000):  # the peer keeps writing; the application does not read
        offset += conn.send(payload[offset:offset + 65536])
        wire.peer.mark(conn)
        wire.spin(lambda: True)
    [pump] = wire.dp.pumps.values()
    assert offset < len(payload)  # the sender is blocked: the window closed
    assert pump.buffered <= 2 * CHUNK
    digest, total = hashlib.sha256(), 0
    app.setblocking(False)
    while total < len(payload):
        if offset < len(payload):
            offset += conn.send(payload[offset:offset + 65536])
            wire.peer.mark(conn)
        wire.spin(lambda: True)
        try:
            while chunk := app.recv(1 << 20):
                digest.update(chunk)
                total += len(chunk)
        except BlockingIOError:
            pass
    assert digest.digest() == hashlib.sha256(payload).digest()
    app.close()
    lsock.close()


def test_outgoing_connect_and_refusal(wire: Wire) -> None:
    server = wire.peer.listen(9000)
    box = wire.in_thread(lambda: appclient.connect("10.9.0.2", 9000, path=wire.path))
    wire.spin(lambda: box)
    assert "error" not in box, box
    sock: socket.socket = box["value"]
    peer_conn = wire.peer.accept(server)
    assert peer_conn is not None
    assert appclient.peer_of(sock) == (("10.9.0.1", peer_conn.remote_port),
                                       ("10.9.0.2", 9000))
    sock.sendall(b"outgoing")
    got = bytearray()
    wire.spin(lambda: collect(got, peer_conn.recv()) == b"outgoing")
    sock.close()
    refused = wire.in_thread(lambda: appclient.connect("10.9.0.2", 9001, path=wire.path))
    wire.spin(lambda: refused)
    assert isinstance(refused.get("error"), ConnectionRefusedError)
    assert wire.dp.counters["connect_failed"] == 1


def test_loopback_and_unaccelerated_ports_go_to_the_kernel(wire: Wire) -> None:
    for call in (lambda: appclient.connect("127.0.0.1", 80, path=wire.path),
                 lambda: appclient.listen(PORT + 1, path=wire.path)):
        box = wire.in_thread(call)
        wire.spin(lambda box=box: box)  # type: ignore[misc]
        assert isinstance(box.get("error"), appclient.NotAccelerated)


def test_bad_requests_are_counted_not_raised(wire: Wire) -> None:
    for junk in (b"", b"x", b"JRD1" + bytes(200), os.urandom(124)):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(str(wire.path))
        if junk:
            s.send(junk)
        s.close()
    wire.spin(lambda: wire.dp.counters["app_bad_request"] >= 2, timeout=SPIN_TIMEOUT)
    # A listen whose name does not match the caller is refused with EINVAL.
    name = protocol.listener_name(bytes(4), PORT, os.getpid() + 1, 0)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(str(wire.path))
    s.send(protocol.Request(protocol.OP_LISTEN, bytes(4), PORT, name).encode())
    wire.spin(lambda: wire.dp.counters["listen_bad_name"] == 1)
    reply = protocol.Reply.decode(s.recv(64))
    assert reply.status == 22  # EINVAL
    s.close()


def test_budget_spent_pump_comes_back_and_delivers_eof(wire: Wire) -> None:
    """Regression: a pump whose budget ran out with bytes still in the TCP receive buffer
    was only serviced again on new TCP activity or EVENT_WRITE. Once the peer's FIN had
    arrived there was neither (the application's socket had room), so the rest of the
    data and the end-of-stream never reached the application: the bulk test's stall."""
    wire.dp.pump_budget = 1  # one chunk per step: the budget runs out at once
    lsock = listen(wire)
    conn = wire.peer.connect(IP_SVC, PORT)
    wire.spin(lambda: wire.dp.counters["delivered"] == 1)
    app, _ = lsock.accept()
    app.setblocking(False)
    payload = os.urandom(4 * CHUNK)
    offset = 0
    while offset < len(payload):  # the application is not reading yet
        offset += conn.send(payload[offset:])
        wire.peer.mark(conn)
        wire.spin(lambda: True)
    conn.shutdown_write()
    wire.peer.mark(conn)
    [pump] = wire.dp.pumps.values()
    wire.spin(lambda: pump.conn.eof)
    got = bytearray()
    eof = [False]

    def drained() -> bool:
        try:
            while chunk := app.recv(1 << 20):
                got.extend(chunk)
            eof[0] = True
        except BlockingIOError:
            pass
        return eof[0]

    # The peer has nothing more to send: only the service loop can finish the job.
    wire.spin(drained, timeout=SPIN_TIMEOUT)
    assert bytes(got) == payload
    app.close()
    lsock.close()


def test_mss_probes_due_are_taken_once() -> None:
    """The service's watch of connections in C with an MSS probe to make (RFC 4821 §7):
    each sweep takes out those due, once; the others wait."""
    watch = {"due": 1000.0, "later": 1600.0, "overdue": 10.0}
    assert pop_due(watch, 999.0) == ["overdue"]
    assert pop_due(watch, 1000.5) == ["due"] and watch == {"later": 1600.0}
    assert pop_due(watch, 1000.5) == []
