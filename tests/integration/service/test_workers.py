"""``joyride attach --workers 2`` on a two-queue veth: each worker serves the flows of
its queue, and a flow the peer moves to the other queue follows, with every byte
checked by hash."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_helpers import app_path, attached, cli, service_pid, stats

from joyride.service import appclient
from joyride.testbed import Testbed

pytestmark = pytest.mark.integration

PORT = 8097
CONNECTIONS = 24
CHUNK = 64 * 1024


class Echo:
    """A thread per connection echoing what a Joyride listener's connections send."""

    def __init__(self, lsock: socket.socket) -> None:
        self.lsock = lsock
        self.threads: list[threading.Thread] = []
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.lsock.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            thread.start()
            self.threads.append(thread)

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(1 << 16):
                conn.sendall(data)


@contextlib.contextmanager
def echo_service(workers: str) -> Iterator[Testbed]:
    with Testbed(rx_queues=2) as bed, attached(bed, "--ports", str(PORT),
                                                "--workers", workers):
        with bed.joy.inside():
            lsock = appclient.listen(PORT, backlog=128, path=app_path(bed.joy))
        Echo(lsock)
        try:
            yield bed
        finally:
            lsock.close()


def exchange(sock: socket.socket, payload: bytes) -> None:
    """Send ``payload`` and read back its echo, compared by hash."""
    sender = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
    sender.start()
    got = bytearray()
    while len(got) < len(payload):
        chunk = sock.recv(1 << 16)
        assert chunk, f"EOF after {len(got)} of {len(payload)} bytes"
        got += chunk
    sender.join(30)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()


def test_two_workers_each_serve_their_queue() -> None:
    with echo_service("2") as bed:
        with bed.peer.inside():
            clients = [socket.create_connection((bed.joy.ip, PORT), timeout=30)
                       for _ in range(CONNECTIONS)]
        try:
            for sock in clients:
                exchange(sock, os.urandom(4 * CHUNK))
        finally:
            for sock in clients:
                sock.close()
        plane = stats(bed.joy)["datapath"]["dataplane"]
        workers = plane["workers"]
        assert len(workers) == 2
        # The peer's sockets pick a transmit queue by their hash, and its queue is the
        # one of ours they arrive on: 24 connections all on one queue is a 2^-23 chance.
        for worker in workers:
            assert worker["rx_fast"] > 0 and worker["established"] > 0, workers
        assert plane["established"] == sum(w["established"] for w in workers)
        queues = stats(bed.joy)["queues"]
        assert all(q["rx_frames"] > 0 for q in queues.values()), queues
        shown = cli(bed.joy, "stats", bed.joy.ifname).stdout
        assert "worker 0: flows" in shown and "worker 1: flows" in shown, shown
        metrics = cli(bed.joy, "metrics", bed.joy.ifname, "--once").stdout
        assert 'joyride_dataplane_worker_rx_fast_total{interface="' in metrics
        assert 'worker="1"} ' in metrics


def _set_xps(bed: Testbed) -> None:
    """The peer sends from CPU c on transmit queue c (XPS): which of our queues its
    segments reach follows the CPU its sender runs on."""
    for queue in (0, 1):
        path = f"/sys/class/net/{bed.peer.ifname}/queues/tx-{queue}/xps_cpus"
        bed.peer.run("sh", "-c", f"echo {1 << queue:x} > {path}")


@contextlib.contextmanager
def closing_all(socks: list[socket.socket]) -> Iterator[list[socket.socket]]:
    """``socks`` closed at the end, and this thread back on the CPUs it had."""
    before = os.sched_getaffinity(0)
    try:
        yield socks
    finally:
        os.sched_setaffinity(0, before)
        for sock in socks:
            sock.close()


def move_back_and_forth(bed: Testbed, socks: list[socket.socket], cpus: list[int],
                        moves: int) -> None:
    """With XPS on the peer, exchange on every connection from each CPU in turn: each
    exchange from the other CPU moves the flows to the other queue. Closes ``socks``."""
    _set_xps(bed)
    with closing_all(socks):
        for i in range(moves):
            os.sched_setaffinity(0, {cpus[i % 2]})
            for sock in socks:
                exchange(sock, os.urandom(CHUNK + i))


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to move on")
def test_a_flow_the_peer_moves_follows_to_the_other_worker() -> None:
    """Linux's TCP re-picks its transmit queue whenever nothing is in flight; with XPS,
    by the CPU it sends from. Each exchange from the other CPU moves the flow to the
    other worker, which takes it from the one that had it; the bytes stay whole."""
    cpus = sorted(os.sched_getaffinity(0))[:2]
    with echo_service("2") as bed:
        # The first connection is delivered by Python (the listener is verified then);
        # the second is born in C: a move takes the one back and claims the other. Both
        # handshakes before XPS, so that each flow starts on one worker (a split
        # handshake has its own test below).
        with bed.peer.inside():
            socks = [socket.create_connection((bed.joy.ip, PORT), timeout=30)]
        exchange(socks[0], b"verified")  # delivered: the port's listener is C's now
        with bed.peer.inside():
            socks.append(socket.create_connection((bed.joy.ip, PORT), timeout=30))
        exchange(socks[1], b"born")
        move_back_and_forth(bed, socks, cpus, moves=8)
        plane = stats(bed.joy)["datapath"]["dataplane"]
        assert plane["established"] >= 1, plane  # the second was born in C
        assert plane["migrated"] >= 8, plane
        assert all(w["rx_fast"] > 0 for w in plane["workers"]), plane["workers"]
        service = stats(bed.joy)["datapath"]["service"]
        assert service.get("plane_stray_reclaimed", 0) > 0, service
        assert service.get("plane_stray_claimed", 0) > 0, service
        assert service["plane_stray_reclaimed"] + service["plane_stray_claimed"] \
            == plane["migrated"]


def _pin_process(pid: int, cpu: int) -> None:
    """Every thread of process ``pid`` to ``cpu``."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), {cpu})


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to split on")
def test_a_handshake_split_across_workers_completes() -> None:
    """The peer's SYN leaves from CPU 0, so by queue 0 (XPS); the service, pinned to
    CPU 1, sends the SYN-ACK from there, and veth runs the peer's receive, which sends
    the handshake's ACK, on that CPU: queue 1. Worker 1 does not have the half-open
    flow; the hand-over gives the ACK to worker 0, which completes the handshake. (It
    was reset before: Python cannot take a half-open flow from C.)"""
    cpus = sorted(os.sched_getaffinity(0))[:2]
    with echo_service("2") as bed:
        pid = service_pid(bed)
        assert pid is not None
        with bed.peer.inside():  # the first connection verifies the listener (Python's)
            first = socket.create_connection((bed.joy.ip, PORT), timeout=30)
        exchange(first, b"verified")
        first.close()
        _set_xps(bed)
        _pin_process(pid, cpus[1])
        with closing_all([]) as socks:
            os.sched_setaffinity(0, {cpus[0]})
            with bed.peer.inside():
                for _ in range(6):
                    socks.append(socket.create_connection((bed.joy.ip, PORT), timeout=30))
            for i, sock in enumerate(socks):
                exchange(sock, os.urandom(CHUNK + i))
        plane = stats(bed.joy)["datapath"]["dataplane"]
        assert plane["forwarded"] >= 6 and plane["injected"] == plane["forwarded"], plane
        assert plane["forward_dropped"] == 0, plane
        assert plane["established"] >= 6, plane  # born in C, on the SYN's worker
        assert plane["workers"][0]["injected"] >= 6, plane["workers"]


def test_workers_refused_when_not_a_count() -> None:
    with Testbed() as bed:
        out = cli(bed.joy, "attach", bed.joy.ifname, "--ports", str(PORT),
                  "--workers", "0", check=False)
        assert out.returncode != 0 and "--workers 0" in out.stderr
        assert service_pid(bed) is None  # refused before anything started


def test_stats_watch_shows_each_workers_change() -> None:
    with echo_service("2") as bed:
        with bed.peer.inside():
            clients = [socket.create_connection((bed.joy.ip, PORT), timeout=30)
                       for _ in range(4)]
        try:
            for sock in clients:
                exchange(sock, os.urandom(CHUNK))
            total = sum(w["rx_frames"] for w in stats(bed.joy)["datapath"]["dataplane"]["workers"])
            time.sleep(0.3)  # the peer's delayed ACKs of the last echoes land first
            out = cli(bed.joy, "stats", bed.joy.ifname, "--watch", "0.2", "--count", "2").stdout
        finally:
            for sock in clients:
                sock.close()
        # Each report is the interval's change: the connections were idle by then, so a
        # few frames at most, against the exchange's hundreds.
        lines = [line.split() for line in out.splitlines() if line.strip().startswith("worker ")]
        assert len(lines) == 4, out
        frames = [int(words[words.index("rx_frames") + 1]) for words in lines]
        assert total > 100 and all(n <= 4 for n in frames), (total, out)


def test_capture_takes_every_workers_frames(tmp_path: Path) -> None:
    """A tap per worker, read as one pcap: every connection's bytes, from both queues,
    reassemble from the capture to what was sent."""
    from test_observe_capture import capturing, reassemble, tcp_payloads

    from joyride import pcap

    out = tmp_path / "workers.pcap"
    sent: dict[int, bytes] = {}
    with echo_service("2") as bed:
        with capturing(bed.joy, "-w", str(out), "tcp", "port", str(PORT)) as proc:
            with bed.peer.inside():
                clients = [socket.create_connection((bed.joy.ip, PORT), timeout=30)
                           for _ in range(CONNECTIONS)]  # both queues (all but surely)
            try:
                for sock in clients:
                    payload = os.urandom(CHUNK // 4)
                    exchange(sock, payload)
                    sent[sock.getsockname()[1]] = payload
            finally:
                for sock in clients:
                    sock.close()
        workers = stats(bed.joy)["datapath"]["dataplane"]["workers"]
    assert proc.stderr is not None and proc.returncode == 0, proc.stderr.read()
    data = out.read_bytes()
    assert len(list(pcap.records(data))) > 0
    for port, payload in sent.items():
        assert reassemble(tcp_payloads(data, port)) == payload
    assert all(w["rx_fast"] > 0 for w in workers), workers
