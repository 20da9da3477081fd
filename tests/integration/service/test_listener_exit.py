"""A listening application that exits: its port is released at once, not a sweep later.

Without the watch on the registering process, a registration outlived its application
for up to ``SWEEP_PERIOD``: the C data plane kept completing handshakes on the port and
the delivery then reset each connection (``accept_no_listener``), where the kernel would
have refused the SYN. A server restarted within that second was also hidden behind its
dead predecessor: a readiness probe connected to the old registration.

The process's exit only triggers the sweep; the sweep decides by the unix listeners
themselves, so a listener that a forked child keeps (a daemonizing server: listen, fork,
the parent exits) goes on being served.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from peers import digest, kernel_echo, peer_client, random_payload
from service_helpers import JOYRIDE, cli, stats, wait_for, wait_port

from joyride.testbed import Testbed

pytestmark = pytest.mark.integration

PORT_DIES = 8091
PORT_FORKS = 8092

# An echo server that listens, then (with "fork") forks a child that serves while the
# parent exits at once.
SERVER = """
import os, socket, sys
port, fork = int(sys.argv[1]), sys.argv[2] == "fork"
ls = socket.create_server(("0.0.0.0", port))
if fork and os.fork() != 0:
    os._exit(0)
print("ready", os.getpid(), flush=True)
while True:
    conn, _ = ls.accept()
    while chunk := conn.recv(65536):
        conn.sendall(chunk)
    conn.close()
"""


def _counter(bed: Testbed, name: str) -> int:
    return int(stats(bed.joy)["datapath"]["service"].get(name, 0))


def _listening(bed: Testbed, port: int) -> bool:
    """`joyride ss -l` lists a listener on ``port``."""
    rows = json.loads(cli(bed.joy, "ss", bed.joy.ifname, "-l", "--port", str(port),
                          "--json").stdout)
    return any(str(row["local"]).endswith(f":{port}") for row in rows)


def _start(bed: Testbed, port: int, mode: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = bed.joy.popen(JOYRIDE, "run", "--iface", bed.joy.ifname, "--",
                             "python3", "-c", SERVER, str(port), mode,
                             stdout=out, stderr=subprocess.STDOUT)
    wait_for(lambda: b"ready" in log.read_bytes(), 20.0, "the server to listen")
    wait_port(bed.peer, bed.joy.ip, port)
    return proc


def test_dead_listener_refuses_at_once(service_bed: Testbed, tmp_path: Path) -> None:
    bed = service_bed
    proc = _start(bed, PORT_DIES, "stay", tmp_path / "server.log")
    try:
        payload = random_payload(16 << 10)
        assert digest(kernel_echo(bed, payload, port=PORT_DIES)) == digest(payload)
        exits, undelivered = (_counter(bed, "listener_process_exits"),
                              _counter(bed, "accept_no_listener"))
        proc.kill()  # SIGKILL: no close of its own, as in a crash
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # The exit was seen and the registration swept because of it.
    wait_for(lambda: _counter(bed, "listener_process_exits") > exits, 5.0,
             "the service to see the listener's process exit")
    assert not _listening(bed, PORT_DIES)
    # A SYN is now refused (the port's SYNs go to the kernel, which has no listener),
    # where the stale registration would have completed the handshake and then reset.
    with pytest.raises(ConnectionRefusedError), peer_client(bed, PORT_DIES, timeout=5.0):
        pass
    assert _counter(bed, "accept_no_listener") == undelivered


def test_listener_kept_by_a_forked_child_is_served(service_bed: Testbed,
                                                    tmp_path: Path) -> None:
    bed = service_bed
    log = tmp_path / "server.log"
    exits = _counter(bed, "listener_process_exits")
    proc = _start(bed, PORT_FORKS, "fork", log)
    child = int(log.read_text().split("ready")[1].split()[0])
    try:
        assert child != proc.pid
        proc.wait(10)  # the parent exits at once; its child serves
        wait_for(lambda: _counter(bed, "listener_process_exits") > exits, 5.0,
                 "the service to see the parent exit")
        assert _listening(bed, PORT_FORKS)
        payload = random_payload(1 << 20)
        assert digest(kernel_echo(bed, payload, port=PORT_FORKS)) == digest(payload)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)  # the server's child, which we started
