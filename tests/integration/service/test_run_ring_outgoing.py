"""Outgoing connections in ring mode: ``joyride run --outgoing`` with the shim's claim
at ``connect`` (protocol.FLAG_CHANNELS on OP_CONNECT, docs/channels.md). Real servers
nobody here wrote run on the kernel in the peer namespace; the clients run under
Joyride, and every byte is checked by hash.

- A blocking client whose server speaks first: the greeting waits in the service until
  the claim (sent before ``connect`` returns), then comes through the rx ring.
- redis-benchmark and redis-cli (hiredis: a non-blocking connect, then the claim),
  pipelined, with a value that fills both rings.
- A connection handed to another program (``subprocess``, an exec) with the server's
  echo unread in the rx ring: it turns back into a stream and nothing is lost."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
from service_helpers import JOYRIDE, stats, wait_port
from test_run_ring_mode import ECHO_CLIENT, ECHO_SERVER, channel_counters

from joyride.testbed import Testbed

pytestmark = pytest.mark.integration

# joyride run --outgoing, ring mode asked for explicitly (it is the default).
RUN_OUT = ("env", "JOYRIDE_CHANNELS=1", JOYRIDE, "run", "--outgoing", "--")


def connect_channels(bed: Testbed) -> int:
    return int(stats(bed.joy)["datapath"]["service"].get("connect_channels", 0))


def echo_server_in_peer(bed: Testbed, port: int) -> tuple[dict[str, int], int]:
    """The kernel echo server (it speaks first) in the peer namespace, listening; the
    channel counters and the grants at connect before the test's clients."""
    bed.peer.popen(sys.executable, "-c", ECHO_SERVER, str(port),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(bed.joy, bed.peer.ip, port)
    return channel_counters(bed), connect_channels(bed)


def test_client_whose_server_speaks_first(service_bed: Testbed) -> None:
    bed = service_bed
    before, granted = echo_server_in_peer(bed, 7082)
    for n in (32, 100_000, 4_000_000):
        proc = bed.joy.run(*RUN_OUT, sys.executable, "-c",
                           ECHO_CLIENT, bed.peer.ip, "7082", str(n),
                           timeout=120)
        assert proc.stdout.decode().strip() == "True", (n, proc.stdout, proc.stderr)
        assert b"joyride:" not in proc.stderr  # the service carried it, no fallback
    after = channel_counters(bed)
    # Each connection was granted ring mode at connect, claimed it and got it.
    assert connect_channels(bed) - granted == 3
    assert after["chan_ring"] - before.get("chan_ring", 0) == 3, after
    assert after["chan_broken"] == before.get("chan_broken", 0)
    assert after["chan_refused"] == before.get("chan_refused", 0)


def test_redis_clients_in_ring_mode(service_bed: Testbed) -> None:
    bed = service_bed
    bed.peer.popen("redis-server", "--port", "7083", "--bind", "0.0.0.0",
                   "--protected-mode", "no", "--save", "", "--appendonly", "no",
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(bed.joy, bed.peer.ip, 7083)
    before, granted = channel_counters(bed), connect_channels(bed)
    out = bed.joy.run(*RUN_OUT, "redis-benchmark", "-h",
                      bed.peer.ip, "-p", "7083", "-t", "set,get", "-n", "20000", "-c", "20",
                      "-P", "16", "--csv", timeout=120).stdout.decode()
    assert "GET" in out and "SET" in out, out
    cli = [*RUN_OUT, "redis-cli", "-h", bed.peer.ip, "-p", "7083"]
    value = hashlib.sha256(b"outgoing").hexdigest() * 20_000  # 1.28 MB: both rings fill
    bed.joy.run(*cli, "-x", "SET", "joyride", input=value.encode(),
                timeout=60)
    got = bed.joy.run(*cli, "GET", "joyride", timeout=60).stdout.decode()
    assert hashlib.sha256(got.strip().encode()).digest() == \
        hashlib.sha256(value.encode()).digest()
    after = channel_counters(bed)
    assert connect_channels(bed) - granted >= 22  # 20 benchmark clients and two redis-cli
    assert after["chan_ring"] - before.get("chan_ring", 0) >= 22, after
    assert after["chan_broken"] == before.get("chan_broken", 0)


# The client reads the greeting and the echo of a first part in ring mode, sends a
# second part and waits until its echo sits unread in the rx ring, then hands the
# connection to a child program as its stdin and stdout (subprocess: a vfork and an
# exec, so the shim reverts it first). The child sends a third part, half-closes,
# reads to EOF and prints the hash of what it read: the second part and the third.
HANDING_CLIENT = r'''
import hashlib, os, socket, subprocess, sys, time
ip, port = sys.argv[1], int(sys.argv[2])
first, second = os.urandom(5000), os.urandom(70000)
third = hashlib.sha256(b"third").digest() * 10000  # the child makes the same
s = socket.create_connection((ip, port))
def recv_exactly(n):
    got = bytearray()
    while len(got) < n and (d := s.recv(n - len(got))):
        got += d
    return bytes(got)
assert recv_exactly(6) == b"ready\n"
s.sendall(first)
assert recv_exactly(len(first)) == first
s.sendall(second)
time.sleep(0.3)  # its echo arrives, unread, in the rx ring
child = r"""
import hashlib, os, socket, sys, threading
third = hashlib.sha256(b"third").digest() * 10000
s = socket.socket(fileno=0)
def send():
    s.sendall(third)
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send); t.start()
h = hashlib.sha256()
while d := s.recv(65536):
    h.update(d)
t.join()
os.write(1, h.hexdigest().encode())
"""
out = subprocess.run([sys.executable, "-c", child], stdin=s,
                     stdout=subprocess.PIPE, timeout=60).stdout.decode()
print(out == hashlib.sha256(second + third).hexdigest())
'''


def test_connection_handed_to_a_program(service_bed: Testbed) -> None:
    bed = service_bed
    before, granted = echo_server_in_peer(bed, 7084)
    proc = bed.joy.run(*RUN_OUT, sys.executable, "-c",
                       HANDING_CLIENT, bed.peer.ip, "7084", timeout=120)
    assert proc.stdout.decode().strip() == "True", (proc.stdout, proc.stderr)
    after = channel_counters(bed)
    assert connect_channels(bed) - granted == 1
    assert after["chan_ring"] - before.get("chan_ring", 0) == 1, after
    assert after["chan_broken"] == before.get("chan_broken", 0)
