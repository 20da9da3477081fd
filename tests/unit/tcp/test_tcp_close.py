"""Closing: RFC 9293 §3.6 (figures 12 and 13), §3.10.4-§3.10.5, RFC 2525 §2.17."""

from __future__ import annotations

from tcp_helpers import (
    ACK,
    FIN,
    IRS,
    ISS,
    RST,
    close_wait,
    established,
    fin_wait_1,
    fin_wait_2,
    none,
    one,
    plain_config,
    seg,
    time_wait,
)

from joyride.tcp.state import TcpEvent, TcpState


def test_active_close_through_time_wait_rfc9293_3_6() -> None:
    conn = time_wait(plain_config(time_wait=60.0), now=1.0)
    assert conn.poll_at() == 61.0
    conn.on_timer(61.0)
    assert conn.state is TcpState.CLOSED
    assert TcpEvent.CLOSED in conn.events()


def test_passive_close_through_last_ack_rfc9293_3_6() -> None:
    conn = close_wait()
    conn.close()
    assert conn.state is TcpState.LAST_ACK
    fin = one(conn, 1.0)
    assert (fin.flags, fin.seq, fin.ack) == (FIN | ACK, ISS + 1, IRS + 2)
    conn.receive(seg(IRS + 2, ISS + 2), 1.1)
    assert conn.state is TcpState.CLOSED
    assert conn.events() == [TcpEvent.CLOSED]


def test_simultaneous_close_through_closing_rfc9293_3_6_figure_13() -> None:
    conn = fin_wait_1()
    conn.receive(seg(IRS + 1, ISS + 1, FIN | ACK), 1.0)  # peer's FIN, ours not acked
    assert conn.state is TcpState.CLOSING
    assert one(conn, 1.0).ack == IRS + 2
    conn.receive(seg(IRS + 2, ISS + 2), 1.1)
    assert conn.state is TcpState.TIME_WAIT


def test_fin_ack_and_fin_together_go_to_time_wait_rfc9293_3_10_7_4() -> None:
    conn = fin_wait_1()
    conn.receive(seg(IRS + 1, ISS + 2, FIN | ACK), 1.0)
    assert conn.state is TcpState.TIME_WAIT


def test_half_close_keeps_receiving_rfc9293_3_10_4() -> None:
    conn = established()
    conn.shutdown_write()
    assert conn.state is TcpState.FIN_WAIT_1
    one(conn, 0.5)
    conn.receive(seg(IRS + 1, ISS + 2, ACK, b"more"), 1.0)
    assert conn.state is TcpState.FIN_WAIT_2
    assert conn.recv() == b"more"
    assert conn.send(b"nope") == 0


def test_fin_follows_queued_data_rfc9293_3_10_4() -> None:
    conn = established(plain_config(nodelay=True))
    conn.send(b"last words")
    conn.shutdown_write()
    data = one(conn, 1.0)
    assert data.payload == b"last words" and data.flags & FIN  # piggybacked
    assert data.seq == ISS + 1


def test_close_with_unread_data_resets_rfc2525_2_17() -> None:
    conn = established()
    conn.receive(seg(IRS + 1, ISS + 1, ACK, b"unread"), 1.0)
    conn.events()
    conn.close()
    rst = one(conn, 1.0)
    assert rst.flags & RST and rst.seq == ISS + 1
    assert conn.state is TcpState.CLOSED


def test_close_after_a_loss_sends_what_was_written_then_resets_rfc1122_4_2_2_13() -> None:
    """The service's application closed with bytes it never took (they had left this
    buffer for its descriptor: ``lost``): a reset, as for unread data here, but after
    the bytes it wrote, which Linux would have sent at the write itself."""
    conn = established(plain_config(nodelay=True))
    conn.send(b"refused\n")
    conn.close(lost=True)
    data, rst = conn.segments_to_send(1.0)
    assert data.payload == b"refused\n" and data.seq == ISS + 1 and not data.flags & FIN
    assert rst.flags & RST and rst.seq == ISS + 1 + len(b"refused\n")
    assert conn.state is TcpState.CLOSED


def test_the_bytes_before_a_reset_include_the_last_small_segment() -> None:
    """Nagle would hold the short tail for an ACK the reset makes moot; Linux sent it at
    the write (Minshall), so it goes before the RST."""
    conn = established(plain_config(nodelay=False))
    written = b"x" * (2 * conn.mss + 10)
    conn.send(written)
    conn.close(lost=True)
    *data, rst = conn.segments_to_send(1.0)
    assert b"".join(s.payload for s in data) == written and rst.flags & RST
    assert rst.seq == ISS + 1 + len(written)


def test_close_without_a_loss_is_a_fin_after_the_data_rfc9293_3_10_4() -> None:
    conn = established(plain_config(nodelay=True))
    conn.send(b"bye")
    conn.close()
    fin = one(conn, 1.0)
    assert fin.payload == b"bye" and fin.flags & FIN and not fin.flags & RST


def test_abort_sends_rst_rfc9293_3_10_5() -> None:
    conn = established()
    conn.abort()
    rst = one(conn, 1.0)
    assert (rst.flags, rst.seq) == (RST, ISS + 1)
    assert conn.state is TcpState.CLOSED
    assert conn.events() == [TcpEvent.CLOSED]


def test_closed_connection_answers_with_rst_rfc9293_3_10_7_1() -> None:
    conn = established()
    conn.abort()
    one(conn, 1.0)
    conn.receive(seg(IRS + 1, ISS + 1, ACK, b"late"), 2.0)
    rst = one(conn, 2.0)
    assert (rst.flags, rst.seq) == (RST, ISS + 1)
    conn.receive(seg(IRS + 1, 0, RST), 2.0)
    none(conn, 2.0)


def test_time_wait_reacks_retransmitted_fin_and_restarts_timer_rfc9293_3_10_7_4() -> None:
    conn = time_wait(plain_config(time_wait=60.0), now=1.0)
    conn.receive(seg(IRS + 1, ISS + 2, FIN | ACK), 30.0)
    ack = one(conn, 30.0)
    assert ack.ack == IRS + 2
    assert conn.poll_at() == 90.0


def test_data_after_close_resets_connection() -> None:
    conn = fin_wait_2()
    conn.receive(seg(IRS + 1, ISS + 2, ACK, b"nobody reads this"), 1.0)
    assert conn.state is TcpState.CLOSED
    assert one(conn, 1.0).flags & RST
    assert conn.counters["drop_data_after_close"] == 1


def test_orphaned_fin_wait_2_times_out() -> None:
    conn = fin_wait_2(plain_config(fin_wait2_timeout=30.0))
    assert conn.poll_at() == 30.0
    conn.on_timer(30.0)
    assert conn.state is TcpState.CLOSED


def test_fin_retransmitted_on_rto_rfc9293_3_10_4() -> None:
    conn = fin_wait_1()
    deadline = conn.poll_at()
    assert deadline == conn.config.min_rto  # handshake RTT sample was 0 s
    conn.on_timer(deadline)
    fin = one(conn, deadline)
    assert fin.flags & FIN and fin.seq == ISS + 1
