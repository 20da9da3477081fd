"""The shim forgets a descriptor however the application closes it: a ring-mode
connection closed by ``close_range`` (glibc's ``closefrom`` and Python's
``os.closerange`` are that call), by ``syscall(SYS_close_range)``, then its number
given to a pipe, reads and writes the pipe, not the connection's rings. Before the shim
interposed ``close_range``, the read went into the old connection's rings."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from service_helpers import JOYRIDE, attached, stats, wait_listening

from joyride.testbed import Testbed

pytestmark = pytest.mark.integration

PORT = 8080

# argv: port, how ("libc" or "syscall"). Serves one connection: "hello" in, "world"
# out through the rings; then closes it by number, makes a pipe on that number and
# says what the pipe carried (or the error).
SERVER = r'''
import ctypes, os, socket, sys
port, how = int(sys.argv[1]), sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port)); s.listen(8)
c, _ = s.accept()
c.sendall(c.recv(5).replace(b"hello", b"world"))
fd = c.detach()
if how == "libc":
    rc = libc.close_range(fd, fd, 0)
else:
    rc = libc.syscall(436, fd, fd, 0)  # SYS_close_range on x86-64 and arm64
assert rc == 0, ctypes.get_errno()
r, w = os.pipe()
assert fd in (r, w), (fd, r, w)  # the lowest free numbers: the connection's
try:
    os.write(w, b"pipe")
    print(os.read(r, 16).decode(), flush=True)
except OSError as exc:
    print("error", exc, flush=True)
'''

CLIENT = r'''
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
s.sendall(b"hello")
print(s.recv(5).decode())
'''


@pytest.fixture(scope="module")
def bed() -> Iterator[Testbed]:
    with Testbed() as testbed, attached(testbed, "--ports", str(PORT)):
        yield testbed


@pytest.mark.parametrize("how", ["libc", "syscall"])
def test_a_ring_closed_by_close_range_leaves_its_number(bed: Testbed, how: str) -> None:
    before = int(stats(bed.joy)["datapath"]["dataplane"].get("chan_ring", 0))
    server = bed.joy.popen(JOYRIDE, "run", "--", sys.executable, "-c", SERVER, str(PORT),
                           how, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_listening(bed.joy, PORT)
        got = bed.peer.run(sys.executable, "-c", CLIENT, bed.joy.ip, str(PORT),
                           timeout=30).stdout.decode().strip()
        assert got == "world"
        out, err = server.communicate(timeout=30)
        assert out.decode().strip() == "pipe", (out, err[-2000:])
        # The connection did run in ring mode: its rings were there to be mistaken.
        assert int(stats(bed.joy)["datapath"]["dataplane"]["chan_ring"]) > before
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
