"""The Python benchmark servers on loopback (kernel mode; no privileges needed)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct

from joyride.bench import pyserver


def sockperf_msg(seq: int, flags: int, size: int = 64) -> bytes:
    head = struct.pack("!QHI", seq, flags, size)
    return head + bytes(range(size - len(head)))


def test_replies_clear_the_client_flag_per_whole_message() -> None:
    buf = bytearray(sockperf_msg(1, 0x3) + sockperf_msg(2, 0x1) + sockperf_msg(3, 0x3)[:20])
    out = pyserver.sockperf_replies(buf)
    assert out is not None and len(out) == 128
    assert struct.unpack_from("!QH", out, 0) == (1, 0x2)
    assert struct.unpack_from("!QH", out, 64) == (2, 0x0)
    assert out[14:64] == sockperf_msg(1, 3)[14:]  # payload echoed unchanged
    assert len(buf) == 20  # the partial third message waits for the rest


def test_replies_refuse_non_sockperf_streams() -> None:
    assert pyserver.sockperf_replies(bytearray(struct.pack("!QHI", 1, 1, 4) + b"x" * 8)) is None
    assert pyserver.sockperf_replies(bytearray(struct.pack("!QHI", 1, 1, 1 << 30))) is None
    assert pyserver.sockperf_replies(bytearray(b"short")) == b""


def test_http_response_framing() -> None:
    keep = pyserver.http_response(False)
    head, body = keep.split(b"\r\n\r\n", 1)
    assert body == pyserver.BODY
    assert f"Content-Length: {len(pyserver.BODY)}".encode() in head
    assert b"Connection: close" in pyserver.http_response(True)


async def _exercise() -> tuple[bytes, bytes, bytes]:
    servers = []
    ports = {}
    for kind, handler in (("rr", pyserver.rr_handler), ("http", pyserver.http_handler),
                          ("sink", pyserver.sink_handler)):
        srv = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(srv)
        ports[kind] = srv.sockets[0].getsockname()[1]

    def clients() -> tuple[bytes, bytes, bytes]:
        with socket.create_connection(("127.0.0.1", ports["rr"]), timeout=10) as s:
            s.sendall(sockperf_msg(7, 0x3))
            rr = b""
            while len(rr) < 64:
                rr += s.recv(64)
        with socket.create_connection(("127.0.0.1", ports["http"]), timeout=10) as s:
            s.sendall(b"GET /body HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /body HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            http = b""
            while chunk := s.recv(65536):
                http += chunk
        with socket.create_connection(("127.0.0.1", ports["sink"]), timeout=10) as s:
            s.sendall(b"z" * (1 << 20))
            s.shutdown(socket.SHUT_WR)
            sink = s.recv(10)  # EOF once everything was read
        return rr, http, sink

    try:
        return await asyncio.to_thread(clients)
    finally:
        for srv in servers:
            srv.close()


def test_servers_on_loopback() -> None:
    rr, http, sink = asyncio.run(asyncio.wait_for(_exercise(), 30))
    assert struct.unpack_from("!QH", rr) == (7, 0x2)
    assert http.count(b"HTTP/1.1 200 OK") == 2 and http.endswith(pyserver.BODY)
    assert sink == b""


async def _bulk_both_ways(size: int) -> tuple[bytes, bytes, bytes]:
    srv = await asyncio.start_server(pyserver.bulk_handler, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]

    def clients() -> tuple[bytes, bytes, bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"D" + size.to_bytes(8, "big"))
            down = b""
            while chunk := s.recv(65536):
                down += chunk
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"U" + size.to_bytes(8, "big") + pyserver.bulk_bytes(size))
            digest = b""
            while chunk := s.recv(64):
                digest += chunk
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"X" + size.to_bytes(8, "big"))
            other = s.recv(10)  # an unknown request: closed without a reply
        return down, digest, other

    try:
        return await asyncio.to_thread(clients)
    finally:
        srv.close()


def test_bulk_transfers_both_ways_on_loopback() -> None:
    """The impairment benchmark's requests: D sends the checkable bytes, U answers the
    SHA-256 of what it read."""
    size = 300_001
    down, digest, other = asyncio.run(asyncio.wait_for(_bulk_both_ways(size), 30))
    assert down == pyserver.bulk_bytes(size) and len(down) == size
    assert digest == hashlib.sha256(pyserver.bulk_bytes(size)).digest()
    assert other == b""
