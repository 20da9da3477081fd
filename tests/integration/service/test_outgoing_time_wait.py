"""A client that closes first keeps each connection's 4-tuple in TIME-WAIT for 60 s; an
outgoing connection may take one over once its last timestamp is a second old
(dp_tw_reuse, as Linux's tcp_tw_reuse=1), so a narrow ephemeral range does not run
out. The client runs under ``joyride run --outgoing`` against a kernel server in the
peer namespace; every answer is checked."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from service_helpers import JOYRIDE, attached, stats, wait_port

from joyride.dataplane.plane import lib
from joyride.testbed import Testbed

pytestmark = pytest.mark.integration

RANGE = (61000, 61039)  # 40 ephemeral ports
DP_TW_REUSE_AFTER = int(lib.DP_TW_REUSE_AFTER) if lib is not None else 1
SERVER_PORT = 7095

# Echoes one message, then waits for the client's FIN: the client closes first.
SERVER = r'''
import socket, sys, threading
ls = socket.create_server(("0.0.0.0", int(sys.argv[1])), backlog=256)
def serve(c):
    with c:
        c.sendall(c.recv(100))
        c.recv(100)
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'''

# Two rounds of as many connections as the range has ports, a pause between them;
# prints the failures of each round, the local ports of the second, and the seconds the
# rounds took.
CLIENT = r'''
import socket, sys, time
ip, port, n, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
def round_of(tag):
    fails, ports = 0, set()
    for i in range(n):
        msg = b"%s-%d" % (tag, i)
        try:
            with socket.create_connection((ip, port), timeout=10) as s:
                ports.add(s.getsockname()[1])
                s.sendall(msg)
                assert s.recv(100) == msg
        except OSError as e:
            fails += 1
            print("fail", tag, i, e, file=sys.stderr)
    return fails, ports
t0 = time.monotonic()
first, _ = round_of(b"a")
time.sleep(pause)
second, ports = round_of(b"b")
spent = time.monotonic() - t0 - pause
print(first, second, len(ports), min(ports, default=0), max(ports, default=0), spent)
'''


@pytest.fixture(scope="module")
def narrow_bed() -> Iterator[Testbed]:
    with Testbed() as bed, attached(bed, "--ports", "8080",
                                    "--ephemeral", f"{RANGE[0]}-{RANGE[1]}"):
        bed.peer.popen(sys.executable, "-c", SERVER, str(SERVER_PORT),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(bed.joy, bed.peer.ip, SERVER_PORT)
        yield bed


def test_a_client_that_closes_first_reuses_time_wait(narrow_bed: Testbed) -> None:
    bed = narrow_bed
    time.sleep(1.5)  # TIME-WAITs another test left may be taken over now
    n = RANGE[1] - RANGE[0] + 1
    proc = bed.joy.run(JOYRIDE, "run", "--outgoing", "--", sys.executable, "-c", CLIENT,
                       bed.peer.ip, str(SERVER_PORT), str(n), "1.5", timeout=180)
    first, second, used, low, high = (int(x) for x in proc.stdout.split()[:5])
    # The first round takes every port (each then in TIME-WAIT for a minute); the
    # second, a second and a half later, takes them over, each answer checked.
    assert (first, second) == (0, 0), proc.stderr.decode()[-2000:]
    assert b"joyride:" not in proc.stderr  # the service carried them, no fallback
    assert used == n and (low, high) == RANGE
    plane = stats(bed.joy)["datapath"]["dataplane"]
    assert int(plane["tw_taken_over"]) >= n, plane


def test_a_time_wait_younger_than_a_second_is_kept(narrow_bed: Testbed) -> None:
    """Without the pause the second round finds every port in a TIME-WAIT of the first
    round's, whose last timestamp is fresh: none may be taken, and the connects fail as
    the kernel's do when its range is spent (EADDRNOTAVAIL). (The first round succeeds
    whatever another test left: free ports, or TIME-WAITs a second and a half old.)"""
    bed = narrow_bed
    time.sleep(1.5)  # TIME-WAITs another test left may be taken over now
    n = RANGE[1] - RANGE[0] + 1
    proc = bed.joy.run(JOYRIDE, "run", "--outgoing", "--", sys.executable, "-c", CLIENT,
                       bed.peer.ip, str(SERVER_PORT), str(n), "0", timeout=180, check=False)
    *counts, spent = proc.stdout.split()
    if float(spent) > DP_TW_REUSE_AFTER - 0.1:
        # (Both rounds take about 0.1 s: only a stalled machine gets here.)
        pytest.skip("the rounds took longer than a TIME-WAIT must age")
    first, second = int(counts[0]), int(counts[1])
    assert first == 0, proc.stderr.decode()[-2000:]
    assert second == n, proc.stderr.decode()[-2000:]
    assert b"Cannot assign requested address" in proc.stderr
