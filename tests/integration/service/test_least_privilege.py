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

from joyride.claim import privdrop
from joyride.claim.statedir import StateDir
from joyride.service import appclient
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

            # joyride ports: map updates on descriptors the service holds. A steered
            # port stays its kernel listener's until a Joyride application listens
            # there too: the service itself then flags the port (SERVING, bpf/steer.c).
            with bed.joy.inside():
                kernel_server = socket.create_server(("0.0.0.0", 8090))
            with kernel_server:
                kernel_server.settimeout(5)
                assert kernel_reaches(bed, kernel_server, 8090)
                cli(bed.joy, "ports", bed.joy.ifname, "add", "8090")
                passed = stats(bed.joy)["steer"]["pass_kernel_socket"]
                assert kernel_reaches(bed, kernel_server, 8090)
                assert stats(bed.joy)["steer"]["pass_kernel_socket"] > passed
                with bed.joy.inside():
                    joyride_listener = appclient.listen(8090, path=path)
                with joyride_listener:
                    joyride_listener.settimeout(5)
                    steered = stats(bed.joy)["steer"]["steered_tcp"]
                    with bed.peer.inside():
                        client = socket.create_connection((bed.joy.ip, 8090), timeout=5)
                    with client:
                        conn, _ = joyride_listener.accept()
                        conn.close()
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


def test_unknown_user_is_refused() -> None:
    """(``--foreground --user U`` runs the supervisor in the foreground: the systemd
    unit does, ``test_systemd_unit.py``.)"""
    with Testbed() as bed:
        for extra in ((), ("--foreground",)):
            out = cli(bed.joy, "attach", bed.joy.ifname, "--ports", "8080", "--user",
                      "no-such-user-jr", *extra, check=False, timeout=60)
            assert out.returncode != 0 and "no such unprivileged user" in out.stderr, \
                (extra, out.stderr)
        with bed.joy.inside():
            assert xdp.query(xdp.ifindex(bed.joy.ifname)) is None  # nothing left behind
        assert service_pid(bed) is None


def _hostile_frames(bed: Testbed, live_sport: int, seed: int = 21) -> list[bytes]:
    """Malformed and fuzzed frames for the steered port 8080 (module of the steering
    tests' builders): a catalogue of broken headers and options, then seeded mutations
    of valid segments (half with their checksums fixed so they reach TCP), and ACKs with
    random sequence numbers on the live connection (outside its window: they must be
    dropped without touching its data)."""
    import random
    import struct
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "steer"))
    from steer_frames import ETH_P_IP, IPPROTO_TCP, Endpoints, mac_bytes

    from joyride.wire.checksum import internet_checksum

    ends = Endpoints(mac_bytes(bed.peer.mac), mac_bytes(bed.joy.mac), bed.peer.ip_bytes,
                     bed.joy.ip_bytes)
    port = 8080

    def frame(seg: bytes, **ip: object) -> bytes:
        return ends.eth(ETH_P_IP) + ends.ipv4(IPPROTO_TCP, seg, **ip)  # type: ignore[arg-type]

    catalogue = [
        frame(ends.tcp(port, doff=4)), frame(ends.tcp(port, doff=15)),
        frame(ends.tcp(port, doff=6, options=b"\x02")),  # MSS cut short
        frame(ends.tcp(port, doff=6, options=b"\x02\x00\x00\x00")),  # option length 0
        frame(ends.tcp(port, doff=6, options=b"\x08\xff\x00\x00")),  # length past the end
        frame(ends.tcp(port, doff=6, options=b"\x03\x03\xff\x00")),  # window scale 255
        frame(ends.tcp(port, doff=8, options=b"\x05\x0a" + bytes(10))),  # SACK on a SYN
        frame(ends.tcp(port, doff=15, options=b"\x01" * 39 + b"\x08")),
        frame(ends.tcp(port, flags=0x03)), frame(ends.tcp(port, flags=0x06)),  # SYN+FIN/RST
        frame(ends.tcp(port, flags=0x00)), frame(ends.tcp(port, flags=0xFF)),
        frame(ends.tcp(port, payload=b"x" * 600)),  # SYN with data
        frame(ends.tcp(port), ihl=4), frame(ends.tcp(port), ihl=15),
        frame(ends.tcp(port), tot_len=20), frame(ends.tcp(port), tot_len=1500),
        frame(ends.tcp(port), frag=0x2000), frame(ends.tcp(port), frag=0x0010),
        frame(ends.tcp(port), version=6),
        frame(ends.tcp(port))[:14 + 20 + 10],  # truncated TCP header
    ]
    rng = random.Random(seed)

    def fix_sums(raw: bytearray) -> None:
        ihl = (raw[14] & 0x0F) * 4
        if ihl < 20 or len(raw) < 14 + ihl + 20:
            return
        raw[24:26] = b"\0\0"
        raw[24:26] = struct.pack("!H", internet_checksum(bytes(raw[14:14 + ihl])))
        seg = bytearray(raw[14 + ihl:])
        seg[16:18] = b"\0\0"
        pseudo = bytes(raw[26:34]) + struct.pack("!BBH", 0, IPPROTO_TCP, len(seg))
        raw[14 + ihl + 16:14 + ihl + 18] = struct.pack("!H", internet_checksum(pseudo + seg))

    fuzzed = []
    for i in range(1500):
        sport = rng.choice((live_sport + 1, 40000 + rng.randrange(1000)))
        opts = bytes(rng.randrange(256) for _ in range(4 * rng.randrange(11)))
        seg = ends.tcp(port, sport=sport, doff=5 + len(opts) // 4,
                       flags=rng.choice((0x02, 0x10, 0x18, 0x11, 0x12, 0x01, 0x29)),
                       options=opts, payload=os.urandom(rng.randrange(0, 300)))
        raw = bytearray(frame(seg))
        for _ in range(rng.randrange(1, 6)):  # flip bytes in the IP and TCP headers
            raw[rng.randrange(14, min(len(raw), 14 + 20 + 60))] = rng.randrange(256)
        if rng.random() < 0.2:
            del raw[rng.randrange(14, len(raw)):]
        if i % 2 and len(raw) >= 14 + 40:
            raw[23] = IPPROTO_TCP  # keep it TCP so the sums make it reach the stack
            fix_sums(raw)
        fuzzed.append(bytes(raw))
    on_live = [frame(ends.tcp(port, sport=live_sport, flags=0x10,
                              options=bytes(rng.randrange(256) for _ in range(8)), doff=7))
               for _ in range(300)]
    for n, raw_frame in enumerate(on_live):  # random seq and ack (catalogue builds 1/0)
        raw = bytearray(raw_frame)
        raw[14 + 20 + 4:14 + 20 + 12] = struct.pack("!II", rng.getrandbits(32),
                                                    rng.getrandbits(32))
        fix_sums(raw)
        on_live[n] = bytes(raw)
    return catalogue + fuzzed + on_live


def test_hostile_traffic_under_the_filter() -> None:
    """Malformed and fuzzed frames at a steered port, and on a live connection, reach
    the service with its seccomp filter on (the default): it stays the same process,
    unprivileged and filtered, the live connection's data still match by hash, and new
    connections are served."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "steer"))
    from steer_frames import send_raw

    with Testbed() as bed, attached(bed, "--ports", "8080"):
        pid = service_pid(bed)
        assert pid is not None
        assert_unprivileged(pid)  # Seccomp: 2 in every thread
        path = app_path(bed.joy)
        with bed.joy.inside():
            lsock = appclient.listen(8080, path=path)
        with lsock:
            server = echo_server(lsock, 2)
            with bed.peer.inside():
                live = socket.create_connection((bed.joy.ip, 8080), timeout=20)
            with live:
                live.sendall(b"hello")
                assert live.recv(64) == b"hello"
                frames = _hostile_frames(bed, live.getsockname()[1])
                before = stats(bed.joy)["steer"]["steered_tcp"]
                with bed.peer.inside():
                    send_raw(bed.peer.ifname, frames)
                wait_for(lambda: stats(bed.joy)["steer"]["steered_tcp"] - before >= 500,
                         10, "the hostile frames to reach the service")
                data = os.urandom(1 << 18)
                sender = threading.Thread(target=live.sendall, args=(data,), daemon=True)
                sender.start()
                got = hashlib.sha256()
                received = 0
                while received < len(data):
                    chunk = live.recv(1 << 16)
                    assert chunk, f"EOF after {received} bytes"
                    got.update(chunk)
                    received += len(chunk)
                sender.join(20)
                assert got.hexdigest() == hashlib.sha256(data).hexdigest()
            round_trip(bed, 8080, 1 << 18)
            server.join(20)
        assert service_pid(bed) == pid  # never killed: neither by a frame nor its filter
        assert_unprivileged(pid)
