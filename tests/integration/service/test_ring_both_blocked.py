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
# to their end. "threaded": a thread reads them meanwhile, while the writer is blocked.
# Either way it then answers with their SHA-256.
SERVER = r'''
import hashlib, socket, sys, threading, time
size, mode = int(sys.argv[2]), sys.argv[3]
ls = socket.create_server(("0.0.0.0", int(sys.argv[1])))
def read_all(c, got, slow=False):
    while chunk := c.recv(1 << 16):
        got.update(chunk)
        if slow:  # slower than the network: rx and the receive window fill
            time.sleep(0.002)
while True:
    c, _ = ls.accept()
    with c:
        if c.recv(1) != b"g":  # wait_port's probe sends nothing
            continue
        got = hashlib.sha256(b"g")
        reader = threading.Thread(target=read_all, args=(c, got, True))
        if mode == "threaded":
            reader.start()
        if mode == "timeout":  # gives up on a stuck peer: closes with its bytes unread
            c.settimeout(1.0)
            try:
                c.sendall(hashlib.sha256(b"down").digest() * (size // 32))
            except TimeoutError:
                continue
        c.sendall(hashlib.sha256(b"down").digest() * (size // 32))
        if mode == "threaded":
            reader.join()
        else:
            read_all(c, got)
        c.sendall(got.digest())
'''

# "stall": sends "g" and SIZE bytes from a thread and reads nothing for STALL seconds.
# "upload": sends them all first, with a small send buffer, so that its send returns
# only once the server took nearly all of them, while nothing was read of its answer;
# then reads. Either way it checks both directions.
CLIENT = r'''
import hashlib, select, socket, sys, threading, time
ip, port, size, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)  # a small window, at once
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
s.connect((ip, port))
up = hashlib.sha256(b"up").digest() * (size // 32)
def send():
    s.sendall(b"g" + up)
    s.shutdown(socket.SHUT_WR)
writer = threading.Thread(target=send, daemon=True)
writer.start()
if mode == "stall":
    time.sleep(float(sys.argv[5]))
elif mode == "reset":  # reads nothing: was the connection reset meanwhile?
    time.sleep(float(sys.argv[5]))
    poller = select.poll()
    poller.register(s, select.POLLIN)
    events = poller.poll(0)
    print(bool(events and events[0][1] & (select.POLLERR | select.POLLHUP)))
    sys.exit()
else:
    writer.join()
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


def door_wakes(bed: Testbed) -> int:
    """Times a ring of an arena's door woke pumps asleep on it (Datapath.wait)."""
    return int(stats(bed.joy)["datapath"]["service"].get("door_wakes", 0))


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
                            "stall", "3.0", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)  # both sides have filled what they can
        first = wakes(bed)
        time.sleep(1.0)
        last = wakes(bed)
        check(*client.communicate(timeout=120))
    finally:
        terminate([client, server], 5.0)
    # Asleep while blocked (the flow is Python's: the peer's window is zero), not a
    # spin: before the fix 15,000-20,000 returns to Python a second.
    assert all(last[k] - first[k] < 50 for k in last), (first, last)


def test_rx_room_wakes_a_pump_whose_writer_is_blocked(service_bed: Testbed) -> None:
    """The application's reader thread makes rx room while its writer is blocked: the
    room's doorbell comes by the arena's door, which the pump sleeps on instead of its
    socket. The client's upload goes through while nothing of the answer is read; a
    lost wake-up would leave it to the client's zero-window probes, seconds apart, and
    the client would time out."""
    bed = service_bed
    server = serve(bed, "threaded")
    try:
        before = door_wakes(bed)
        out = bed.peer.run(sys.executable, "-c", CLIENT, bed.joy.ip, str(PORT), str(SIZE),
                           "upload", timeout=60)
        check(out.stdout, out.stderr)
        assert door_wakes(bed) > before  # the door woke the pump: the path was taken
    finally:
        terminate([server], 5.0)


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
