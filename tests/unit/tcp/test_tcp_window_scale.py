"""Window scaling on the receive side (RFC 7323 §2): the right edge we announce, in
units of 2**shift, never lies beyond what the receive buffer can hold, so a sender that
fills our window to the last byte loses nothing - however the application reads.

Found on the veth bed: rounding the window up at every ACK (to avoid retracting it)
crept the edge past the buffer while the reader lagged; segments at the edge were then
dropped, and the out-of-order episodes that followed sent every segment of four bulk
flows through the slow path."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from tcp_helpers import IRS, ISS, established, plain_config, seg

from joyride.tcp.connection import TcpConnection
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpOptions

SHIFT = 7  # what a 4 MiB receive_buffer_max offers


def _edge(conn: TcpConnection, now: float, edge: Seq) -> Seq:
    """Let every segment the connection owes go out (delayed ACKs too) and return the
    right edge the last one announced (the peer's view of our window)."""
    for at in (now, now + 1.0):
        conn.on_timer(at)
        for out in conn.segments_to_send(at):
            edge = out.ack + (out.window << SHIFT)
    return edge


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["data", "read"]), st.integers(1, 4000)),
                    max_size=120))
def test_the_announced_window_always_fits_the_buffer(ops: list[tuple[str, int]]) -> None:
    config = plain_config(window_scaling=True, receive_buffer=20_000,
                          receive_buffer_max=4 << 20, mss=1460)
    assert config.window_scale_shift == SHIFT
    conn = established(config, peer_options=TcpOptions(mss=1460, wscale=14))
    now = 1.0
    edge = conn._rcv_adv  # announced by the handshake's ACK
    nxt = IRS + 1
    assert edge - nxt > 0
    sent = received = 0
    for kind, n in ops:
        now += 0.01
        if kind == "data":
            room = edge - nxt
            n = min(n, 1460, room)  # the peer respects the window, up to its last byte
            if n <= 0:
                continue
            conn.receive(seg(nxt, ISS + 1, payload=bytes([sent % 251]) * n), now)
            nxt, sent = nxt + n, sent + n
        else:
            received += len(conn.recv(n, now=now))
        edge = _edge(conn, now, edge)
        assert conn.counters["drop_receive_buffer_full"] == 0
        assert conn.counters["drop_window_trimmed"] == 0
    assert received + conn.recv_queue == sent  # nothing lost
    if any(kind == "data" for kind, _ in ops):
        assert sent > 0


def test_a_reader_that_lags_still_loses_nothing() -> None:
    """The pattern seen on the bed, deterministically: segments fill the window to
    its last byte while the application reads a little now and then."""
    config = plain_config(window_scaling=True, receive_buffer=20_000,
                          receive_buffer_max=4 << 20, mss=1460)
    conn = established(config, peer_options=TcpOptions(mss=1460, wscale=14))
    edge, nxt, now, sent = conn._rcv_adv, IRS + 1, 1.0, 0
    for i in range(400):
        now += 0.01
        n = min(1000, edge - nxt)
        if n > 0:
            conn.receive(seg(nxt, ISS + 1, payload=b"x" * n), now)
            nxt, sent = nxt + n, sent + n
        if i % 3 == 0:
            conn.recv(700, now=now)
        edge = _edge(conn, now, edge)
        assert conn.counters["drop_receive_buffer_full"] == 0, i
    assert sent > 100_000
