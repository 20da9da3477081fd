"""``joyride capture``: a transfer through the service, captured and read back by
``tcpdump -r``: the handshake is there, and the peer's payload, reassembled from the
capture, hashes as what was sent."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_helpers import JOYRIDE, attached, cli, served_connection, stats, wait_for

from joyride import pcap
from joyride.testbed import Node, Testbed

pytestmark = pytest.mark.integration

PORT = 8093
PAYLOAD = os.urandom(300 * 1024)


def tcp_payloads(data: bytes, src_port: int) -> dict[int, bytes]:
    """Sequence number -> payload of the TCP segments from ``src_port`` in a capture."""
    out: dict[int, bytes] = {}
    for rec in pcap.records(data):
        f = rec.data
        if len(f) < 34 or f[12:14] != b"\x08\x00" or f[23] != 6:
            continue
        ihl = (f[14] & 0xF) * 4
        total = struct.unpack_from("!H", f, 16)[0]
        tcp = 14 + ihl
        sport, _dport, seq = struct.unpack_from("!HHI", f, tcp)
        body = f[tcp + (f[tcp + 12] >> 4) * 4:14 + total]
        if sport == src_port and body:
            out[seq] = body
    return out


def reassemble(segments: dict[int, bytes]) -> bytes:
    start = min(segments)  # no wrap in a 300 KiB transfer from a random ISN: checked
    data = bytearray()
    for seq in sorted(segments):
        off = seq - start
        if off > len(data):
            raise AssertionError(f"hole at {len(data)} in the captured stream")
        data[off:off + len(segments[seq])] = segments[seq]
    return bytes(data)


@contextlib.contextmanager
def capturing(node: Node, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``joyride capture`` running on ``node`` for the body, then stopped by SIGINT (as
    Ctrl-C would) and waited for; killed if the body failed."""
    proc = node.popen(JOYRIDE, "capture", node.ifname, *args, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: stats(node).get("capture") is not None, 15, "the capture to start")
        yield proc
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_capture_reads_back_with_tcpdump(service_bed: Testbed, tmp_path: Path) -> None:
    bed = service_bed
    out = tmp_path / "joy.pcap"
    with capturing(bed.joy, "-w", str(out), "tcp", "port", str(PORT)) as proc, \
            served_connection(bed, PORT) as (joy, peer):
        client_port = peer.getsockname()[1]
        peer.sendall(PAYLOAD)
        peer.shutdown(socket.SHUT_WR)
        got = bytearray()
        while chunk := joy.recv(1 << 16):
            got += chunk
        assert bytes(got) == PAYLOAD
        joy.sendall(b"thanks")
        # The capture stops only after the peer has the reply: sendall returns once the
        # service holds the bytes, not once they are on the wire (and so in the tap).
        reply = bytearray()
        while len(reply) < len(b"thanks") and (chunk := peer.recv(16)):
            reply += chunk
        assert bytes(reply) == b"thanks"
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert proc.returncode == 0, err
    assert b"0 dropped" in err, err
    data = out.read_bytes()
    # tcpdump reads it: every frame, and the handshake's SYN and SYN-ACK.
    listed = bed.joy.run("tcpdump", "-n", "-r", str(out)).stdout.decode().splitlines()
    assert len(listed) == len(list(pcap.records(data))) > 0
    syns = bed.joy.run("tcpdump", "-n", "-r", str(out),
                       "tcp[tcpflags] & tcp-syn != 0").stdout.decode().splitlines()
    assert any(f"{bed.peer.ip}.{client_port} > {bed.joy.ip}.{PORT}" in s for s in syns)
    assert any(f"{bed.joy.ip}.{PORT} > {bed.peer.ip}.{client_port}" in s for s in syns)
    received = reassemble(tcp_payloads(data, client_port))
    assert hashlib.sha256(received).digest() == hashlib.sha256(PAYLOAD).digest()
    assert reassemble(tcp_payloads(data, PORT)) == b"thanks"  # and what we sent


def test_capture_to_a_pipe_stops_after_count(service_bed: Testbed) -> None:
    bed = service_bed
    port = PORT + 1
    shell = (f"{JOYRIDE} capture {bed.joy.ifname} -w - -c 4 tcp port {port} "
             "| tcpdump -n -r - 2>/dev/null")
    proc = bed.joy.popen("sh", "-c", shell, stdout=subprocess.PIPE)
    try:
        wait_for(lambda: stats(bed.joy).get("capture") is not None, 15,
                 "the capture to start")
        with served_connection(bed, port) as (joy, peer):
            for _ in range(4):
                peer.sendall(b"ping")
                assert joy.recv(16) == b"ping"
        listed, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(listed.decode().splitlines()) == 4
    wait_for(lambda: stats(bed.joy).get("capture") is None, 15, "the capture to end")


def test_capture_needs_root_and_a_service(service_bed: Testbed) -> None:
    out = cli(service_bed.peer, "capture", service_bed.peer.ifname, "-w", "/dev/null",
              check=False)
    assert out.returncode == 3 and len(out.stderr.strip().splitlines()) == 1
    bad = cli(service_bed.joy, "capture", service_bed.joy.ifname, "-w", "/dev/null",
              "tcp", "port", "notaport", check=False)
    assert bad.returncode == 2 and "filter" in bad.stderr
    json.dumps(stats(service_bed.joy))  # the service is still well


def test_capture_under_the_python_engine(monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    """JOYRIDE_DATAPLANE=python: no C data plane carries the frames; the queues' sockets
    offer the engine's to the tap, both directions, the fast path's batches included."""
    monkeypatch.setenv("JOYRIDE_DATAPLANE", "python")
    out = tmp_path / "py.pcap"
    with Testbed() as bed, attached(bed, "--ports", str(PORT)):
        assert stats(bed.joy)["datapath"]["dataplane"] is None
        with capturing(bed.joy, "-w", str(out)) as proc, \
                served_connection(bed, PORT) as (joy, peer):
            client_port = peer.getsockname()[1]
            peer.sendall(PAYLOAD[:100_000])
            got = 0
            while got < 100_000:
                got += len(joy.recv(1 << 16))
            joy.sendall(PAYLOAD[:50_000])
            back = 0
            while back < 50_000:
                back += len(peer.recv(1 << 16))
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert proc.returncode == 0 and b"0 dropped" in err, err
    data = out.read_bytes()
    assert reassemble(tcp_payloads(data, client_port)) == PAYLOAD[:100_000]
    assert reassemble(tcp_payloads(data, PORT)) == PAYLOAD[:50_000]
