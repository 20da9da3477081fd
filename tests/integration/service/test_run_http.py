"""``joyride run -- python3 -m http.server``: an unmodified server, kernel curl and wrk."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from service_helpers import JOYRIDE, stats, wait_port

from joyride.testbed import Testbed

pytestmark = pytest.mark.integration


def test_http_server_curl_and_wrk(service_bed: Testbed, tmp_path: Path) -> None:
    bed = service_bed
    root = tmp_path / "www"
    root.mkdir()
    body = os.urandom(3 << 20)
    (root / "blob.bin").write_bytes(body)
    (root / "index.html").write_bytes(b"<h1>joyride</h1>\n")
    log = (tmp_path / "server.log").open("w")
    server = bed.joy.popen(JOYRIDE, "run", "--", "python3", "-m", "http.server", "-b",
                           "0.0.0.0", "-d", str(root), "8090", stdout=log,
                           stderr=subprocess.STDOUT)
    before = stats(bed.joy)["datapath"]["service"].get("delivered", 0)
    wait_port(bed.peer, bed.joy.ip, 8090)
    out = tmp_path / "got.bin"
    bed.peer.run("curl", "-sf", "-o", str(out), f"http://{bed.joy.ip}:8090/blob.bin",
                 timeout=60)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(body).digest()
    wrk = bed.peer.run("wrk", "-t1", "-c4", "-d2s", f"http://{bed.joy.ip}:8090/index.html",
                       timeout=60).stdout.decode()
    requests = int(re.search(r"(\d+) requests in", wrk)[1])  # type: ignore[index]
    assert requests > 20, wrk
    assert "Non-2xx" not in wrk and "Socket errors" not in wrk, wrk
    after = stats(bed.joy)["datapath"]["service"]["delivered"]
    # Every connection (curl's, the probe's, wrk's) went through Joyride.
    assert after - before >= requests // 2
    assert server.poll() is None
    # The server saw the clients' real addresses (getpeername through the shim).
    server.terminate()
    server.wait(10)
    log.close()
    assert f"{bed.peer.ip} - - " in (tmp_path / "server.log").read_text()


def test_without_service_falls_back_and_says_so_once(tmp_path: Path) -> None:
    """No service in the namespace: the program serves from the kernel, one notice."""
    with Testbed() as bed:
        server = bed.joy.popen(JOYRIDE, "run", "--", "python3", "-m", "http.server", "-b",
                               "0.0.0.0", "-d", str(tmp_path), "8091",
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_port(bed.peer, bed.joy.ip, 8091)
        bed.peer.run("curl", "-sf", "-o", "/dev/null", f"http://{bed.joy.ip}:8091/",
                     timeout=30)
        server.terminate()
        _, err = server.communicate(timeout=10)
    notices = [line for line in err.decode().splitlines() if line.startswith("joyride:")]
    assert len(notices) == 1, err
    assert "using the kernel" in notices[0]


def test_outgoing_curl_carried_by_joyride(service_bed: Testbed, tmp_path: Path) -> None:
    """``joyride run --outgoing -- curl``: byte-exact from a kernel server in the peer."""
    bed = service_bed
    root = tmp_path / "peer-www"
    root.mkdir()
    body = os.urandom(2 << 20)
    (root / "blob.bin").write_bytes(body)
    bed.peer.popen("python3", "-m", "http.server", "-b", "0.0.0.0", "-d", str(root), "7080",
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(bed.joy, bed.peer.ip, 7080)
    before = stats(bed.joy)
    out = tmp_path / "got.bin"
    proc = bed.joy.run(JOYRIDE, "run", "--outgoing", "--", "curl", "-sS", "-f", "-o",
                       str(out), "-w", "%{local_port}", f"http://{bed.peer.ip}:7080/blob.bin",
                       timeout=60)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(body).digest()
    assert b"joyride:" not in proc.stderr  # no fallback notice: the service carried it
    local_port = int(proc.stdout)
    assert 60000 <= local_port <= 60999  # the service's ephemeral range (getsockname)
    after = stats(bed.joy)
    service = after["datapath"]["service"]
    # curl connects non-blocking: the descriptor came back at once (FLAG_NONBLOCK).
    assert service["connect_nonblocking"] == before["datapath"]["service"].get(
        "connect_nonblocking", 0) + 1
    # The response's frames reached the AF_XDP socket, not the kernel.
    rx = sum(q["rx_bytes"] for q in after["queues"].values()) - sum(
        q["rx_bytes"] for q in before["queues"].values())
    assert rx > len(body)


NONBLOCKING_CLIENT = r"""
import errno, json, select, socket, sys, time
ip, live, dead = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = {}
for name, port in (("live", live), ("dead", dead)):
    s = socket.socket()
    s.setblocking(False)
    t0 = time.monotonic()
    code = s.connect_ex((ip, port))
    out[name + "_connect_s"] = time.monotonic() - t0
    out[name + "_code"] = code
    select.select([], [s], [], 10)
    if name == "live":
        out[name + "_so_error"] = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    # hiredis's redisCheckConnectDone: connect again once writable. The handshake goes
    # on behind the descriptor, so that says EISCONN (as a deferred connect's would)
    # until a refusal is in; then it reports the refusal (once, as SO_ERROR would).
    deadline = time.monotonic() + 5
    while True:
        again = s.connect_ex((ip, port))
        if name == "live" or again != errno.EISCONN or time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    out[name + "_again"] = errno.errorcode.get(again, str(again))
    s.setblocking(True)
    s.settimeout(10)
    try:
        s.sendall(b"ping")
        out[name + "_reply"] = s.recv(4).decode()
        out[name + "_after_reply"] = errno.errorcode.get(s.connect_ex((ip, port)), "0")
    except OSError as exc:
        out[name + "_reply"] = errno.errorcode.get(exc.errno, str(exc.errno))
    s.close()
print(json.dumps(out))
"""


def test_nonblocking_connect_returns_at_once(service_bed: Testbed) -> None:
    """An event loop's non-blocking connect is not held for the handshake: EINPROGRESS
    at once, writable, then data flows (a live peer) or the first read reports the
    refusal (a closed port) - never a two-minute freeze. Connecting again says how it
    ended, as Linux TCP does (EISCONN, or the refusal), which hiredis relies on."""
    bed = service_bed
    bed.peer.popen("python3", "-c", (
        "import socket\n"
        "s = socket.create_server(('0.0.0.0', 7081))\n"
        "while True:\n"  # wait_port's probe comes first
        "    c, _ = s.accept()\n"
        "    while d := c.recv(64): c.sendall(d)\n"))
    wait_port(bed.joy, bed.peer.ip, 7081)
    proc = bed.joy.run(JOYRIDE, "run", "--outgoing", "--", "python3", "-c",
                       NONBLOCKING_CLIENT, bed.peer.ip, "7081", "7099", timeout=60)
    out = json.loads(proc.stdout)
    assert b"joyride:" not in proc.stderr  # carried by the service, no fallback
    assert out["live_code"] == errno.EINPROGRESS and out["dead_code"] == errno.EINPROGRESS
    assert out["live_connect_s"] < 0.5 and out["dead_connect_s"] < 0.5
    assert out["live_so_error"] == 0 and out["live_reply"] == "ping"
    assert out["dead_reply"] in ("", "ECONNRESET", "EPIPE")
    # Connecting again answers as Linux TCP does, not with the unix socket's EINVAL.
    assert out["live_again"] == "EISCONN" and out["live_after_reply"] == "EISCONN"
    assert out["dead_again"] == "ECONNREFUSED", out
