"""`joyride attach` on a veth bed, the kernel as the peer: what goes where, and counts.

One service is attached for the whole module (BCC compiles cost seconds); every test
measures differences of counters and restores the ports it changes.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from steer_cli import cli, pin_neighbours, stats, status, wait_for
from steer_frames import (
    ETH_P_ARP,
    ETH_P_IP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    Endpoints,
    send_raw,
)

from joyride.testbed import Testbed

pytestmark = pytest.mark.integration

PORT = 8080  # accelerated from the start
KERNEL_PORT = 8081  # a kernel server's port, never steered
RUNTIME_PORT = 9100  # added and removed while attached


@pytest.fixture(scope="module")
def attached(quiet_bed: Testbed) -> Iterator[Testbed]:
    out = cli(quiet_bed.joy, "attach", quiet_bed.joy.ifname, "--ports", str(PORT))
    assert "attached to" in out.stdout
    try:
        yield quiet_bed
    finally:
        cli(quiet_bed.joy, "detach", quiet_bed.joy.ifname, check=False)


def snapshot(bed: Testbed) -> dict[str, Any]:
    return stats(bed.joy, bed.joy.ifname)


def delta(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, int], int]:
    """(nonzero steering counter changes, frames the AF_XDP sockets received)."""
    steer = {k: v - before["steer"][k] for k, v in after["steer"].items()
             if v != before["steer"][k]}
    rx = sum(q["rx_frames"] for q in after["queues"].values()) - sum(
        q["rx_frames"] for q in before["queues"].values())
    return steer, rx


def settle(bed: Testbed, before: dict[str, Any], want: tuple[dict[str, int], int]) -> None:
    """Wait until the counters reach ``want``, then check they stay there (no extras)."""
    seen: list[tuple[dict[str, int], int]] = []

    def reached() -> bool:
        seen.append(delta(before, snapshot(bed)))
        return seen[-1] == want

    try:
        wait_for(reached, timeout=5.0, what=f"counters {want}")
    except AssertionError:
        raise AssertionError(f"counters {seen[-1]} != expected {want}") from None
    time.sleep(0.2)
    assert delta(before, snapshot(bed)) == want


@pytest.fixture
def kernel_listener(attached: Testbed) -> Iterator[socket.socket]:
    """A kernel TCP listener on PORT in the Joyride namespace: it must see nothing."""
    with attached.joy.inside():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", PORT))
        sock.listen(8)
        sock.setblocking(False)
        yield sock
    finally:
        sock.close()


def test_status_reports_the_running_service(attached: Testbed) -> None:
    entry = status(attached.joy, attached.joy.ifname)
    assert entry["state"] == "running"
    svc = entry["service"]
    assert svc["ports"] == str(PORT) and svc["ephemeral"] == "60000-60999"
    assert svc["queues"] == [0]
    assert entry["program"]["name"] == "joyride_steer"
    assert entry["program"]["id"] == svc["prog_id"]
    reserved = attached.joy.run("cat", "/proc/sys/net/ipv4/ip_local_reserved_ports")
    assert reserved.stdout.decode().strip() == "60000-60999"


def test_kernel_keeps_serving_other_ports_ping_and_arp(attached: Testbed) -> None:
    joy, peer = attached.joy, attached.peer
    server = joy.popen("python3", "-m", "http.server", str(KERNEL_PORT), "--bind", joy.ip,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://{joy.ip}:{KERNEL_PORT}/"
        wait_for(lambda: peer.run("curl", "-s", "-o", "/dev/null", "-m", "2", url,
                                  check=False).returncode == 0, timeout=10, what="http.server")
        for _ in range(3):
            peer.run("curl", "-sf", "-o", "/dev/null", "-m", "5", url)
    finally:
        server.terminate()
        server.wait(5)
    peer.run("ping", "-c", "2", "-i", "0.2", "-W", "2", joy.ip)
    # ARP: forget the pinned entry, so the next ping must resolve through the program.
    peer.run("ip", "neigh", "flush", "dev", peer.ifname)
    try:
        peer.run("ping", "-c", "1", "-W", "2", joy.ip)
        neigh = peer.run("ip", "neigh", "show", joy.ip, "dev", peer.ifname).stdout.decode()
        assert joy.mac in neigh
    finally:
        pin_neighbours(attached)


def test_frames_for_the_port_land_in_the_socket_not_the_kernel(attached: Testbed) -> None:
    before = snapshot(attached)
    out = attached.peer.run("curl", "-s", "-m", "1.5", f"http://{attached.joy.ip}:{PORT}/",
                            check=False)
    # Refused by Joyride's engine (no application listens there: RFC 9293 §3.10.7.1 RST).
    assert out.returncode == 7
    steer, rx = delta(before, snapshot(attached))
    assert steer.get("steered_tcp", 0) >= 1
    assert rx == steer["steered_tcp"]
    assert "redirect_miss" not in steer


def test_a_kernel_listener_keeps_the_port_no_joyride_application_serves(
        attached: Testbed, kernel_listener: socket.socket) -> None:
    """bpf/steer.c: a SYN finds the kernel's listener and no Joyride one, so it is the
    kernel's; so is the rest of that connection (its socket is found by its 4-tuple)."""
    before = snapshot(attached)
    with attached.peer.inside():
        client = socket.create_connection((attached.joy.ip, PORT), timeout=5)
    with client:
        kernel_listener.settimeout(5)
        conn, _ = kernel_listener.accept()
        with conn:
            client.sendall(b"ping")
            conn.settimeout(5)
            assert conn.recv(16) == b"ping"
    steer, rx = delta(before, snapshot(attached))
    assert steer.get("pass_kernel_socket", 0) >= 3  # SYN, handshake ACK, data
    assert "steered_tcp" not in steer and rx == 0


def test_counters_equal_the_traffic_sent_per_reason(attached: Testbed,
                                                    to_joy: Endpoints) -> None:
    e = to_joy
    frames = (
        [e.tcp_frame(PORT)] * 5
        + [e.tcp_frame(KERNEL_PORT)] * 3
        + [e.udp_frame(5353)] * 2
        + [e.eth(ETH_P_ARP) + bytes(28)] * 2
        + [e.ip_frame(IPPROTO_TCP, e.tcp(PORT), frag=0x2000)] * 2
        + [e.ip_frame(IPPROTO_TCP, e.tcp(PORT), frag=0x0020)] * 1
        + [e.ip_frame(IPPROTO_TCP, e.tcp(PORT), ihl=4)] * 4
        + [e.ip_frame(IPPROTO_TCP, e.tcp(PORT), tot_len=1400)] * 3
        + [e.ip_frame(IPPROTO_TCP, e.tcp(PORT), version=6)] * 1
        + [e.ip_frame(IPPROTO_TCP, e.tcp(PORT)[:12])] * 2
        + [e.ip_frame(IPPROTO_TCP, e.tcp(PORT, doff=3))] * 1
        + [e.ip_frame(IPPROTO_UDP, e.udp(PORT, length=3))] * 1
        + [e.eth(ETH_P_IP) + e.ipv4(IPPROTO_TCP, e.tcp(PORT))[:16]] * 2
        + [e.tcp_frame(PORT, vlan=42)] * 3
    )
    before = snapshot(attached)
    with attached.peer.inside():
        send_raw(attached.peer.ifname, frames)
    settle(attached, before, ({
        "steered_tcp": 5, "pass_port_tcp": 3, "pass_port_udp": 2, "pass_not_ipv4": 2,
        "pass_fragment": 3, "err_ip_ihl": 4, "err_ip_totlen": 3, "err_ip_version": 1,
        "err_tcp_trunc": 3, "err_udp_trunc": 1, "err_ip_trunc": 2, "pass_vlan": 3,
    }, 5))


def test_ports_added_and_removed_at_run_time(attached: Testbed, to_joy: Endpoints) -> None:
    joy = attached.joy
    before = snapshot(attached)
    with attached.peer.inside():
        send_raw(attached.peer.ifname, [to_joy.tcp_frame(RUNTIME_PORT)] * 2)
    settle(attached, before, ({"pass_port_tcp": 2}, 0))

    out = cli(joy, "ports", joy.ifname, "add", f"{RUNTIME_PORT},{RUNTIME_PORT + 1}")
    assert f"{PORT},{RUNTIME_PORT}-{RUNTIME_PORT + 1}" in out.stdout
    before = snapshot(attached)
    with attached.peer.inside():
        send_raw(attached.peer.ifname, [to_joy.tcp_frame(RUNTIME_PORT)] * 4)
    settle(attached, before, ({"steered_tcp": 4}, 4))

    cli(joy, "ports", joy.ifname, "del", f"{RUNTIME_PORT}-{RUNTIME_PORT + 1}")
    assert cli(joy, "ports", joy.ifname, "list").stdout.strip() == str(PORT)
    before = snapshot(attached)
    with attached.peer.inside():
        send_raw(attached.peer.ifname, [to_joy.tcp_frame(RUNTIME_PORT)] * 3)
    settle(attached, before, ({"pass_port_tcp": 3}, 0))


def test_ephemeral_range_is_steered(attached: Testbed, to_joy: Endpoints) -> None:
    before = snapshot(attached)
    with attached.peer.inside():
        send_raw(attached.peer.ifname, [to_joy.tcp_frame(60000), to_joy.tcp_frame(60999),
                                        to_joy.tcp_frame(61000)])
    settle(attached, before, ({"steered_tcp": 2, "pass_port_tcp": 1}, 2))


def test_stats_watch_reports_changes(attached: Testbed, to_joy: Endpoints) -> None:
    out = cli(attached.joy, "stats", attached.joy.ifname, "--watch", "0.2", "--count", "2")
    assert out.stdout.count("change over 0.2 s") == 2
