"""The engine against the Linux kernel's TCP across a veth pair (steered by XDP)."""

from __future__ import annotations

import select
import threading

import pytest
from peers import digest, peer_client, random_payload, roundtrip

import xsk
from joyride.engine import Engine, KernelNetwork
from joyride.engine.xsknic import XskNic
from joyride.steer import LISTEN, PortSet, Steering
from joyride.tcp.connection import TcpConnection
from joyride.testbed import Impairment, Testbed

pytestmark = pytest.mark.integration

PORT = 8080


class EchoServer:
    """An engine in a thread that echoes every connection on PORT (test harness)."""

    def __init__(self, bed: Testbed) -> None:
        self.bed = bed
        self.stop = threading.Event()
        self.error: BaseException | None = None
        with bed.joy.inside():
            self.steering = Steering(bed.joy.ifname)
            self.steering.attach("native")
            self.steering.add_ports(PortSet([PORT]), "tcp", LISTEN)
            self.sock = xsk.Socket(bed.joy.ifname, 0, mode="native")
            self.steering.register_socket(0, self.sock.fileno())
            self.network = KernelNetwork(bed.joy.ifname)
        self.engine = Engine(XskNic(self.sock, self.network.mtu), self.network)
        self.listener = self.engine.listen(PORT)
        self.conns: list[TcpConnection] = []
        self.backlog: dict[TcpConnection, bytes] = {}  # received, not yet echoed
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                deadline = self.engine.next_deadline()
                now = self.engine.clock()
                timeout = 0.05 if deadline is None else max(0.0, min(deadline - now, 0.05))
                select.select([self.sock.fileno()], [], [], timeout)
                activity = self.engine.poll()
                if self.listener in activity.listeners:
                    while (conn := self.engine.accept(self.listener)) is not None:
                        self.conns.append(conn)
                for conn in self.conns:
                    # Echo what fits in the send buffer; the rest waits in the backlog,
                    # and reading stops while it is large (flow control end to end).
                    pending = self.backlog.get(conn, b"")
                    if len(pending) < 1 << 20:
                        pending += conn.recv(1 << 20)
                    if pending:
                        pending = pending[conn.send(pending):]
                    self.backlog[conn] = pending
                    if conn.eof and not pending:
                        conn.close()
                    self.engine.mark(conn)
                self.engine.flush()
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def __enter__(self) -> EchoServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.engine.close()
        self.network.close()
        self.sock.close()
        self.steering.close()
        if self.error is not None:
            raise self.error


def test_kernel_client_echo_hash(testbed: Testbed) -> None:
    payload = random_payload(2 << 20)
    with EchoServer(testbed) as server, peer_client(testbed, PORT) as sock:
        echoed = roundtrip(sock, payload)
    assert digest(echoed) == digest(payload)
    assert server.engine.counters["rx_segments"] > 0


@pytest.mark.parametrize("impairment", [
    Impairment(loss=0.02),
    Impairment(reorder=0.05, delay=0.002),
    Impairment(duplicate=0.05, corrupt=0.02),
], ids=["loss", "reorder", "dup+corrupt"])
def test_echo_under_impairments(make_testbed: object, impairment: Impairment) -> None:
    bed = make_testbed(to_joy=impairment, seed=3)  # type: ignore[operator]
    payload = random_payload(512 << 10)
    with EchoServer(bed), peer_client(bed, PORT, timeout=60) as sock:
        echoed = roundtrip(sock, payload)
    assert digest(echoed) == digest(payload)
