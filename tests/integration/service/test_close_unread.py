"""A server that closes a connection without reading what its client sent (it refuses
the request, as iperf3's busy server does) resets it: the client reads the server's
last bytes, then ECONNRESET, from Linux's TCP (RFC 1122 §4.2.2.13) and from Joyride's
alike, in ring mode and in stream mode. Before, Joyride closed such a connection with a
FIN, and the client read a clean end of file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from service_helpers import JOYRIDE, stats, wait_port

from joyride.testbed import Testbed

pytestmark = pytest.mark.integration

RING_PORT, STREAM_PORT = 8088, 8089  # steered (the service bed's)
KERNEL_PORT = 7188  # not steered: the same server on Linux's TCP
ROUNDS = 5

REFUSING_SERVER = r'''
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(8)
while True:
    c, _ = s.accept()
    c.recv(1, socket.MSG_PEEK)  # the client's request has come; it stays unread
    c.sendall(b"refused\n")
    c.close()
'''

# What each connection's client saw: the bytes, and the errno that ended them (None: EOF).
CLIENT = r'''
import json, socket, sys
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
    out.append([got.decode(), err])
    s.close()
print(json.dumps(out))
'''


def seen_by_clients(bed: Testbed, port: int) -> list[list[object]]:
    out = bed.peer.run(sys.executable, "-c", CLIENT, bed.joy.ip, str(port), str(ROUNDS),
                       timeout=60).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def test_a_close_with_unread_data_resets_as_linux_does(service_bed: Testbed) -> None:
    bed = service_bed
    before = stats(bed.joy)["datapath"]["dataplane"].get("app_closed_unread", 0)
    bed.joy.popen(sys.executable, "-c", REFUSING_SERVER, str(KERNEL_PORT),
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for port, channels in ((RING_PORT, "1"), (STREAM_PORT, "0")):
        bed.joy.popen(JOYRIDE, "run", "--", sys.executable, "-c", REFUSING_SERVER, str(port),
                      env={**os.environ, "JOYRIDE_CHANNELS": channels},
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for port in (KERNEL_PORT, RING_PORT, STREAM_PORT):
        wait_port(bed.peer, bed.joy.ip, port)
    kernel = seen_by_clients(bed, KERNEL_PORT)
    assert kernel == [["refused\n", 104]] * ROUNDS  # ECONNRESET after the bytes
    assert seen_by_clients(bed, RING_PORT) == kernel
    assert seen_by_clients(bed, STREAM_PORT) == kernel
    # Ring mode's were found by C at the hang-up (or by Python's pump, had it run them).
    after = stats(bed.joy)["datapath"]["dataplane"].get("app_closed_unread", 0)
    assert after - before >= 1
