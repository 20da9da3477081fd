"""A server that closes a connection without reading what its client sent (it refuses
the request, as iperf3's busy server does) resets it: the client reads the server's
last bytes, then ECONNRESET, from Linux's TCP (RFC 1122 §4.2.2.13) and from Joyride's
alike, in ring mode and in stream mode. Before, Joyride closed such a connection with a
FIN, and the client read a clean end of file. The same when the server shuts its
writing down first (the client reads the bytes and the FIN, and then the reset arrives):
in stream mode the service heard nothing after that EOF until session 34."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from service_helpers import JOYRIDE, stats, wait_port

from joyride.testbed import Testbed

pytestmark = pytest.mark.integration

# (Joyride's ring-mode port, its stream-mode port, the kernel's port: not steered)
PORTS = {"close": (8088, 8089, 7188), "shutfirst": (8086, 8087, 7186)}
ROUNDS = 5

# argv: the port, and "close" (close at once) or "shutfirst" (shutdown(SHUT_WR), a pause
# in which the peer gets the FIN and the service reads the EOF, then close).
REFUSING_SERVER = r'''
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(8)
while True:
    c, _ = s.accept()
    try:
        c.recv(1, socket.MSG_PEEK)  # the client's request has come; it stays unread
        c.sendall(b"refused\n")
        if sys.argv[2] == "shutfirst":
            c.shutdown(socket.SHUT_WR)
            time.sleep(0.05)
    except OSError:
        pass  # a probe of the port (wait_port), which closes at once
    c.close()
'''

# What each connection's client saw: the bytes, and the errno that ended them (None: EOF
# and no reset within 3 s; a reset after the FIN leaves its errno in SO_ERROR, as recv
# reports the end of file first).
CLIENT = r'''
import json, socket, sys, time
out = []
for _ in range(int(sys.argv[3])):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    s.sendall(b"a request the server never reads")
    got, err = b"", None
    try:
        while chunk := s.recv(100):
            got += chunk
    except OSError as e:
        err = e.errno
    for _ in range(300 if err is None else 0):
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or None
        if err:
            break
        time.sleep(0.01)
    out.append([got.decode(), err])
    s.close()
print(json.dumps(out))
'''


def seen_by_clients(bed: Testbed, port: int) -> list[list[object]]:
    out = bed.peer.run(sys.executable, "-c", CLIENT, bed.joy.ip, str(port), str(ROUNDS),
                       timeout=60).stdout
    return json.loads(out)  # type: ignore[no-any-return]


@pytest.mark.parametrize("how", ["close", "shutfirst"])
def test_a_close_with_unread_data_resets_as_linux_does(service_bed: Testbed, how: str) -> None:
    bed = service_bed
    ring_port, stream_port, kernel_port = PORTS[how]
    before = stats(bed.joy)["datapath"]["dataplane"].get("app_closed_unread", 0)
    bed.joy.popen(sys.executable, "-c", REFUSING_SERVER, str(kernel_port), how,
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for port, channels in ((ring_port, "1"), (stream_port, "0")):
        bed.joy.popen(JOYRIDE, "run", "--", sys.executable, "-c", REFUSING_SERVER, str(port),
                      how, env={**os.environ, "JOYRIDE_CHANNELS": channels},
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for port in (kernel_port, ring_port, stream_port):
        wait_port(bed.peer, bed.joy.ip, port)
    kernel = seen_by_clients(bed, kernel_port)
    # ECONNRESET after the bytes; EPIPE when the reset finds the client in CLOSE-WAIT
    # (Linux's tcp_reset), after the FIN
    assert kernel == [["refused\n", 104 if how == "close" else 32]] * ROUNDS
    assert seen_by_clients(bed, ring_port) == kernel
    assert seen_by_clients(bed, stream_port) == kernel
    # Ring mode's were found by C at the hang-up (or by Python's pump, had it run them).
    after = stats(bed.joy)["datapath"]["dataplane"].get("app_closed_unread", 0)
    assert after - before >= 1
