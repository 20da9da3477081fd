"""What only the connection knows, asked of a Joyride descriptor as of a kernel socket
(issue 14): ``SO_ERROR`` after a refused non-blocking connect (once, then 0), the send
queue's ``SIOCOUTQ``/``SIOCOUTQNSD`` while the peer has not acknowledged, and
``TCP_INFO``'s round-trip time over a link with a delay. The service answers these
(``OP_GETINFO``); each answer is compared with a kernel socket's doing the same, through
the preload shim and through ``joyride.socket``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service_helpers import app_path, attached, stats

from joyride.testbed import Impairment, Testbed

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
DELAY_S = 0.05
SERVER_PORT = 7190  # in the peer namespace
DEAD_PORT = 7191  # nobody listens there

# argv: mode (shim|python), what (refused|healthy|queue), peer ip, port. Prints JSON: per side,
# what it saw. The Joyride side connects through the service, the kernel side without.
PROBE = r"""
import ctypes, errno, fcntl, json, os, select, socket, struct, sys, time
mode, what, ip, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
HEALTHY_ASKS = 40
SIOCOUTQ, SIOCOUTQNSD, TCP_INFO = 0x5411, 0x894B, 11
if mode == "python":
    import joyride.socket as joy_module
else:
    joy_module = socket

def state(s):
    return s.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 104)[0]

def rtt_us(s):
    return struct.unpack_from("=I", s.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 104), 68)[0]

def ioctl(s, request):
    buf = bytearray(4)
    fcntl.ioctl(s.fileno(), request, buf)
    return int.from_bytes(buf, sys.byteorder, signed=True)

def wait(ready, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True

def connect(side, blocking):
    module = joy_module if side == "joyride" else socket
    if side == "joyride":
        os.environ["JOYRIDE_OUTGOING"] = "1"
    s = module.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(blocking)
    code = s.connect_ex((ip, port))
    os.environ.pop("JOYRIDE_OUTGOING", None)
    return s, code

out = {}
for side in ("kernel", "joyride"):
    seen = out[side] = {}
    if what == "refused":
        s, seen["connect"] = connect(side, False)
        _, w, _ = select.select([], [s], [], 5)
        seen["writable"] = bool(w)
        errors = []
        wait(lambda: errors.append(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
             or errors[-1] != 0)
        seen["so_error"] = errors[-1]
        seen["so_error_again"] = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        seen["state"] = state(s)
        s.close()
    elif what == "healthy":
        s, seen["connect"] = connect(side, True)
        seen["so_error"] = [s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                            for _ in range(HEALTHY_ASKS)]
        seen["connect_again"] = sorted({s.connect_ex((ip, port)) for _ in range(HEALTHY_ASKS)})
        s.close()
    else:
        s, seen["connect"] = connect(side, True)
        wait(lambda: state(s) == 1)
        s.sendall(b"q" * 65536)
        if mode == "shim":
            seen["outq"] = ioctl(s, SIOCOUTQ)
            seen["notsent_ok"] = 0 <= ioctl(s, SIOCOUTQNSD) <= seen["outq"]
            seen["drained"] = wait(lambda: ioctl(s, SIOCOUTQ) == 0)
        else:
            time.sleep(1.0)
        seen["rtt_us"] = rtt_us(s)
        seen["state"] = state(s)
        s.close()
print(json.dumps(out))
"""


def _shim() -> Path:
    return sorted((REPO / "joyride").glob("libjoyride_preload*.so"))[-1]


@contextlib.contextmanager
def drain_server(bed: Testbed) -> Iterator[None]:
    """A kernel server in the peer namespace that reads and discards."""
    with bed.peer.inside():
        server = socket.create_server(("0.0.0.0", SERVER_PORT))

    def drain(conn: socket.socket) -> None:
        with conn:
            while conn.recv(65536):
                pass

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=drain, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)
        server.close()
        thread.join(5)


def _counters(bed: Testbed) -> dict[str, int]:
    return dict(stats(bed.joy)["datapath"]["service"])


def probe(bed: Testbed, mode: str, what: str, port: int,
          asked: bool = True) -> dict[str, Any]:
    """The probe's findings; asserts the Joyride side went through the service (and,
    ``asked``, that the service answered a question about the connection)."""
    before = _counters(bed)
    env = ["env", f"JOYRIDE_SOCKET={app_path(bed.joy)}", f"PYTHONPATH={REPO}"]
    if mode == "shim":
        env.append(f"LD_PRELOAD={_shim()}")
    proc = bed.joy.run(*env, sys.executable, "-c", PROBE, mode, what, bed.peer.ip,
                       str(port), timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    result: dict[str, Any] = json.loads(proc.stdout)
    after = _counters(bed)
    for counter in ("connect_started", "getinfo") if asked else ("connect_started",):
        assert after.get(counter, 0) > before.get(counter, 0), (counter, before, after)
    result["getinfo_asked"] = after.get("getinfo", 0) - before.get("getinfo", 0)
    return result


@pytest.mark.parametrize("mode", ["shim", "python"])
def test_a_refused_connect_reports_so_error_once(service_bed: Testbed, mode: str) -> None:
    """Non-blocking connect to a closed port: EINPROGRESS, writable; SO_ERROR says
    ECONNREFUSED once, then 0; TCP_INFO says CLOSE. As the kernel's."""
    seen = probe(service_bed, mode, "refused", DEAD_PORT)
    kernel, joyride = seen["kernel"], seen["joyride"]
    assert kernel == {"connect": errno.EINPROGRESS, "writable": True,
                      "so_error": errno.ECONNREFUSED, "so_error_again": 0, "state": 7}
    assert joyride == kernel


@pytest.mark.parametrize("mode", ["shim", "python"])
def test_a_healthy_connection_answers_so_error_without_the_service(
        delayed_bed: Testbed, mode: str) -> None:
    """SO_ERROR, and connect again, on an established connection: 0 and EISCONN, as the
    kernel's, answered by the application's side alone (the service's socket shows no
    hang-up: nothing has failed), not by a round trip to the service per question."""
    seen = probe(delayed_bed, mode, "healthy", SERVER_PORT, asked=False)
    for side in ("kernel", "joyride"):
        assert seen[side] == {"connect": 0, "so_error": [0] * 40,
                              "connect_again": [errno.EISCONN]}, (side, seen[side])
    assert seen["getinfo_asked"] < 10, seen


@pytest.fixture(scope="module")
def delayed_bed() -> Iterator[Testbed]:
    with Testbed(to_joy=Impairment(delay=DELAY_S)) as bed, \
            attached(bed, "--ports", "8080"), drain_server(bed):
        yield bed


@pytest.mark.parametrize("mode", ["shim", "python"])
def test_the_send_queue_and_rtt_are_the_connections(delayed_bed: Testbed,
                                                    mode: str) -> None:
    """64 KiB written over a link whose ACKs come 50 ms late: SIOCOUTQ counts them until
    they are acknowledged, then 0 (through the shim; fcntl.ioctl on a joyride.socket
    reaches the unix descriptor); TCP_INFO's rtt is the link's."""
    seen = probe(delayed_bed, mode, "queue", SERVER_PORT)
    for side, got in ((s, seen[s]) for s in ("kernel", "joyride")):
        assert got["connect"] == 0, (side, got)
        assert got["state"] == 1, (side, got)  # ESTABLISHED
        assert DELAY_S * 0.8e6 <= got["rtt_us"] <= DELAY_S * 4e6, (side, got)
        if mode == "shim":
            assert got["outq"] > 0 and got["notsent_ok"] and got["drained"], (side, got)
