"""A ring-mode connection sends straight from its tx ring (docs/channels.md, "Sending
straight from tx"): the data plane takes the application's bytes in place, sends them
from the shared ring and gives their space back only when the peer acknowledges them.
A writer that fills tx has its bytes copied out instead, and copies from then on
(chan_tx_copied). Each case is checked end to end by SHA-256 against a kernel client:
replies that leave tx borrowed, a writer that closes at once with its last bytes still
unacknowledged, a stalled reader, and loss, which hands flows with borrowed rings back
to Python and takes them back."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from service_helpers import JOYRIDE, attached, stats, wait_port
from test_run_ring_mode import RING_ENV

from joyride.processes import terminate
from joyride.testbed import Impairment, Testbed

pytestmark = pytest.mark.integration

# One connection a request: "reply SIZE ROUNDS" (a block per one-byte request) or "bulk
# SIZE ROUNDS" (every block at once, after SO_SNDBUF of 2 MiB); then close at once.
SERVER = r'''
import hashlib, socket, sys
ls = socket.create_server(("0.0.0.0", int(sys.argv[1])))
def block(i, size):
    return (hashlib.sha256(b"%d" % i).digest() * (size // 32 + 1))[:size]
while True:
    c, _ = ls.accept()
    with c:
        words = c.recv(100).decode().split()
        if len(words) != 3:  # wait_port's probe
            continue
        mode, size, rounds = words[0], int(words[1]), int(words[2])
        if mode == "bulk":
            c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 << 20)
        for i in range(rounds):
            if mode == "reply" and i and not c.recv(1):
                break
            c.sendall(block(i, size))
'''

CLIENT = r'''
import hashlib, socket, sys, time
ip, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
size, rounds, stall = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
def block(i, size):
    return (hashlib.sha256(b"%d" % i).digest() * (size // 32 + 1))[:size]
want = hashlib.sha256(b"".join(block(i, size) for i in range(rounds))).hexdigest()
s = socket.create_connection((ip, port))
s.sendall(f"{mode} {size} {rounds}".encode())
time.sleep(stall)  # a reader that stalls: its window closes, tx fills
got, seen = hashlib.sha256(), 0
while True:
    if mode == "reply" and seen and seen % size == 0 and seen < size * rounds:
        s.sendall(b"?")
    chunk = s.recv(1 << 20)
    if not chunk:
        break
    got.update(chunk)
    seen += len(chunk)
print(seen == size * rounds and got.hexdigest() == want, seen)
'''


def plane(bed: Testbed) -> dict[str, int]:
    doc = stats(bed.joy)["datapath"]["dataplane"]
    return {k: int(v) for k, v in doc.items() if isinstance(v, int)}


def exchange(bed: Testbed, port: int, mode: str, size: int, rounds: int,
             stall: float = 0.0) -> None:
    out = bed.peer.run(sys.executable, "-c", CLIENT, bed.joy.ip, str(port), mode, str(size),
                       str(rounds), str(stall), timeout=120).stdout.decode().split()
    assert out[:1] == ["True"], (mode, size, rounds, out)


@pytest.fixture
def server(service_bed: Testbed) -> Iterator[int]:
    port = 8095
    proc = service_bed.joy.popen(JOYRIDE, "run", "--", sys.executable, "-c", SERVER, str(port),
                                 env=RING_ENV, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    try:
        wait_port(service_bed.peer, service_bed.joy.ip, port)
        yield port
    finally:
        terminate([proc], 5.0)


def test_replies_go_from_tx_in_place(service_bed: Testbed, server: int) -> None:
    before = plane(service_bed)
    exchange(service_bed, server, "reply", 100_000, 30)
    exchange(service_bed, server, "reply", 1, 3)
    after = plane(service_bed)
    # Each connection's send ring became its tx, and no reply filled tx.
    assert after["chan_tx_borrowed"] - before.get("chan_tx_borrowed", 0) >= 2, after
    assert after.get("chan_tx_copied", 0) == before.get("chan_tx_copied", 0), after
    assert after["chan_broken"] == before.get("chan_broken", 0)


def test_a_stalled_reader_and_a_bulk_writer(service_bed: Testbed, server: int) -> None:
    """The reader stalls for a second: the writer fills tx, so what TCP holds is copied
    out and the flow copies from then on; its SO_SNDBUF of 2 MiB makes the filler long
    (the livelock this test found: docs/channels.md, "The fill stops when room
    comes"). The writer then closes with bytes unacknowledged."""
    before = plane(service_bed)
    exchange(service_bed, server, "bulk", 1 << 20, 8, stall=1.0)
    after = plane(service_bed)
    assert after["chan_tx_copied"] - before.get("chan_tx_copied", 0) >= 1, after
    assert after["chan_broken"] == before.get("chan_broken", 0)


@pytest.fixture
def lossy_bed(make_testbed: object) -> Iterator[Testbed]:
    loss = Impairment(loss=0.03)
    bed = make_testbed(to_joy=loss, to_peer=loss, seed=11)  # type: ignore[operator]
    with attached(bed, "--ports", "8096"):
        yield bed


def test_loss_hands_borrowed_rings_back_and_forth(lossy_bed: Testbed) -> None:
    bed = lossy_bed
    proc = bed.joy.popen(JOYRIDE, "run", "--", sys.executable, "-c", SERVER, "8096",
                         env=RING_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(bed.peer, bed.joy.ip, 8096)
        before = plane(bed)
        exchange(bed, 8096, "reply", 100_000, 20)
        exchange(bed, 8096, "bulk", 1 << 20, 4)
        after = plane(bed)
    finally:
        terminate([proc], 5.0)
    assert after["chan_tx_borrowed"] - before.get("chan_tx_borrowed", 0) >= 2, after
    # Losses were recovered in Python: flows left C with their rings and came back.
    assert after["flows_released"] - before.get("flows_released", 0) >= 1, after
    assert after["flows_adopted"] - before.get("flows_adopted", 0) >= 1, after
