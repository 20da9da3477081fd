"""A steered port and the kernel's own sockets on it (bpf/steer.c, ``kernel_owns``).

Steering a port takes its frames from the kernel, but not those of connections the
kernel already has, and not the SYNs a kernel listener is waiting for when no Joyride
application listens on the port. Data is checked end to end (sha256).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from typing import Any

import pytest
from service_helpers import JOYRIDE, app_path, attached

from joyride.service import appclient
from joyride.testbed import Testbed

pytestmark = pytest.mark.integration

PORT = 8090


def steer_counters(bed: Testbed) -> dict[str, int]:
    out = bed.joy.run(JOYRIDE, "stats", bed.joy.ifname, "--json").stdout
    return dict(json.loads(out)["steer"])


def round_trip(client: socket.socket, server_side: socket.socket, size: int) -> None:
    """``size`` random bytes client -> server and echoed back, both hashes checked.

    The client sends from a thread while it reads: an echo larger than the socket
    buffers would otherwise block both ends."""
    data = os.urandom(size)
    echoed = bytearray()
    errors: list[BaseException] = []

    def echo() -> None:
        got = 0
        try:
            while got < size:
                chunk = server_side.recv(1 << 16)
                assert chunk, "the server side saw EOF"
                got += len(chunk)
                server_side.sendall(chunk)
        except BaseException as exc:
            errors.append(exc)

    def send() -> None:
        try:
            client.sendall(data)
        except BaseException as exc:
            errors.append(exc)

    helpers = [threading.Thread(target=echo), threading.Thread(target=send)]
    for helper in helpers:
        helper.start()
    while len(echoed) < size and not errors:
        chunk = client.recv(1 << 16)
        assert chunk, "the client saw EOF"
        echoed += chunk
    for helper in helpers:
        helper.join(10)
    assert not errors, errors
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(data).digest()


def connect_and_echo(bed: Testbed, listener: socket.socket, size: int) -> Any:
    """The peer connects to PORT; ``listener`` must accept it; ``size`` bytes are echoed
    (sha256 checked). Returns the peer address ``listener`` saw."""
    listener.settimeout(10)
    with bed.peer.inside():
        client = socket.create_connection((bed.joy.ip, PORT), timeout=10)
    with client:
        conn, peer = listener.accept()
        conn.settimeout(10)
        with conn:
            round_trip(client, conn, size)
    return peer


def test_live_kernel_connection_survives_attach(testbed: Testbed) -> None:
    """Attaching to a port breaks none of the kernel's established connections on it."""
    bed = testbed
    with bed.joy.inside():
        server = socket.create_server((bed.joy.ip, PORT))
    with bed.peer.inside():
        client = socket.create_connection((bed.joy.ip, PORT), timeout=10)
    with server, client:
        conn, _ = server.accept()
        conn.settimeout(10)
        with conn:
            round_trip(client, conn, 64 << 10)
            with attached(bed, "--ports", str(PORT)):
                before = steer_counters(bed)
                round_trip(client, conn, 4 << 20)
                after = steer_counters(bed)
            round_trip(client, conn, 64 << 10)  # and after detach
    assert after["pass_kernel_socket"] - before["pass_kernel_socket"] > 0
    assert after["steered_tcp"] == before["steered_tcp"]


def test_dual_stack_kernel_listener_is_reached_over_ipv4(testbed: Testbed) -> None:
    """A program listening on [::] (dual-stack) is left to the kernel by the shim; IPv4
    clients on the steered port reach it there, not a service with no listener."""
    bed = testbed
    with attached(bed, "--ports", str(PORT)):
        with bed.joy.inside():
            listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        with listener:
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            listener.bind(("::", PORT))
            listener.listen(4)
            before = steer_counters(bed)
            peer = connect_and_echo(bed, listener, 1 << 20)
            after = steer_counters(bed)
    assert peer[0] == f"::ffff:{bed.peer.ip}"
    assert after["pass_kernel_socket"] - before["pass_kernel_socket"] > 0
    assert after["steered_tcp"] == before["steered_tcp"]


def test_a_joyride_listener_comes_before_a_kernel_listener(testbed: Testbed) -> None:
    """Where both listen (the kernel cannot see Joyride's listener to refuse the second
    bind), new connections are Joyride's: the port was steered and is served."""
    bed = testbed
    with attached(bed, "--ports", str(PORT)):
        with bed.joy.inside():
            joyride_side = appclient.listen(PORT, path=app_path(bed.joy))
            kernel_side = socket.create_server(("0.0.0.0", PORT))
        with joyride_side, kernel_side:
            kernel_side.setblocking(False)
            before = steer_counters(bed)
            connect_and_echo(bed, joyride_side, 1 << 20)
            with pytest.raises(BlockingIOError):
                kernel_side.accept()
            after = steer_counters(bed)
    assert after["steered_tcp"] > before["steered_tcp"]
    assert after["pass_kernel_socket"] == before["pass_kernel_socket"]


def test_syn_cookie_handshake_of_a_kernel_listener_completes(testbed: Testbed) -> None:
    """With SYN cookies always on (tcp_syncookies=2) the kernel keeps no request socket:
    the handshake's last ACK finds only the listener, and its cookie tells it is the
    kernel's (bpf_tcp_check_syncookie), not a Joyride connection's."""
    bed = testbed
    bed.joy.sysctl("net.ipv4.tcp_syncookies", "2")
    with attached(bed, "--ports", str(PORT)):
        with bed.joy.inside():
            listener = socket.create_server((bed.joy.ip, PORT))
        with listener:
            before = steer_counters(bed)
            connect_and_echo(bed, listener, 256 << 10)
            after = steer_counters(bed)
    syncookies = int(bed.joy.run("nstat", "-az", "TcpExtSyncookiesRecv").stdout.split()[-2])
    assert syncookies >= 1, "the kernel did not take a SYN cookie"
    assert after["steered_tcp"] == before["steered_tcp"]


def port_flags(bed: Testbed, port: int) -> int:
    """The steering program's ports-map value for TCP ``port`` (bpftool)."""
    out = bed.joy.run(JOYRIDE, "status", bed.joy.ifname, "--json").stdout
    for map_id in json.loads(out)[0]["program"]["map_ids"]:
        info = json.loads(bed.joy.run("bpftool", "-j", "map", "show", "id", str(map_id)).stdout)
        if info.get("name") == "tcp_ports":
            key = [str(b) for b in port.to_bytes(4, "little")]
            got = json.loads(bed.joy.run("bpftool", "-j", "map", "lookup", "id", str(map_id),
                                         "key", *key).stdout)
            return int(got["value"][0], 16) if isinstance(got["value"], list) else int(
                got["value"])
    raise AssertionError("no tcp_ports map")


def test_a_kernel_connection_outlives_a_joyride_listener_on_its_port(testbed: Testbed) -> None:
    """A connection the kernel's listener took before a Joyride application listened on
    the port keeps working (KERNEL_CONNS keeps the lookup on); once it is closed the
    flag goes, and the port's frames are Joyride's without a lookup."""
    bed = testbed
    with attached(bed, "--ports", str(PORT)):
        with bed.joy.inside():
            kernel_listener = socket.create_server(("0.0.0.0", PORT))
        with kernel_listener:
            kernel_listener.settimeout(10)
            with bed.peer.inside():
                old_client = socket.create_connection((bed.joy.ip, PORT), timeout=10)
            old_conn, _ = kernel_listener.accept()
            old_conn.settimeout(10)
            with bed.joy.inside():
                joyride_listener = appclient.listen(PORT, path=app_path(bed.joy))
            with joyride_listener:
                assert port_flags(bed, PORT) & 0x0C == 0x0C  # SERVING | KERNEL_CONNS
                with old_client, old_conn:
                    round_trip(old_client, old_conn, 1 << 20)
                connect_and_echo(bed, joyride_listener, 1 << 20)
                deadline = time.monotonic() + 10
                while port_flags(bed, PORT) & 0x08 and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert port_flags(bed, PORT) & 0x0C == 0x04  # SERVING alone
