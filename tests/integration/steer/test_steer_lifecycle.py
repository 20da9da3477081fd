"""Detach, crash (SIGKILL) and recovery: the kernel always gets the traffic back.

Each test has its own bed: these tests kill services and check that nothing is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from steer_cli import JOYRIDE, cli, one_line_error, stats, status, wait_for

from joyride.claim.statedir import StateDir
from joyride.processes import pid_alive
from joyride.service import supervisor
from joyride.steer import xdp
from joyride.testbed import Node, Testbed


def crash(joy: Node, service_pid: int) -> None:
    """SIGKILL the supervisor, then the service: the host-level crash that fail-open
    is for (a supervised service alone would just be restarted)."""
    with joy.inside():
        supervisor_pid = supervisor.alive(StateDir(joy.ifname))
    if supervisor_pid is not None:
        os.kill(supervisor_pid, signal.SIGKILL)
    os.kill(service_pid, signal.SIGKILL)

pytestmark = pytest.mark.integration

PORT = 8080
NO_LISTENER_PORT = 8090
RESERVED = "/proc/sys/net/ipv4/ip_local_reserved_ports"


def curl(peer: Node, joy: Node, port: int, timeout: float = 1.5) -> int:
    """curl's exit status: 0 served, 7 refused (RST), 28 timed out (nobody answered)."""
    return peer.run("curl", "-s", "-o", "/dev/null", "-m", str(timeout),
                    f"http://{joy.ip}:{port}/", check=False, timeout=30).returncode


def kernel_server(joy: Node, port: int) -> subprocess.Popen[bytes]:
    return joy.popen("python3", "-m", "http.server", str(port), "--bind", joy.ip,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def steer_counts(joy: Node) -> tuple[int, int]:
    """(frames steered into Joyride, frames left to a kernel socket on a steered port)."""
    counters = stats(joy, joy.ifname)["steer"]
    return counters["steered_tcp"], counters["pass_kernel_socket"]


def assert_steering(peer: Node, joy: Node, kernel_port: int, joyride_port: int) -> None:
    """A steered port where the kernel listens and no Joyride application does is the
    kernel's (bpf/steer.c); a steered port where nobody listens is refused by Joyride."""
    steered, passed = steer_counts(joy)
    assert curl(peer, joy, kernel_port) == 0
    steered_after, passed_after = steer_counts(joy)
    assert passed_after > passed and steered_after == steered
    assert curl(peer, joy, joyride_port) == 7  # Joyride's RST (RFC 9293 §3.10.7.1)
    assert steer_counts(joy)[0] > steered_after


def wait_served(peer: Node, joy: Node, port: int) -> None:
    wait_for(lambda: curl(peer, joy, port) == 0, timeout=10, what=f"kernel server :{port}")


def assert_nothing_left(bed: Testbed, prog_id: int, map_ids: list[int],
                        reserved_before: str) -> None:
    with bed.joy.inside():
        assert xdp.query(xdp.ifindex(bed.joy.ifname)) is None
    wait_for(lambda: not xdp.prog_exists(prog_id), what=f"program {prog_id} freed")
    wait_for(lambda: not any(xdp.map_exists(m) for m in map_ids), what="maps freed")
    reserved = bed.joy.run("cat", RESERVED).stdout.decode().strip()
    assert reserved == reserved_before
    assert "xdp" not in bed.joy.run("ip", "link", "show", bed.joy.ifname).stdout.decode()
    with bed.joy.inside():
        inode = os.stat("/proc/thread-self/ns/net").st_ino
    assert not Path(f"/run/joyride/net{inode}/{bed.joy.ifname}").exists()


def test_detach_restores_kernel_delivery_and_leaves_nothing(testbed: Testbed) -> None:
    joy, peer = testbed.joy, testbed.peer
    joy.sysctl("net.ipv4.ip_local_reserved_ports", "5000,60500")
    kernel_server(joy, PORT)
    wait_served(peer, joy, PORT)
    cli(joy, "attach", joy.ifname, "--ports", f"{PORT},{NO_LISTENER_PORT}")
    entry = status(joy, joy.ifname)
    prog_id, map_ids = entry["program"]["id"], entry["program"]["map_ids"]
    assert len(map_ids) == 7  # xsks, tcp_ports, udp_ports, config, counters, local_addrs(6)
    reserved = joy.run("cat", RESERVED).stdout.decode().strip()
    assert reserved == "5000,60000-60999"
    assert_steering(peer, joy, PORT, NO_LISTENER_PORT)

    out = cli(joy, "detach", joy.ifname)
    assert f"detached {joy.ifname}" in out.stdout
    assert curl(peer, joy, PORT) == 0
    # 60500 was reserved before Joyride came and stays reserved after it left.
    assert_nothing_left(testbed, prog_id, map_ids, "5000,60500")


def test_sigkill_fails_open_then_attach_recovers_and_detach_cleans_up(
        testbed: Testbed) -> None:
    joy, peer = testbed.joy, testbed.peer
    reserved_before = joy.run("cat", RESERVED).stdout.decode().strip()
    kernel_server(joy, PORT)
    wait_served(peer, joy, PORT)
    cli(joy, "attach", joy.ifname, "--ports", f"{PORT},{NO_LISTENER_PORT}")
    assert_steering(peer, joy, PORT, NO_LISTENER_PORT)

    first = status(joy, joy.ifname)
    crash(joy, first["service"]["pid"])
    wait_for(lambda: status(joy, joy.ifname)["state"] == "dead", what="service dead")
    # Fail-open: the program stays, its XSKMAP is empty, the kernel answers again...
    assert status(joy, joy.ifname)["program"]["id"] == first["program"]["id"]
    assert curl(peer, joy, PORT) == 0
    # ...and a port with no kernel listener is refused (RST), not black-holed.
    started = time.monotonic()
    assert curl(peer, joy, NO_LISTENER_PORT, timeout=5) == 7
    assert time.monotonic() - started < 3
    out = cli(joy, "status", joy.ifname, check=False)
    assert out.returncode == 3 and "died" in out.stdout

    # Attach recovers: the stale program is replaced, the reservation redone once.
    out = cli(joy, "attach", joy.ifname, "--ports", f"{PORT},{NO_LISTENER_PORT}")
    assert "cleaned up after a Joyride service that died" in out.stderr
    second = status(joy, joy.ifname)
    assert second["state"] == "running"
    assert second["program"]["id"] != first["program"]["id"]
    assert not xdp.prog_exists(first["program"]["id"])
    assert_steering(peer, joy, PORT, NO_LISTENER_PORT)  # steered again

    # Crash again; detach then removes the stale program, reservation and state.
    crash(joy, second["service"]["pid"])
    wait_for(lambda: status(joy, joy.ifname)["state"] == "dead", what="service dead")
    out = cli(joy, "detach", joy.ifname)
    assert f"removed stale steering program id {second['program']['id']}" in out.stdout
    assert curl(peer, joy, PORT) == 0
    assert_nothing_left(testbed, second["program"]["id"], second["program"]["map_ids"],
                        reserved_before)
    assert "not attached" in one_line_error(cli(joy, "detach", joy.ifname, check=False))


def test_foreground_service_stops_cleanly_on_sigterm(testbed: Testbed) -> None:
    joy = testbed.joy
    reserved_before = joy.run("cat", RESERVED).stdout.decode().strip()
    proc = joy.popen(JOYRIDE, "attach", joy.ifname, "--ports", str(PORT), "--foreground",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    assert "attached to" in line and "foreground" in line
    entry = status(joy, joy.ifname)
    assert entry["state"] == "running"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert_nothing_left(testbed, entry["program"]["id"], entry["program"]["map_ids"],
                        reserved_before)


def test_service_exits_and_cleans_up_when_its_interface_vanishes(testbed: Testbed) -> None:
    joy = testbed.joy
    reserved_before = joy.run("cat", RESERVED).stdout.decode().strip()
    cli(joy, "attach", joy.ifname, "--ports", str(PORT))
    entry = status(joy, joy.ifname)
    pid = entry["service"]["pid"]
    joy.run("ip", "link", "del", joy.ifname)  # takes the peer end with it

    # pid_alive counts a zombie as gone and tolerates the process vanishing between
    # its kill(0) and its read of /proc/<pid>/stat (this test's own copy did not).
    wait_for(lambda: not pid_alive(pid), timeout=10, what="service exit")
    assert joy.run("cat", RESERVED).stdout.decode().strip() == reserved_before
    assert json.loads(cli(joy, "status", "--json").stdout) == []
    wait_for(lambda: not xdp.prog_exists(entry["program"]["id"]), what="program freed")
