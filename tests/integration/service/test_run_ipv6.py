"""IPv6 through the service (issue 18): unmodified servers under ``joyride run`` on a
dual-stack bed (both ends with an IPv4 and an RFC 5180 IPv6 address, ``nodad``), kernel
clients of both families, data checked by hash; neighbour discovery and ICMPv6 stay the
kernel's while attached; a kernel listener left to the kernel keeps its IPv6 clients."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_helpers import (
    JOYRIDE,
    app_path,
    attached,
    cli,
    stats,
    wait_listening,
    wait_port,
)

from joyride.bench import servers
from joyride.service import appclient
from joyride.testbed import Testbed

pytestmark = pytest.mark.integration

NGINX_PORT = 8094
ECHO_PORT = 8095
KERNEL_PORT = 8096
SPLIT_PORT = 8097
IPERF_PORTS = (8098, 8099)  # one iperf3 server each way (test_iperf3_6_both_ways)


@pytest.fixture(scope="module")
def bed6() -> Iterator[Testbed]:
    with Testbed(ipv6=True) as bed, attached(bed, "--ports", "8094-8099"):
        yield bed


def delivered(bed: Testbed, counter: str = "delivered") -> int:
    """Connections the service delivered (those C opened included), or of those the
    IPv6 ones (``delivered_ipv6``)."""
    return int(stats(bed.joy)["datapath"]["service"].get(counter, 0))


def test_curl_6_and_curl_4_to_one_dual_stack_nginx(bed6: Testbed, tmp_path: Path) -> None:
    bed = bed6
    body = os.urandom(3 << 20)
    # As Debian's default site: "listen 80" and "listen [::]:80" (nginx makes the
    # second IPV6_V6ONLY), two workers sharing each listener.
    conf = servers.nginx_conf(tmp_path, NGINX_PORT, workers=2, reuseport=False, ipv6=True,
                              access_log=True)
    (tmp_path / "www" / "blob.bin").write_bytes(body)
    before = delivered(bed)
    server = bed.joy.popen(JOYRIDE, "run", "--", "nginx", "-c", str(conf), "-e",
                           str(tmp_path / "error.log"), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        wait_port(bed.peer, bed.joy.ip, NGINX_PORT)
        got = {}
        for flag, host in (("-4", bed.joy.ip), ("-6", f"[{bed.joy.ip6}]")):
            out = tmp_path / f"got{flag}.bin"
            bed.peer.run("curl", flag, "-sf", "-o", str(out),
                         f"http://{host}:{NGINX_PORT}/blob.bin", timeout=60)
            got[flag] = hashlib.sha256(out.read_bytes()).hexdigest()
        assert got == {"-4": hashlib.sha256(body).hexdigest(),
                       "-6": hashlib.sha256(body).hexdigest()}
        # Both through Joyride (the probe's connection too), and nginx saw the real
        # peers: getpeername/getsockname through the shim, sockaddr_in6 for IPv6.
        assert delivered(bed) - before >= 3
        log = (tmp_path / "access.log").read_text().splitlines()
        assert f"{bed.peer.ip} {bed.joy.ip} 200" in log
        assert f"{bed.peer.ip6} {bed.joy.ip6} 200" in log
        # joyride ss lists both listeners, as ss does the kernel's.
        rows = json.loads(cli(bed.joy, "ss", bed.joy.ifname, "--json", "-l").stdout)
        local = sorted(r["local"] for r in rows if r["local"].endswith(f":{NGINX_PORT}"))
        assert local == [f"0.0.0.0:{NGINX_PORT}", f"[::]:{NGINX_PORT}"]
    finally:
        server.terminate()
        server.wait(10)


ECHO_SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", int(sys.argv[1])))
s.listen(8)
print("listening", flush=True)
for _ in range(int(sys.argv[2])):
    conn, peer = s.accept()
    with conn:
        conn.sendall((f"{peer[0]} {conn.getsockname()[0]}\n").encode())
        while data := conn.recv(65536):
            conn.sendall(data)
"""


def echo(bed: Testbed, host: str, family: int, size: int) -> tuple[str, bytes]:
    """Connect from the peer, read the server's line (what it saw), echo ``size``
    random bytes; (line, the bytes that came back)."""
    payload = os.urandom(size)
    with bed.peer.inside():
        sock = socket.socket(family, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(30)
        sock.connect((host, ECHO_PORT))
        stream = sock.makefile("rb")
        line = stream.readline().decode().strip()
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        back = stream.read()
    assert hashlib.sha256(back).digest() == hashlib.sha256(payload).digest()
    return line, back


def test_a_dual_stack_socket_takes_both_families(bed6: Testbed, tmp_path: Path) -> None:
    """A Python server on [::] with IPV6_V6ONLY 0 (Linux's default): an IPv6 client
    and an IPv4 one, each echoed 2 MB; the IPv4 one appears v4-mapped, as on Linux."""
    bed = bed6
    before, before6 = delivered(bed), delivered(bed, "delivered_ipv6")
    server = bed.joy.popen(JOYRIDE, "run", "--", "python3", "-c", ECHO_SERVER,
                           str(ECHO_PORT), "2", stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    try:
        assert server.stdout is not None
        assert server.stdout.readline() == b"listening\n"
        line6, _ = echo(bed, bed.joy.ip6 or "", socket.AF_INET6, 2 << 20)
        line4, _ = echo(bed, bed.joy.ip, socket.AF_INET, 2 << 20)
        assert line6 == f"{bed.peer.ip6} {bed.joy.ip6}"
        assert line4 == f"::ffff:{bed.peer.ip} ::ffff:{bed.joy.ip}"
        assert delivered(bed) - before == 2
        assert delivered(bed, "delivered_ipv6") - before6 == 1  # counted per family
        server.wait(30)
        assert server.returncode == 0, server.stderr.read() if server.stderr else b""
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)


def test_a_kernel_ipv6_listener_keeps_its_clients_and_nd_works(bed6: Testbed) -> None:
    """A kernel [::] listener on a steered port (no Joyride application there) keeps
    its IPv6 clients (no SERVING6: the steering program's socket lookup finds it), and
    ping6 with neighbour discovery works both ways while attached."""
    bed = bed6
    bed.joy.run("ip", "-6", "neigh", "flush", "dev", bed.joy.ifname)
    bed.peer.run("ip", "-6", "neigh", "flush", "dev", bed.peer.ifname)
    for node, target in ((bed.joy, bed.peer.ip6), (bed.peer, bed.joy.ip6)):
        node.run("ping", "-6", "-c", "2", "-i", "0.2", "-W", "5", target or "", timeout=30)
    with bed.joy.inside():
        listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    with listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("::", KERNEL_PORT))
        listener.listen(4)
        listener.settimeout(30)
        with bed.peer.inside():
            client = socket.create_connection((bed.joy.ip6, KERNEL_PORT), timeout=30)
        conn, peer = listener.accept()
        with client, conn:
            payload = os.urandom(1 << 20)
            sender = threading.Thread(target=lambda: (client.sendall(payload),
                                                      client.shutdown(socket.SHUT_WR)))
            sender.start()
            conn.settimeout(30)
            got = b""
            while chunk := conn.recv(65536):
                got += chunk
            sender.join(30)
    assert peer[0] == bed.peer.ip6
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()


def test_joyride_takes_ipv4_and_the_kernel_ipv6_on_one_port(bed6: Testbed) -> None:
    """A Joyride IPv4 listener and a kernel IPV6_V6ONLY one share a port (as two kernel
    sockets may): IPv4 clients reach Joyride (SERVING), IPv6 ones the kernel (no
    SERVING6), each with its bytes."""
    bed = bed6
    before = delivered(bed)
    with bed.joy.inside():
        joyride_side = appclient.listen(SPLIT_PORT, path=app_path(bed.joy))
        kernel_side = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    with joyride_side, kernel_side:
        kernel_side.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        kernel_side.bind(("::", SPLIT_PORT))
        kernel_side.listen(4)
        for listener, host in ((joyride_side, bed.joy.ip), (kernel_side, bed.joy.ip6)):
            listener.settimeout(30)
            with bed.peer.inside():
                client = socket.create_connection((host, SPLIT_PORT), timeout=30)
            conn, _ = listener.accept()
            with client, conn:
                payload = os.urandom(64 << 10)
                client.sendall(payload)
                client.shutdown(socket.SHUT_WR)
                conn.settimeout(30)
                got = b""
                while chunk := conn.recv(65536):
                    got += chunk
            assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    assert delivered(bed) - before == 1  # the IPv4 one only


def test_outgoing_curl_6_carried_by_joyride(bed6: Testbed, tmp_path: Path) -> None:
    """``joyride run --outgoing -- curl -6``: an AF_INET6 connect goes through the
    service (its ephemeral range, getsockname in sockaddr_in6), byte-exact from a
    kernel server in the peer."""
    bed = bed6
    root = tmp_path / "peer-www"
    root.mkdir()
    body = os.urandom(2 << 20)
    (root / "blob.bin").write_bytes(body)
    server = bed.peer.popen("python3", "-m", "http.server", "-b", "::", "-d", str(root),
                            "7086", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(bed.joy, bed.peer.ip, 7086)  # [::] is dual-stack: IPv4 answers too
        before = stats(bed.joy)["datapath"]["service"].get("connect_started", 0)
        out = tmp_path / "got.bin"
        proc = bed.joy.run(JOYRIDE, "run", "--outgoing", "--", "curl", "-6", "-sS", "-f",
                           "-o", str(out), "-w", "%{local_ip} %{local_port}",
                           f"http://[{bed.peer.ip6}]:7086/blob.bin", timeout=60)
        assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(body).digest()
        assert b"joyride:" not in proc.stderr  # no fallback notice: the service carried it
        local_ip, local_port = proc.stdout.decode().split()
        assert local_ip == bed.joy.ip6
        assert 60000 <= int(local_port) <= 60999  # the service's ephemeral range
        assert stats(bed.joy)["datapath"]["service"]["connect_started"] == before + 1
    finally:
        server.terminate()
        server.wait(10)


def test_iperf3_6_both_ways(bed6: Testbed) -> None:
    """iperf3 over IPv6, client to server and reversed (-R), 2 s each: iperf3 checks
    its own stream; the service carried it (its delivered count rose). The server's
    control connection is a blocking socket it selects on: a stale token hung it.

    One server each way: an iperf3 server still finishing one test refuses the next
    client as busy (and its close, with the client's cookie unread, resets the
    connection), so a second client straight after the first raced it (CI, once)."""
    bed = bed6
    assert bed.joy.ip6 is not None
    before = delivered(bed)
    servers = [bed.joy.popen(JOYRIDE, "run", "--", "iperf3", "-s", "-p", str(port),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for port in IPERF_PORTS]
    try:
        # No probe: iperf3 counts a connection that closes at once as a failed test
        # and builds its listener again, and the client could come in that window.
        for port in IPERF_PORTS:
            wait_listening(bed.joy, port)
        for port, reverse in zip(IPERF_PORTS, ((), ("-R",)), strict=True):
            out = bed.peer.run("iperf3", "-6", "-c", bed.joy.ip6, "-p", str(port),
                               "-t", "2", "-J", *reverse, timeout=60).stdout
            doc = json.loads(out)
            assert "error" not in doc, doc.get("error")
            assert doc["end"]["sum_received"]["bytes"] > 10 << 20
        # Each test's control and data connections.
        assert delivered(bed) - before >= 4
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
