"""Unmodified servers under ``joyride run`` with ring mode (``JOYRIDE_CHANNELS=1``,
docs/channels.md): each connection's bytes move through shared-memory rings, its unix
socket carries only readiness. nginx (two forked workers, epoll, sendfile, writev),
redis-server, and a plain Python server (threads, blocking calls, a half-close), with
kernel clients in the peer namespace and every byte checked."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from service_helpers import JOYRIDE, stats, wait_port
from test_run_servers import WRK_CHECK, nginx_conf, wrk

from joyride.testbed import Testbed

pytestmark = pytest.mark.integration

RING_ENV = {**os.environ, "JOYRIDE_CHANNELS": "1"}

ECHO_SERVER = r'''
import socket, sys, threading
def serve(c):
    with c:
        c.sendall(b"ready\n")  # speaks first: the verdict is awaited before the write
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(64)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'''

ECHO_CLIENT = r'''
import hashlib, socket, sys, threading
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = hashlib.sha256(b"joyride").digest() * (n // 32)
s = socket.create_connection((ip, port))
def send():
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)  # a half-close: the echo's EOF follows its bytes
t = threading.Thread(target=send); t.start()
got = bytearray()
while chunk := s.recv(1 << 20):
    got += chunk
t.join()
print(got[:6] == b"ready\n" and hashlib.sha256(got[6:]).digest() == hashlib.sha256(data).digest())
'''


def channel_counters(bed: Testbed) -> dict[str, int]:
    plane = stats(bed.joy)["datapath"]["dataplane"]
    return {k: int(v) for k, v in plane.items() if k.startswith(("chan_", "claim_"))}


def test_nginx_two_workers_in_ring_mode(service_bed: Testbed, tmp_path: Path) -> None:
    bed = service_bed
    script = tmp_path / "check.lua"
    script.write_text(WRK_CHECK)
    before = channel_counters(bed)
    bed.joy.popen(JOYRIDE, "run", "--", "nginx", "-c", str(nginx_conf(tmp_path, 8085)),
                  "-e", str(tmp_path / "error.log"), env=RING_ENV,
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(bed.peer, bed.joy.ip, 8085)
    _rps, bad, out = wrk(bed.peer, f"http://{bed.joy.ip}:8085/file.bin", script, seconds=2)
    assert bad == 0 and "Socket errors" not in out and "Non-2xx" not in out, out
    after = channel_counters(bed)
    # Every wrk connection claimed ring mode and got it (the sendfile of 64 KiB bodies
    # went through the rings), and nothing the application wrote was impossible.
    assert after["chan_ring"] - before.get("chan_ring", 0) >= 100, after
    assert after["chan_broken"] == before.get("chan_broken", 0)
    assert after["chan_refused"] == before.get("chan_refused", 0)


def test_redis_in_ring_mode(service_bed: Testbed) -> None:
    bed = service_bed
    before = channel_counters(bed)
    bed.joy.popen(JOYRIDE, "run", "--", "redis-server", "--port", "8086", "--bind", "0.0.0.0",
                  "--protected-mode", "no", "--save", "", "--appendonly", "no", env=RING_ENV,
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(bed.peer, bed.joy.ip, 8086)
    out = bed.peer.run("redis-benchmark", "-h", bed.joy.ip, "-p", "8086", "-t", "set,get",
                       "-n", "20000", "-c", "20", "-P", "16", "--csv", timeout=120).stdout.decode()
    assert "GET" in out and "SET" in out, out
    cli = ["redis-cli", "-h", bed.joy.ip, "-p", "8086"]
    value = hashlib.sha256(b"ring").hexdigest() * 20_000  # 1.28 MB: both rings fill
    bed.peer.run(*cli, "-x", "SET", "joyride", input=value.encode())
    got = bed.peer.run(*cli, "GET", "joyride").stdout.decode().strip()
    assert got == value
    after = channel_counters(bed)
    assert after["chan_ring"] - before.get("chan_ring", 0) >= 20, after
    assert after["chan_broken"] == before.get("chan_broken", 0)


# This test found a livelock (docs/channels.md, "A livelock, fixed"): a ring-mode
# connection in Python, its send buffer full, its application's socket at EOF; the
# service loop spun on that socket and never gave the C loop a round to read the ACKs.
def test_python_server_speaks_first_and_half_closes(service_bed: Testbed) -> None:
    bed = service_bed
    before = channel_counters(bed)
    bed.joy.popen(JOYRIDE, "run", "--", sys.executable, "-c", ECHO_SERVER, "8087",
                  env=RING_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(bed.peer, bed.joy.ip, 8087)
    for n in (32, 100_000, 4_000_000):
        out = bed.peer.run(sys.executable, "-c", ECHO_CLIENT, bed.joy.ip, "8087", str(n),
                           timeout=120).stdout.decode().strip()
        assert out == "True", (n, out)
    after = channel_counters(bed)
    assert after["chan_ring"] - before.get("chan_ring", 0) >= 3, after
    assert after["chan_broken"] == before.get("chan_broken", 0)


# sendfile(2) in ring mode reads the file straight into the tx ring (preload/
# joyride_ring.c, jr_ring_sendfile). Each connection asks for one call: an explicit
# offset, the file's own position (which must move by what was sent), a count past the
# file's end (a short count), and a non-blocking socket that fills tx and waits for room.
SENDFILE_SERVER = r'''
import os, select, socket, sys
path, port = sys.argv[1], int(sys.argv[2])
ls = socket.create_server(("0.0.0.0", port))
while True:
    c, _ = ls.accept()
    with c, open(path, "rb") as f:
        words = c.recv(100).decode().split()
        if len(words) != 3:  # wait_port's probe
            continue
        mode, start, count = words[0], int(words[1]), int(words[2])
        sent = 0
        if mode == "offset":
            while sent < count:
                n = os.sendfile(c.fileno(), f.fileno(), start + sent, count - sent)
                if n == 0:
                    break
                sent += n
            trailer = b""
        elif mode == "position":
            os.lseek(f.fileno(), start, os.SEEK_SET)
            sent = os.sendfile(c.fileno(), f.fileno(), None, count)
            trailer = b"pos=%d" % os.lseek(f.fileno(), 0, os.SEEK_CUR)
        elif mode == "eof":
            # Non-blocking, the file's bytes over and over until tx is full (the
            # client reads late); then a sendfile at the file's end, which Linux
            # answers with 0 however full the socket; then one from a pipe.
            c.setblocking(False)
            size = os.fstat(f.fileno()).st_size
            try:
                while True:
                    sent += os.sendfile(c.fileno(), f.fileno(), sent % size, size - sent % size)
            except BlockingIOError:
                pass
            at_end = os.sendfile(c.fileno(), f.fileno(), size, count)
            r, w = os.pipe()
            errs = []
            for off in (None, 0):
                try:
                    os.sendfile(c.fileno(), r, off, 10)
                except OSError as e:
                    errs.append(e.errno)
            c.setblocking(True)
            trailer = b"at_end=%d,pipe=%d/%d" % (at_end, *errs)
        else:  # nonblocking
            c.setblocking(False)
            eagain = 0
            while sent < count:
                try:
                    n = os.sendfile(c.fileno(), f.fileno(), start + sent, count - sent)
                except BlockingIOError:
                    eagain += 1
                    select.select([], [c], [], 5)
                    continue
                if n == 0:
                    break
                sent += n
            c.setblocking(True)
            trailer = b"eagain=%d" % min(eagain, 1)
        c.sendall(b"|sent=%d|%s" % (sent, trailer))
'''

SENDFILE_CLIENT = r'''
import hashlib, socket, sys, time
ip, port, mode, start, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
with socket.create_connection((ip, port), timeout=60) as s:
    s.sendall(f"{mode} {start} {count}".encode())
    if mode == "eof":
        time.sleep(1.0)  # a late reader: the server's tx fills
    got = bytearray()
    while chunk := s.recv(1 << 20):
        got += chunk
body, _, trailer = bytes(got).rpartition(b"|sent=")
print(hashlib.sha256(body).hexdigest(), len(body), trailer.decode())
'''


def test_sendfile_in_ring_mode(service_bed: Testbed, tmp_path: Path) -> None:
    bed = service_bed
    data = os.urandom(3_000_017)  # several tx rings' worth, an odd length
    path = tmp_path / "file.bin"
    path.write_bytes(data)
    before = channel_counters(bed)
    bed.joy.popen(JOYRIDE, "run", "--", sys.executable, "-c", SENDFILE_SERVER, str(path), "8088",
                  env=RING_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(bed.peer, bed.joy.ip, 8088)
    size = len(data)
    cases = [  # mode, start, count, the bytes expected, the trailer expected
        ("offset", 0, size, data, f"{size}|"),
        ("offset", 4093, 1_000_000, data[4093:1_004_093], "1000000|"),
        ("position", 12_345, 2_000_000, data[12_345:2_012_345], f"2000000|pos={2_012_345}"),
        ("offset", size - 100, 1_000_000, data[-100:], "100|"),  # past the end: short
        ("nonblocking", 7, size - 7, data[7:], f"{size - 7}|eagain=1"),
    ]
    for mode, start, count, want, trailer in cases:
        out = bed.peer.run(sys.executable, "-c", SENDFILE_CLIENT, bed.joy.ip, "8088", mode,
                           str(start), str(count), timeout=120).stdout.decode().split()
        assert out == [hashlib.sha256(want).hexdigest(), str(len(want)), trailer], (mode, out)
    out = bed.peer.run(sys.executable, "-c", SENDFILE_CLIENT, bed.joy.ip, "8088", "eof", "0",
                       "100", timeout=120).stdout.decode().split()
    sent = int(out[1])
    want = (data * (sent // size + 1))[:sent]
    # As the kernel's: 0 at the file's end with tx full (not EAGAIN); from a pipe, EINVAL
    # without an offset and ESPIPE with one.
    assert out == [hashlib.sha256(want).hexdigest(), str(sent),
                   f"{sent}|at_end=0,pipe={errno.EINVAL}/{errno.ESPIPE}"], out
    after = channel_counters(bed)
    assert after["chan_ring"] - before.get("chan_ring", 0) >= len(cases), after
    assert after["chan_broken"] == before.get("chan_broken", 0)
