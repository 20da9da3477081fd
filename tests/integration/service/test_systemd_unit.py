"""The systemd unit (issue 21): ``packaging/joyride@.service`` says what it should, systemd
accepts it, its exposure is low, and the service runs within exactly what it grants.

systemd is not PID 1 where these tests run (and this machine's units are not to be
touched), so the unit is checked offline (``systemd-analyze verify`` and ``security
--offline=yes``) and its ``ExecStart=`` is run on a test bed inside the unit's
capability bounding set, no_new_privs, system call filter, address families and
MemoryDenyWriteExecute, applied by ``unit_sandbox.py`` as systemd would apply them.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from service_helpers import JOYRIDE, REPO, app_path, cli, service_pid, stats
from test_least_privilege import _have_user, assert_unprivileged, echo_server, round_trip
from unit_sandbox import CAPS, parse_unit

from joyride.claim import privdrop
from joyride.claim.statedir import StateDir
from joyride.service import appclient
from joyride.steer import xdp
from joyride.testbed import Testbed

# $JOYRIDE_TEST_UNIT: another unit file (to measure what a narrower one breaks)
UNIT = Path(os.environ.get("JOYRIDE_TEST_UNIT") or REPO / "packaging" / "joyride@.service")
SANDBOX = Path(__file__).with_name("unit_sandbox.py")
EXPOSURE_MAX = 4.0  # systemd 252 rates the unit 3.5 ("OK"); 7.8 before issue 21

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")


def test_unit_directives() -> None:
    unit = parse_unit(UNIT)
    last = {key: values[-1] for key, values in unit.items()}
    # The drop: systemd starts the supervisor as root in the foreground; the service it
    # runs drops to the joyride user (the unit's comment says why not User=).
    assert "User" not in unit and "DynamicUser" not in unit
    assert "--foreground --user joyride" in last["ExecStart"]
    caps = set(last["CapabilityBoundingSet"].split())
    # Each is needed by the test below (packaging/joyride@.service says what for).
    assert caps == {"CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_CHOWN",
                    "CAP_SETUID", "CAP_SETGID", "CAP_KILL"}
    assert {c.lower().removeprefix("cap_") for c in caps} <= set(CAPS)
    assert last["AmbientCapabilities"] == ""
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "PrivateTmp": "yes",
                       "MemoryDenyWriteExecute": "yes",
                       "RestrictAddressFamilies": "AF_UNIX AF_NETLINK AF_XDP AF_INET AF_INET6",
                       "SystemCallArchitectures": "native"}.items():
        assert last[key] == value, key
    assert unit["SystemCallFilter"][0].split()[:2] == ["@system-service", "bpf"]
    assert "ProtectKernelTunables" not in unit  # the reserved ports' sysctl is written


@needs_analyze
def test_unit_verifies_and_its_exposure_is_low() -> None:
    out = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    out = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(UNIT)],
                         capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)
    assert match, out.stdout[-500:]
    assert float(match[1]) <= EXPOSURE_MAX, out.stdout


def _exec_start(bed: Testbed, ports: str) -> list[str]:
    """The unit's ``ExecStart=`` for the bed's interface (``%i``, ``${JOYRIDE_PORTS}``,
    an empty ``$JOYRIDE_ARGS``), with the venv's joyride for ``/usr/bin/env joyride``."""
    line = parse_unit(UNIT)["ExecStart"][-1]
    line = (line.replace("%i", bed.joy.ifname).replace("${JOYRIDE_PORTS}", ports)
            .replace("$JOYRIDE_ARGS", ""))
    argv = line.split()
    assert argv[:2] == ["/usr/bin/env", "joyride"]
    return [JOYRIDE, *argv[2:]]


def _caps_of(pid: int) -> set[str]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            value = int(line.split()[1], 16)
            return {f"CAP_{name.upper()}" for n, name in enumerate(CAPS) if value >> n & 1}
    raise AssertionError("no CapEff")


@needs_analyze
@pytest.mark.integration
@pytest.mark.skipif(not _have_user(), reason="no 'joyride' system user")
def test_service_runs_within_the_unit() -> None:
    """ExecStart under the unit's limits: ready, unprivileged service, traffic by hash,
    ``joyride ports``, an outgoing connection (the supervisor's neighbour helper), and
    systemd's stop (SIGTERM to the main process) undoes everything."""
    unit_caps = set(parse_unit(UNIT)["CapabilityBoundingSet"][-1].split())
    with Testbed() as bed:
        with bed.joy.inside():
            reserved_before = Path("/proc/sys/net/ipv4/ip_local_reserved_ports").read_text()
            state_dir = StateDir(bed.joy.ifname)
        main = bed.joy.popen(sys.executable, str(SANDBOX), str(UNIT), "--",
                             *_exec_start(bed, "8080"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            assert main.stdout is not None
            ready = main.stdout.readline()  # printed once the service serves
            assert "attached to" in ready, (ready, main.stderr and main.stderr.read())
            pid = service_pid(bed)
            assert pid is not None
            assert_unprivileged(pid)
            supervisor = int(state_dir.supervisor_pid_path.read_text())
            assert _caps_of(supervisor) == unit_caps  # root within the bounding set

            path = app_path(bed.joy)
            with bed.joy.inside():
                lsock = appclient.listen(8080, path=path)
            with lsock:
                server = echo_server(lsock, 1)
                round_trip(bed, 8080, 1 << 20)
                server.join(20)
            cli(bed.joy, "ports", bed.joy.ifname, "add", "8090")
            assert "8090" in cli(bed.joy, "status", bed.joy.ifname).stdout
            # Outgoing, to a peer the kernel has no neighbour entry for: the helper's.
            bed.joy.run("ip", "neigh", "flush", "dev", bed.joy.ifname)
            time.sleep(1.2)  # past the engine's own neighbour cache
            with bed.peer.inside():
                peer_server = socket.create_server(("0.0.0.0", 9500))
            with peer_server:
                with bed.joy.inside():
                    out_conn = appclient.connect(bed.peer.ip, 9500, path=path, timeout=15)
                peer_server.settimeout(15)
                accepted, _ = peer_server.accept()
                with out_conn, accepted:
                    out_conn.sendall(b"outgoing")
                    assert accepted.recv(64) == b"outgoing"
            assert stats(bed.joy)["datapath"]["engine"]  # the service answers still
            assert pid == service_pid(bed)  # never killed by its filter

            main.send_signal(signal.SIGTERM)  # systemctl stop (KillMode=mixed)
            assert main.wait(30) == 0, main.stderr and main.stderr.read()
        finally:
            if main.poll() is None:
                main.kill()
                main.wait(10)
                cli(bed.joy, "detach", bed.joy.ifname, check=False)
        with bed.joy.inside():
            assert xdp.query(xdp.ifindex(bed.joy.ifname)) is None
            assert not state_dir.path.exists()
            assert Path("/proc/sys/net/ipv4/ip_local_reserved_ports").read_text() == \
                reserved_before
        neigh = bed.joy.run("ip", "-d", "neigh", "show", "dev", bed.joy.ifname).stdout
        assert b"managed" not in neigh
        assert privdrop.DEFAULT_USER  # the user the unit names
        assert os.getuid() == 0
