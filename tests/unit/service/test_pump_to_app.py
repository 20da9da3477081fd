"""TCP -> application path of the pump: bytes go to the application's socket straight
from TCP's receive buffer (``TcpConnection.recv_view``/``recv_taken``), and what a full
socket refuses stays there, so the pump holds nothing of a lagging reader's."""

from __future__ import annotations

import hashlib
import os
import selectors
import socket
import sys
from pathlib import Path

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

MSS = 1400


def test_bytes_a_full_application_socket_refuses_stay_in_tcps_buffer(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A lagging reader: the pump holds nothing (so the C data plane may take the
    connection, ``Datapath._hand_to_plane``), waits for its socket to drain, and every
    byte arrives in order once the application reads."""
    app, svc = pair
    svc.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    app.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn = established(plain_config(receive_buffer=256 * 1024, receive_buffer_max=256 * 1024))
    payload = os.urandom(60_000)  # within the unscaled window
    for off in range(0, len(payload), MSS):
        conn.receive(seg(IRS + 1 + off, ISS + 1, ACK, payload[off:off + MSS]), 0.0)
    assert conn.recv_queue == len(payload)
    pump = Pump(conn, svc)
    pump.service()
    assert pump.app_full and pump.buffered == 0
    assert pump.wanted() & selectors.EVENT_WRITE
    assert 0 < conn.recv_queue < len(payload)  # the socket took some, TCP keeps the rest
    got = bytearray()
    app.settimeout(5)
    while len(got) < len(payload):
        got += app.recv(65536)
        pump.service()
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    assert not pump.app_full and conn.recv_queue == 0
    assert not pump.wanted() & selectors.EVENT_WRITE


def test_an_application_gone_with_bytes_pending_resets_the_connection(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """EPIPE from the application's socket: unread data makes the close a reset (RFC
    2525 §2.17, as Linux), and the pump is finished."""
    app, svc = pair
    conn = established(plain_config())
    conn.receive(seg(IRS + 1, ISS + 1, ACK, b"x" * 1000), 0.0)
    pump = Pump(conn, svc)
    app.close()
    pump.service()
    assert pump.app_gone and pump.finished and not pump.app_full
