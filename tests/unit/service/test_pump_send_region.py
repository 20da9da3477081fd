"""Zero-copy application -> TCP path: ``TcpConnection.send_region``/``send_commit`` and
the pump reading the application's bytes straight into the send buffer."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tcp"))
from tcp_helpers import (  # type: ignore[import-not-found]
    ACK,
    IRS,
    ISS,
    established,
    plain_config,
    seg,
)

from joyride.service.pump import Pump
from joyride.tcp.connection import TcpConnection, TcpEvent
from joyride.tcp.state import TcpState


def sent_payload(conn: TcpConnection, now: float = 0.0) -> bytes:
    """Everything the connection sends now, ACKing each flight (the congestion window
    would hold some back otherwise); the connection ends with nothing in flight."""
    out = bytearray()
    for _ in range(100):
        segs = conn.segments_to_send(now)
        if not segs:
            break
        out += b"".join(bytes(s.payload) for s in segs)
        now += 0.001
        last = segs[-1]
        conn.receive(seg(IRS + 1, last.seq + len(last.payload), ACK, window=60000), now)
    return bytes(out)


def test_region_commit_sends_the_bytes_written_in_place() -> None:
    conn = established(plain_config(send_buffer=4096, send_buffer_max=4096))
    region = conn.send_region()
    assert len(region) == 4096
    region[:5] = b"hello"
    region.release()
    conn.send_commit(5)
    assert conn.send_queue == 5
    assert sent_payload(conn) == b"hello"


def test_region_follows_the_queue_and_wraps_in_order() -> None:
    conn = established(plain_config(send_buffer=4096, send_buffer_max=4096), window=64000)
    assert conn.send(b"x" * 3000) == 3000
    flight = conn.segments_to_send(0.0)
    assert [len(s.payload) for s in flight] == [1460, 1460]
    conn.receive(seg(IRS + 1, ISS + 1 + 2920, ACK, window=64000), 0.01)
    region = conn.send_region()  # data at [2920, 3000): free up to the ring's end
    assert len(region) == 1096
    region[:] = b"y" * 1096
    region.release()
    conn.send_commit(1096)
    region = conn.send_region()  # then wrapped: free up to the head
    assert len(region) == 2920
    region[:] = b"z" * 2920
    region.release()
    conn.send_commit(2920)
    assert conn.send_region().nbytes == 0  # full
    assert sent_payload(conn, 0.02) == b"x" * 80 + b"y" * 1096 + b"z" * 2920


def test_commit_beyond_the_region_raises_and_queues_nothing() -> None:
    conn = established(plain_config(send_buffer=1024, send_buffer_max=1024))
    conn.send_region().release()
    with pytest.raises(ValueError):
        conn.send_commit(1025)
    assert conn.send_queue == 0
    conn.send_commit(0)
    assert conn.send_queue == 0


def test_no_region_once_the_fin_is_queued() -> None:
    conn = established(plain_config(send_buffer=1024, send_buffer_max=1024))
    conn.shutdown_write()
    assert conn.state is TcpState.FIN_WAIT_1
    assert conn.send_region().nbytes == 0


def test_pump_reads_into_the_send_buffer_and_keeps_order(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    app, svc = pair
    conn = established(plain_config(send_buffer=256 * 1024, send_buffer_max=256 * 1024),
                       window=60000)
    pump = Pump(conn, svc)
    app.sendall(b"small")
    pump.service()  # little queued: the scratch path (no whole-buffer ring for it)
    assert conn.send_queue == 5 and pump.region_reads == 0
    body = bytes(range(256)) * 400  # 102,400 bytes: past REGION_AFTER queued
    app.sendall(body)
    pump.service()
    assert pump.region_reads > 0
    assert conn.send_queue == 5 + len(body)
    assert sent_payload(conn) == b"small" + body
    app.shutdown(socket.SHUT_WR)
    pump.service()
    assert pump.app_eof and conn.state is TcpState.FIN_WAIT_1


def test_pump_stops_at_a_full_send_buffer_and_resumes_after_acks(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    app, svc = pair
    conn = established(plain_config(send_buffer=8192, send_buffer_max=8192), window=60000)
    pump = Pump(conn, svc)
    data = bytes(i % 251 for i in range(20000))
    app.sendall(data)
    got = bytearray()
    for step in range(5):
        pump.service()
        assert conn.send_queue <= 8192
        got += sent_payload(conn, step * 0.1)
    assert bytes(got) == data
    assert pump.buffered == 0
    assert TcpEvent.WRITABLE in conn.events()
