"""Least privilege (issue 21): after ``joyride attach`` the service runs as the
unprivileged ``joyride`` user with no capabilities, no_new_privs and its seccomp
allow-list, and still serves traffic, ``joyride ports``, outgoing connections (managed
neighbour entries through the supervisor's helper) and detach; a forbidden system call
kills it, the kernel serves meanwhile and the supervisor brings it back."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import socket
import threading
import time
from pathlib import Path

import pytest
from service_helpers import JOYRIDE, app_path, attached, cli, service_pid, stats, wait_for

from joyride.service import appclient, privdrop
from joyride.service.state import StateDir
from joyride.steer import xdp
from joyride.testbed import Testbed


def _have_user() -> bool:
    try:
        pwd.getpwnam(privdrop.DEFAULT_USER)
    except KeyError:
        return False
    return True


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not _have_user(),
                       reason="no 'joyride' system user (scripts/setup.sh creates it)"),
]


def status_fields(pid: int) -> list[dict[str, str]]:
    """/proc status of every thread of ``pid``."""
    out = []
    for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
        fields = {}
        for line in (task / "status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        out.append(fields)
    return out


def assert_unprivileged(pid: int) -> None:
    uid = pwd.getpwnam(privdrop.DEFAULT_USER).pw_uid
    threads = status_fields(pid)
    assert len(threads) >= 2  # the engine's thread, the netlink worker, tx threads
    for fields in threads:
        assert fields["Uid"].split() == [str(uid)] * 4, fields["Uid"]
        assert fields["Gid"].split()[0] != "0", fields["Gid"]
        assert fields["Groups"] == "", fields["Groups"]
        for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
            assert int(fields[cap], 16) == 0, (cap, fields[cap])
        assert fields["NoNewPrivs"] == "1"
        assert fields["Seccomp"] == "2"


def echo_server(lsock: socket.socket, count: int) -> threading.Thread:
    def serve() -> None:
        for _ in range(count):
            conn, _ = lsock.accept()
            with conn:
                conn.settimeout(20)
                while chunk := conn.recv(1 << 16):
                    conn.sendall(chunk)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def round_trip(bed: Testbed, port: int, size: int = 1 << 20, ip: str | None = None) -> None:
    """Send ``size`` random bytes from the peer, read the echo, compare by hash."""
    data = os.urandom(size)
    with bed.peer.inside():
        client = socket.create_connection((ip or bed.joy.ip, port), timeout=20)
    with client:
        sender = threading.Thread(target=client.sendall, args=(data,), daemon=True)
        sender.start()
        got = hashlib.sha256()
        received = 0
        while received < size:
            chunk = client.recv(1 << 16)
            assert chunk, f"EOF after {received} of {size} bytes"
            got.update(chunk)
            received += len(chunk)
        sender.join(20)
    assert got.hexdigest() == hashlib.sha256(data).hexdigest()


def kernel_reaches(bed: Testbed, server: socket.socket, port: int) -> bool:
    """Whether a connection from the peer to ``port`` reaches the kernel's ``server``."""
    try:
        with bed.peer.inside():
            client = socket.create_connection((bed.joy.ip, port), timeout=1.5)
    except OSError:
        return False  # steered: Joyride has no listener there
    with client:
        conn, _ = server.accept()
        conn.close()
    return True


def test_service_runs_unprivileged_and_serves() -> None:
    uid = pwd.getpwnam(privdrop.DEFAULT_USER).pw_uid
    with Testbed() as bed:
        with bed.joy.inside():
            reserved_before = Path("/proc/sys/net/ipv4/ip_local_reserved_ports").read_text()
        with attached(bed, "--ports", "8080"):
            pid = service_pid(bed)
            assert pid is not None
            assert_unprivileged(pid)
            path = app_path(bed.joy)
            # Deliveries are accepted from app.sock's owner: it must be the service's uid.
            assert path.stat().st_uid == uid
            assert path.with_name("control.sock").stat().st_uid == uid
            assert path.parent.stat().st_uid == 0  # nothing for the service to plant
            with bed.joy.inside():
                state = StateDir(bed.joy.ifname).load()
            assert state is not None and state.user == privdrop.DEFAULT_USER

            # An outgoing connection to a peer the kernel has no neighbour entry for:
            # the managed entry comes from the supervisor's helper.
            # (First: no traffic yet, so neither the kernel nor the engine knows the peer.)
            bed.joy.run("ip", "neigh", "flush", "dev", bed.joy.ifname)
            time.sleep(1.2)  # past the engine's own neighbour cache (NEIGHBOUR_TTL)
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
            neigh = bed.joy.run("ip", "-d", "neigh", "show", bed.peer.ip, "dev",
                                bed.joy.ifname).stdout
            assert b"managed" in neigh, neigh  # added by the helper, for the service

            with bed.joy.inside():
                lsock = appclient.listen(8080, path=path)
            with lsock:
                server = echo_server(lsock, 2)
                round_trip(bed, 8080)
                # An address added while attached: the service follows it (netlink
                # read, steering map update) and serves it.
                extra = bed.joy.ip.rsplit(".", 1)[0] + ".77"
                bed.joy.run("ip", "addr", "add", f"{extra}/{bed.joy.prefix_len}", "dev",
                            bed.joy.ifname)
                wait_for(lambda: stats(bed.joy)["datapath"]["engine"].get(
                    "address_changes", 0) >= 1, 10, "the service to see the new address")
                round_trip(bed, 8080, 1 << 18, ip=extra)
                server.join(20)

            # joyride ports: map updates on descriptors the service holds. A kernel
            # server on 8090 loses its connections to Joyride while 8090 is steered.
            with bed.joy.inside():
                kernel_server = socket.create_server(("0.0.0.0", 8090))
            with kernel_server:
                kernel_server.settimeout(5)
                assert kernel_reaches(bed, kernel_server, 8090)
                cli(bed.joy, "ports", bed.joy.ifname, "add", "8090")
                steered = stats(bed.joy)["steer"]["steered_tcp"]
                assert not kernel_reaches(bed, kernel_server, 8090)
                assert stats(bed.joy)["steer"]["steered_tcp"] > steered
                cli(bed.joy, "ports", bed.joy.ifname, "del", "8090")
                assert kernel_reaches(bed, kernel_server, 8090)
            out = cli(bed.joy, "status", bed.joy.ifname, "--json")
            assert json.loads(out.stdout)[0]["service"]["ports"] == "8080"

            assert pid == service_pid(bed)  # still the same, unkilled service
        # detach: the supervisor undid what the unprivileged service could not.
        with bed.joy.inside():
            assert xdp.query(xdp.ifindex(bed.joy.ifname)) is None
            assert not StateDir(bed.joy.ifname).path.exists()
            reserved_after = Path("/proc/sys/net/ipv4/ip_local_reserved_ports").read_text()
        assert reserved_after == reserved_before
        neigh = bed.joy.run("ip", "-d", "neigh", "show", "dev", bed.joy.ifname).stdout
        assert b"managed" not in neigh  # the helper removed its entries


def test_forbidden_call_kills_service_then_fail_open_and_restart() -> None:
    with Testbed() as bed:
        with bed.joy.inside():  # a path the service user can see: its state directory
            trigger = StateDir(bed.joy.ifname).path / "debug-trigger"
        try:
            bed.joy.run("env", f"{privdrop.TRIGGER_ENV}={trigger}", JOYRIDE, "attach",
                        bed.joy.ifname, "--ports", "8080", timeout=120)
            old = service_pid(bed)
            assert old is not None
            assert_unprivileged(old)
            path = app_path(bed.joy)
            with bed.joy.inside():
                lsock = appclient.listen(8080, path=path)
                kernel_server = socket.create_server(("0.0.0.0", 8081))
            with lsock, kernel_server:
                with bed.peer.inside():
                    client = socket.create_connection((bed.joy.ip, 8080), timeout=10)
                lsock.settimeout(10)
                conn, _ = lsock.accept()
                client.sendall(b"before")
                assert conn.recv(64) == b"before"

                trigger.touch()
                wait_for(lambda: not Path(f"/proc/{old}").exists(), 10,
                         "the forbidden call to kill the service")
                trigger.unlink()  # the restarted service must not trip it again
                # Clients are released: the application reads EOF or a reset, no hang.
                conn.settimeout(10)
                with contextlib.suppress(ConnectionResetError):
                    assert conn.recv(64) == b""
                conn.close()
                client.close()
                # The kernel serves throughout (fail-open).
                with bed.peer.inside():
                    probe = socket.create_connection((bed.joy.ip, 8081), timeout=5)
                probe.close()
                wait_for(lambda: (pid := service_pid(bed)) and pid != old
                         and stats(bed.joy), 60, "the supervisor to restart the service")
                with bed.joy.inside():
                    text = StateDir(bed.joy.ifname).log_path.read_text()
                assert "signal SIGSYS" in text
                new = service_pid(bed)
                assert new is not None
                assert_unprivileged(new)
                wait_for(lambda: "8080" in stats(bed.joy)["datapath"]["listeners"], 10,
                         "the restarted service to adopt the listener")
                server = echo_server(lsock, 1)
                round_trip(bed, 8080, 1 << 18)
                server.join(20)
        finally:
            cli(bed.joy, "detach", bed.joy.ifname, check=False)
            trigger.unlink(missing_ok=True)
        time.sleep(0.5)
        with bed.joy.inside():
            assert xdp.query(xdp.ifindex(bed.joy.ifname)) is None


def test_unknown_user_and_foreground_user_are_refused() -> None:
    with Testbed() as bed:
        out = cli(bed.joy, "attach", bed.joy.ifname, "--ports", "8080", "--user",
                  "no-such-user-jr", check=False)
        assert out.returncode != 0 and "no such unprivileged user" in out.stderr, out.stderr
        out = cli(bed.joy, "attach", bed.joy.ifname, "--ports", "8080", "--user",
                  privdrop.DEFAULT_USER, "--foreground", check=False, timeout=30)
        assert out.returncode != 0 and "--user needs the supervisor" in out.stderr, out.stderr
        with bed.joy.inside():
            assert xdp.query(xdp.ifindex(bed.joy.ifname)) is None  # nothing left behind
        assert service_pid(bed) is None
