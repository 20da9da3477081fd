"""Both ends write and neither reads: the classic mutual write block, on a ring-mode
connection (docs/channels.md, "A writer blocked with rx full"). The application fills
tx and sleeps in poll(POLLOUT) on its filler; the kernel client fills its own window
and the service's receive ring, so the service holds bytes for an rx that is full.
That is a state a real proxy meets whenever both of its peers stall.

Before the fix the service kept watching the application's socket for rx room, so it
read the filler away; the application's socket became writable for nothing, it filled
again, and the two spun on two CPUs until the window opened (thousands of socket
wake-ups a second). The test counts the service's socket wake-ups over a second of the
stall, then lets the client read: every byte each way is checked by SHA-256."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from service_helpers import JOYRIDE, stats, wait_port
from test_run_ring_mode import RING_ENV

from joyride.processes import terminate
from joyride.testbed import Testbed

pytestmark = pytest.mark.integration

PORT = 8093
SIZE = 8 << 20  # each way: far more than tx, rx, the receive ring and both windows

# "serial": writes SIZE bytes before it reads anything, then reads the client's bytes
# to their end and answers with their SHA-256. "timeout": gives up on a peer that reads
# nothing (a send timeout of a second) and closes with its bytes unread.
SERVER = r'''
import hashlib, socket, sys
size, mode = int(sys.argv[2]), sys.argv[3]
ls = socket.create_server(("0.0.0.0", int(sys.argv[1])))
while True:
    c, _ = ls.accept()
    with c:
        if c.recv(1) != b"g":  # wait_port's probe sends nothing
            continue
        if mode == "timeout":
            c.settimeout(1.0)
        try:
            c.sendall(hashlib.sha256(b"down").digest() * (size // 32))
        except TimeoutError:
            continue
        got = hashlib.sha256(b"g")
        while chunk := c.recv(1 << 16):
            got.update(chunk)
        c.sendall(got.digest())
'''

# Sends "g" and SIZE bytes from a thread and reads nothing: "stall" until a line comes
# on its standard input, then reads everything and checks both directions; "reset" for
# STALL seconds, then says whether the connection was reset meanwhile.
CLIENT = r'''
import hashlib, select, socket, sys, threading, time
ip, port, size, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)  # a small window, at once
s.connect((ip, port))
up = hashlib.sha256(b"up").digest() * (size // 32)
def send():
    s.sendall(b"g" + up)
    s.shutdown(socket.SHUT_WR)
writer = threading.Thread(target=send, daemon=True)
writer.start()
if mode == "reset":
    time.sleep(float(sys.argv[5]))
    poller = select.poll()
    poller.register(s, select.POLLIN)
    events = poller.poll(0)
    print(bool(events and events[0][1] & (select.POLLERR | select.POLLHUP)))
    sys.exit()
sys.stdin.readline()
data = bytearray()
while chunk := s.recv(1 << 20):
    data += chunk
writer.join()
down = hashlib.sha256(b"down").digest() * (size // 32)
print(bytes(data[:size]) == down and bytes(data[size:]) == hashlib.sha256(b"g" + up).digest(),
      len(data))
'''


def wakes(bed: Testbed) -> dict[str, int]:
    """What wakes the service: its socket's readiness seen by C (chan_socket_rings) and
    returns to Python for its selector (returns_watched: the pump's socket, or this
    test's own stats request)."""
    plane = stats(bed.joy)["datapath"]["dataplane"]
    return {k: int(plane.get(k, 0)) for k in ("chan_socket_rings", "returns_watched")}


def serve(bed: Testbed, mode: str) -> subprocess.Popen[bytes]:
    proc = bed.joy.popen(JOYRIDE, "run", "--", sys.executable, "-c", SERVER, str(PORT),
                         str(SIZE), mode, env=RING_ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        wait_port(bed.peer, bed.joy.ip, PORT)
    except BaseException:
        terminate([proc], 5.0)
        raise
    return proc


def check(out: bytes, err: bytes) -> None:
    words = out.decode().split()
    assert words[:1] == ["True"], (words, err.decode()[-2000:])
    assert int(words[1]) == SIZE + 32


def test_a_writer_blocked_with_rx_full_sleeps(service_bed: Testbed) -> None:
    bed = service_bed
    server = serve(bed, "serial")
    client = bed.peer.popen(sys.executable, "-c", CLIENT, bed.joy.ip, str(PORT), str(SIZE),
                            "stall", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        time.sleep(1.5)  # both sides have filled what they can
        first = wakes(bed)
        time.sleep(1.0)
        last = wakes(bed)
        check(*client.communicate(b"read now\n", timeout=120))
    finally:
        terminate([client, server], 5.0)
    # Asleep while blocked (the flow is Python's: the peer's window is zero), not a
    # spin: before the fix 15,000-20,000 returns to Python a second.
    assert all(last[k] - first[k] < 50 for k in last), (first, last)


def test_a_close_while_the_writer_is_blocked_resets_at_once(service_bed: Testbed) -> None:
    """The server gives up on its stuck peer (a send timeout) and closes with the
    peer's bytes unread while the pump sleeps on the door: the hang-up is heard by its
    own watch (Datapath._hangups, counted in door_hangups), not left to the next
    zero-window probe, whose interval doubles each time; the peer, which reads nothing,
    is reset within its stall."""
    bed = service_bed
    server = serve(bed, "timeout")
    try:
        before = int(stats(bed.joy)["datapath"]["service"].get("door_hangups", 0))
        out = bed.peer.run(sys.executable, "-c", CLIENT, bed.joy.ip, str(PORT), str(SIZE),
                           "reset", "4.0", timeout=60)
        assert out.stdout.decode().split() == ["True"], out.stderr.decode()[-2000:]
        assert int(stats(bed.joy)["datapath"]["service"].get("door_hangups", 0)) > before
    finally:
        terminate([server], 5.0)
