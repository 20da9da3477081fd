"""What the application set on a ring-mode connection survives its revert to a stream
(docs/channels.md, "Leaving ring mode"): the new socket takes the old one's place, so
its options must come along. Without them a read under ``SO_RCVTIMEO`` blocks for ever
after the revert, and ``getsockopt`` forgets ``TCP_NODELAY``.

The server (a plain Python program in ring mode under ``joyride run``) reads the
client's greeting through the rings, sets ``SO_RCVTIMEO`` (0.25 s), ``TCP_NODELAY`` and
``F_SETOWN`` on the connection, and reverts it:

- ``system``: ``system()`` with the connection inheritable, in the server's own process,
  which then reports the options it reads back and how long a read waited for nothing;
- ``subprocess``: a child gets the connection as stdin and stdout (a vfork child
  reverts it there) and reports the timeout and the read's wait itself.

The kernel client checks the report; it sends nothing after its greeting, so only the
timeout can end the read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from service_helpers import JOYRIDE, wait_port
from test_ring_revert import RECV_UPTO
from test_run_ring_mode import RING_ENV, channel_counters

from joyride.testbed import Testbed

pytestmark = pytest.mark.integration

# Reports on fd 0 (a reverted stream by now): SO_RCVTIMEO and how long recv waited.
CHILD = r'''
import os, socket, struct, time
s = socket.socket(fileno=os.dup(0))
sec, usec = struct.unpack("ll", s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))
t0 = time.monotonic()
try:
    waited = "eof" if not s.recv(1) else "data"
except BlockingIOError:
    waited = "%.1f" % (time.monotonic() - t0)
os.write(1, ("%d.%06d %s\n" % (sec, usec, waited)).encode())
'''

SERVER = RECV_UPTO + r'''
import fcntl, os, socket, struct, subprocess, sys, time
mode, port, child = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("0.0.0.0", port)); ls.listen(16)
while True:
    c, _ = ls.accept()
    if recv_upto(c, 5) != b"hello":  # wait_port's probe
        c.close()
        continue
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 250000))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    fcntl.fcntl(c, fcntl.F_SETOWN, os.getpid())
    if mode == "system":
        c.set_inheritable(True)
        assert os.system("true") == 0  # reverts c here
        sec, usec = struct.unpack("ll", c.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))
        nodelay = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        owner = fcntl.fcntl(c, fcntl.F_GETOWN) == os.getpid()
        t0 = time.monotonic()
        try:
            waited = "eof" if not c.recv(1) else "data"
        except BlockingIOError:
            waited = "%.1f" % (time.monotonic() - t0)
        c.sendall(("%d.%06d %s %d %s\n" % (sec, usec, waited, nodelay, owner)).encode())
    else:
        subprocess.run([sys.executable, "-c", child], stdin=c, stdout=c)
    c.close()
'''

CLIENT = r'''
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
s.sendall(b"hello")
line = b""
while not line.endswith(b"\n"):
    d = s.recv(100)
    if not d:
        break
    line += d
print(line.decode().strip())
'''


@pytest.mark.parametrize("mode,port", [("system", 8085), ("subprocess", 8086)])
def test_options_survive_the_revert(service_bed: Testbed, tmp_path: Path, mode: str,
                                    port: int) -> None:
    bed = service_bed
    before = channel_counters(bed)
    errors = tmp_path / "server.err"
    with errors.open("wb") as err:
        bed.joy.popen(JOYRIDE, "run", "--", sys.executable, "-c", SERVER, mode, str(port),
                      CHILD, env=RING_ENV, stdout=subprocess.DEVNULL, stderr=err)
    wait_port(bed.peer, bed.joy.ip, port)
    done = bed.peer.run(sys.executable, "-c", CLIENT, bed.joy.ip, str(port), timeout=60)
    out = done.stdout.decode().strip()
    why = (out, done.stderr.decode()[-2000:], errors.read_text()[-2000:])
    fields = out.split()
    assert len(fields) == (4 if mode == "system" else 2), why
    # The timeout reads back as set (the kernel keeps it in jiffies: 0.252 s at 250 Hz),
    # and the read gave up at it, not at the client's 20 s nor at once.
    assert 0.24 <= float(fields[0]) <= 0.26, why
    assert fields[1] not in ("eof", "data") and 0.2 <= float(fields[1]) <= 5.0, why
    if mode == "system":
        assert fields[2:] == ["1", "True"], why  # TCP_NODELAY and the SIGIO owner
    after = channel_counters(bed)
    assert after["chan_ring"] > before.get("chan_ring", 0), after
    assert after["chan_reverts"] - before.get("chan_reverts", 0) == 1, after
