"""The veth test bed: connectivity, each impairment at the rate asked, and cleanup."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from joyride.testbed import Impairment, Testbed, list_namespaces, sweep
from joyride.testbed.bed import PREFIX
from joyride.testbed.impair import CORRUPT_OFFSET

pytestmark = pytest.mark.integration

UDP_PORT = 40_000
PAYLOAD = 400  # > the corruption offset (134 bytes into the frame), so every frame can be hit


def within(observed: float, p: float, n: int, sigmas: float = 5.0) -> bool:
    """Is a binomial rate ``observed`` (over n trials) within ``sigmas`` of ``p``?"""
    sd = math.sqrt(max(p * (1 - p), 1e-9) / n)
    return abs(observed - p) <= sigmas * sd + 1e-9


@contextlib.contextmanager
def udp_pair(bed: Testbed) -> Iterator[tuple[socket.socket, socket.socket]]:
    """(sender in the peer namespace, receiver in the joy namespace)."""
    with bed.joy.inside():
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with bed.peer.inside():
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        rx.bind((bed.joy.ip, UDP_PORT))
        rx.settimeout(1.0)
        yield tx, rx
    finally:
        tx.close()
        rx.close()


def send_numbered(tx: socket.socket, dst: str, count: int, pace_every: int = 50) -> None:
    # From one CPU, as the relay sends (relay.py): veth queues each frame on the backlog
    # of the CPU that sent it, so a sender that migrated during a pause could have two
    # frames swapped before the relay saw them, a reordering nobody counts (CI once
    # measured 309 late frames against the relay's 304).
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        for i in range(count):
            tx.sendto(i.to_bytes(4, "big") + bytes(PAYLOAD - 4), (dst, UDP_PORT))
            if i % pace_every == pace_every - 1:
                time.sleep(0.0005)  # stay far below the relay's and the socket buffer's limits
    finally:
        os.sched_setaffinity(0, cpus)


def receive_all(rx: socket.socket) -> list[bytes]:
    got: list[bytes] = []
    with contextlib.suppress(TimeoutError):
        while True:
            got.append(rx.recv(4096))
    return got


def udp_csum_errors(bed: Testbed) -> int:
    out = bed.joy.run("cat", "/proc/net/snmp").stdout.decode()
    head, values = [line.split() for line in out.splitlines() if line.startswith("Udp:")][:2]
    return int(values[head.index("InCsumErrors")])


def test_namespaces_reach_each_other(testbed: Testbed) -> None:
    out = testbed.peer.run("ping", "-c", "3", "-i", "0.2", "-W", "2", testbed.joy.ip).stdout
    assert b" 0% packet loss" in out


def test_kernel_tcp_echo_across_the_link(testbed: Testbed) -> None:
    with testbed.joy.inside():
        server = socket.create_server((testbed.joy.ip, 7007))
    with testbed.peer.inside():
        client = socket.create_connection((testbed.joy.ip, 7007), timeout=5)
    with server, client:
        conn, addr = server.accept()
        with conn:
            assert addr[0] == testbed.peer.ip
            message = bytes(range(256)) * 64
            client.sendall(message)
            received = b""
            while len(received) < len(message):
                received += conn.recv(65536)
            conn.sendall(received)
            echoed = b""
            while len(echoed) < len(message):
                echoed += client.recv(65536)
    assert echoed == message


def test_mtu_and_queues_are_applied(make_testbed: object) -> None:
    bed = make_testbed(mtu=3000, rx_queues=2)  # type: ignore[operator]
    link = bed.joy.run("ip", "-d", "link", "show", bed.joy.ifname).stdout.decode()
    assert "mtu 3000" in link
    assert "numrxqueues 2" in link
    features = bed.peer.run("ethtool", "-k", bed.peer.ifname).stdout.decode()
    assert "tx-checksumming: off" in features


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_loss_rate(make_testbed: object, p: float) -> None:
    bed = make_testbed(to_joy=Impairment(loss=p))  # type: ignore[operator]
    n = 4000
    with udp_pair(bed) as (tx, rx):
        send_numbered(tx, bed.joy.ip, n)
        got = receive_all(rx)
    lost = 1 - len(got) / n
    assert within(lost, p, n), f"asked {p}, measured {lost:.4f}"


def netstat_counter(node: object, name: str) -> int:
    """One counter of ``/proc/net/netstat`` or ``/proc/net/snmp`` in ``node``'s namespace."""
    out = node.run("nstat", "-az", name).stdout.decode()  # type: ignore[attr-defined]
    match = re.search(rf"^{name}\s+(\d+)", out, re.MULTILINE)
    assert match, f"{name} missing from nstat: {out!r}"
    return int(match.group(1))


def test_tcp_loss_towards_joy_is_network_loss(make_testbed: object) -> None:
    """A TCP receiver behind ``to_joy`` loss sees gaps, and the sender retransmits.

    A drop in the sender's own egress hook would not: Linux TCP learns of it from
    dev_queue_xmit and sends the segment again in order, so nothing reaches the receiver
    out of order and nothing is retransmitted (the bed's bug before the middle namespace).
    """
    bed = make_testbed(to_joy=Impairment(loss=0.02), seed=3)  # type: ignore[operator]
    assert bed.middle_ns is not None and bed.relay_proc is None  # a bridge, no relay
    payload = hashlib.sha256(b"joyride").digest() * (4 << 20 >> 5)  # 4 MiB
    with bed.joy.inside():
        server = socket.create_server((bed.joy.ip, 7008))
    with bed.peer.inside():
        client = socket.create_connection((bed.joy.ip, 7008), timeout=20)
    received = hashlib.sha256()
    with server, client:
        conn, _ = server.accept()
        conn.settimeout(20)
        with conn:
            sender = threading.Thread(target=lambda: (client.sendall(payload),
                                                      client.shutdown(socket.SHUT_WR)))
            sender.start()
            while chunk := conn.recv(1 << 16):
                received.update(chunk)
            sender.join(20)
    assert received.digest() == hashlib.sha256(payload).digest()
    assert netstat_counter(bed.joy, "TcpExtTCPOFOQueue") > 0, "the receiver saw no gap"
    assert netstat_counter(bed.peer, "TcpRetransSegs") > 0, "the sender retransmitted nothing"


def test_duplication_rate(make_testbed: object) -> None:
    p = 0.2
    bed = make_testbed(to_joy=Impairment(duplicate=p))  # type: ignore[operator]
    n = 4000
    with udp_pair(bed) as (tx, rx):
        send_numbered(tx, bed.joy.ip, n)
        got = receive_all(rx)
    assert {int.from_bytes(g[:4], "big") for g in got} == set(range(n))
    duplicated = (len(got) - n) / n
    assert within(duplicated, p, n), f"asked {p}, measured {duplicated:.4f}"


def test_corruption_rate_and_detection(make_testbed: object) -> None:
    p = 0.15
    bed = make_testbed(to_joy=Impairment(corrupt=p), seed=11)  # type: ignore[operator]
    n = 3000
    before = udp_csum_errors(bed)
    with udp_pair(bed) as (tx, rx):
        send_numbered(tx, bed.joy.ip, n, pace_every=20)
        got = receive_all(rx)
    caught = udp_csum_errors(bed) - before
    # Every corrupted frame fails its checksum (the byte flip leaves the sum stale) and
    # nothing corrupted is delivered.
    assert caught + len(got) == n
    assert all(g[4:] == bytes(PAYLOAD - 4) for g in got)
    assert within(caught / n, p, n), f"asked {p}, measured {caught / n:.4f}"
    assert bed.relay_stats()["to_joy"]["corrupted"] == caught


SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>; Python's socket module does not name it


def test_tcp_corruption_is_caught_by_checksums(make_testbed: object) -> None:
    """The flip happens after Linux finished the TCP checksum: the receiver rejects it.

    (The kernel on the receiving veth trusts checksums, so the peer is an AF_PACKET
    socket here that checks each TCP checksum itself.)
    """
    from joyride.wire.errors import ParseError
    from joyride.wire.frame import parse_frame

    bed = make_testbed(to_joy=Impairment(corrupt=0.3), seed=5)  # type: ignore[operator]
    with bed.joy.inside():
        tap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
        # Room for every frame of the transfer, retransmissions included: the tap is read
        # after the transfer, and a frame it dropped would be one the relay counted.
        tap.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
        tap.bind((bed.joy.ifname, 0))
        tap.settimeout(0.5)
        server = socket.create_server((bed.joy.ip, 7009))
    with bed.peer.inside():
        # 30% of the frames toward the server are lost to their checksums, and the
        # sender's RTO backs off. The bound is time, generous, and the counts below are
        # the test.
        client = socket.create_connection((bed.joy.ip, 7009), timeout=30)
    conn, _ = server.accept()
    received = 0

    def drain() -> None:
        # The server reads everything: a receiver that does not read closes its window,
        # and a sender whose cwnd the corruption kept small then waits on it for ever
        # (sendall of 200 KB timed out in CI that way, one run in many).
        nonlocal received
        conn.settimeout(30)
        while data := conn.recv(1 << 16):
            received += len(data)

    reader = threading.Thread(target=drain)
    reader.start()
    with tap, server, client, conn:
        client.sendall(bytes(200_000))
        client.shutdown(socket.SHUT_WR)
        reader.join(60)
        assert not reader.is_alive() and received == 200_000
        bad = good = 0
        with contextlib.suppress(TimeoutError):
            while True:
                frame = tap.recv(65536)
                if len(frame) <= CORRUPT_OFFSET:
                    continue  # never corrupted (the relay flips a payload byte past this)
                try:
                    parse_frame(frame)
                    good += 1
                except ParseError as exc:
                    assert exc.reason == "tcp_bad_checksum"
                    bad += 1
    assert bad > 0 and good > 0
    assert bad == bed.relay_stats()["to_joy"]["corrupted"]


def rtt_ms(bed: Testbed, count: int = 10) -> float:
    out = bed.peer.run("ping", "-c", str(count), "-i", "0.05", "-W", "2", bed.joy.ip).stdout
    m = re.search(rb"= ([\d.]+)/([\d.]+)/", out)
    assert m, out
    return float(m.group(1))  # the minimum: the delay, not the scheduler's noise


def test_delay_is_added_both_ways(make_testbed: object) -> None:
    bed = make_testbed(to_joy=Impairment(delay=0.020), to_peer=Impairment(delay=0.010))  # type: ignore[operator]
    rtt = rtt_ms(bed)
    assert 30.0 <= rtt <= 40.0, f"asked 30 ms round trip, measured {rtt} ms"
    stats = bed.relay_stats()
    mean_to_joy = stats["to_joy"]["delay_total"] / stats["to_joy"]["forwarded"]
    assert 0.020 <= mean_to_joy <= 0.030


def test_reordering_rate(make_testbed: object) -> None:
    p = 0.1
    bed = make_testbed(to_joy=Impairment(reorder=p), seed=7)  # type: ignore[operator]
    n = 3000
    with udp_pair(bed) as (tx, rx):
        send_numbered(tx, bed.joy.ip, n, pace_every=20)
        got = [int.from_bytes(g[:4], "big") for g in receive_all(rx)]
    assert sorted(got) == list(range(n))  # reordered, never lost or duplicated
    # A held-back frame arrives after its successor: count frames smaller than one before.
    late = sum(1 for prev, cur in itertools.pairwise(got) if cur < prev)
    assert within(late / n, p, n), f"asked {p}, measured {late / n:.4f}"
    # The relay's own count also covers the odd ARP frame, never fewer than observed.
    assert late <= bed.relay_stats()["to_joy"]["reordered"] <= late + 5


def test_rate_limit(make_testbed: object) -> None:
    rate = 20_000_000
    bed = make_testbed(to_joy=Impairment(rate_bps=rate))  # type: ignore[operator]
    with bed.joy.inside():
        server = socket.create_server((bed.joy.ip, 7008))
    received = 0

    def drain() -> None:
        nonlocal received
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(1 << 16):
                received += len(data)

    reader = threading.Thread(target=drain)
    reader.start()
    with bed.peer.inside():
        client = socket.create_connection((bed.joy.ip, 7008), timeout=5)
    chunk = bytes(65536)
    start = time.monotonic()
    with client:
        while time.monotonic() - start < 2.0:
            client.sendall(chunk)
    reader.join(10)
    elapsed = time.monotonic() - start
    server.close()
    sent = received
    measured = sent * 8 / elapsed
    assert 0.75 * rate <= measured <= 1.25 * rate, f"asked {rate}, measured {measured:.0f} bit/s"


def test_teardown_after_a_failing_body_leaves_nothing() -> None:
    names: list[str] = []
    with pytest.raises(RuntimeError, match="body failed"), Testbed(
        to_joy=Impairment(loss=0.1, delay=0.001)
    ) as bed:
        names = [bed.joy.netns, bed.peer.netns, str(bed.middle_ns)]
        assert all(n in list_namespaces() for n in names)
        raise RuntimeError("body failed")
    assert not set(names) & set(list_namespaces())
    assert bed.relay_proc is None
    root_links = subprocess.run(["ip", "-o", "link"], capture_output=True, check=True).stdout
    assert f"{PREFIX}{bed.tag}".encode() not in root_links


def test_sweep_removes_leftovers_of_dead_runs_only(testbed: Testbed) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = f"{PREFIX}-{dead.pid}-abcdef-joy"
    subprocess.run(["ip", "netns", "add", leftover], check=True)
    try:
        removed = sweep()
        assert leftover in removed
        assert testbed.joy.netns in list_namespaces()  # a live run's bed is kept
    finally:
        subprocess.run(["ip", "netns", "delete", leftover], capture_output=True)
