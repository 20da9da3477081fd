"""Data transfer in ESTABLISHED: RFC 9293 §3.7-§3.10, RFC 5681 §4.2, RFC 5961, RFC 7323."""

from __future__ import annotations

from dataclasses import replace

from tcp_helpers import (
    ACK,
    FIN,
    IRS,
    ISS,
    PSH,
    RST,
    SYN,
    established,
    none,
    one,
    out,
    plain_config,
    seg,
)

from joyride.tcp.config import TcpConfig
from joyride.tcp.state import TcpEvent, TcpState
from joyride.tcp.timers import Timer
from joyride.wire.tcp import TcpOptions


def test_in_order_data_delivered_and_ack_delayed_rfc9293_3_8_6_3() -> None:
    conn = established()
    conn.receive(seg(IRS + 1, ISS + 1, ACK | PSH, b"hello"), 1.0)
    assert conn.events() == [TcpEvent.DATA]
    assert conn.recv() == b"hello"
    none(conn, 1.0)  # the ACK is delayed
    assert conn.poll_at() == 1.0 + conn.config.delayed_ack_timeout
    conn.on_timer(1.04)
    ack = one(conn, 1.04)
    assert (ack.flags, ack.seq, ack.ack) == (ACK, ISS + 1, IRS + 6)


def test_ack_every_second_full_segment_rfc5681_4_2() -> None:
    conn = established()
    conn.receive(seg(IRS + 1, ISS + 1, ACK, b"a" * 1460), 1.0)
    none(conn, 1.0)
    conn.receive(seg(IRS + 1461, ISS + 1, ACK, b"b" * 1460), 1.001)
    ack = one(conn, 1.001)
    assert ack.ack == IRS + 2921


def test_out_of_order_draws_immediate_dupack_and_fill_acks_at_once_rfc5681_4_2() -> None:
    conn = established()
    conn.receive(seg(IRS + 101, ISS + 1, ACK, b"b" * 100), 1.0)
    dup = one(conn, 1.0)
    assert dup.ack == IRS + 1
    assert conn.recv() == b""
    conn.receive(seg(IRS + 1, ISS + 1, ACK, b"a" * 100), 1.1)
    ack = one(conn, 1.1)
    assert ack.ack == IRS + 201
    assert conn.recv() == b"a" * 100 + b"b" * 100


def test_sack_blocks_reported_for_out_of_order_data_rfc2018_4() -> None:
    conn = established(
        plain_config(sack=True), peer_options=TcpOptions(mss=1460, sack_permitted=True)
    )
    conn.receive(seg(IRS + 101, ISS + 1, ACK, b"b" * 100), 1.0)
    conn.receive(seg(IRS + 301, ISS + 1, ACK, b"c" * 100), 1.0)
    segs = out(conn, 1.0)
    assert segs[-1].options.sack_blocks[0] == (IRS + 301, IRS + 401)  # most recent first
    assert (IRS + 101, IRS + 201) in segs[-1].options.sack_blocks


def test_send_respects_peer_window_rfc9293_3_8_6() -> None:
    conn = established(window=3000)
    assert conn.send(b"x" * 10000) == 10000
    segs = out(conn, 1.0)
    assert [len(s.payload) for s in segs] == [1460, 1460]  # 80 bytes left: SWS holds them
    assert sum(len(s.payload) for s in segs) <= 3000
    assert segs[0].seq == ISS + 1 and segs[1].seq == ISS + 1461


def test_nagle_holds_small_segment_until_ack_rfc9293_3_7_4() -> None:
    conn = established()
    conn.send(b"a")
    first = one(conn, 1.0)
    assert first.payload == b"a"
    conn.send(b"b")
    none(conn, 1.0)  # unacked small segment outstanding: wait
    conn.send(b"c")
    none(conn, 1.0)
    conn.receive(seg(IRS + 1, ISS + 2, ACK), 1.1)
    nxt = one(conn, 1.1)
    assert nxt.payload == b"bc" and nxt.seq == ISS + 2


def test_nodelay_sends_small_segments_at_once_rfc9293_3_7_4() -> None:
    conn = established(plain_config(nodelay=True))
    conn.send(b"a")
    assert one(conn, 1.0).payload == b"a"
    conn.send(b"b")
    assert one(conn, 1.0).payload == b"b"


def test_sender_sws_avoidance_waits_for_useful_window_rfc9293_3_8_6_2_1() -> None:
    conn = established(window=64000)
    conn.receive(seg(IRS + 1, ISS + 1, ACK, window=100), 0.5)  # shrinks usable window
    conn.send(b"z" * 5000)
    segs = out(conn, 1.0)
    # 100 bytes is below both the MSS and half the largest window seen (32000).
    assert segs == []
    assert conn._timers.is_set(Timer.PERSIST)  # the override timer will force it


def test_unacceptable_segment_answered_with_ack_rfc9293_3_10_7_4() -> None:
    conn = established()
    conn.receive(seg(IRS + 100000, ISS + 1, ACK, b"far"), 1.0)
    ack = one(conn, 1.0)
    assert (ack.flags, ack.seq, ack.ack) == (ACK, ISS + 1, IRS + 1)
    assert conn.counters["drop_out_of_window"] == 1
    conn.receive(seg(IRS - 10, ISS + 1, ACK, b"old"), 1.0)  # a retransmission
    assert one(conn, 1.0).ack == IRS + 1
    assert conn.recv() == b""


def test_ack_of_unsent_data_dropped_and_answered_rfc5961_5_2() -> None:
    conn = established()
    conn.receive(seg(IRS + 1, ISS + 1000, ACK, b"inject"), 1.0)
    ack = one(conn, 1.0)
    assert ack.ack == IRS + 1  # the injected data was not accepted
    assert conn.recv() == b""
    assert conn.counters["drop_ack_unsent"] == 1


def test_ack_too_old_dropped_rfc5961_5_2() -> None:
    conn = established()
    conn.receive(seg(IRS + 1, ISS - 200000, ACK, b"inject"), 1.0)
    assert conn.recv() == b""
    assert conn.counters["drop_ack_too_old"] == 1


def test_rst_exactly_at_rcv_nxt_resets_rfc5961_3_2() -> None:
    conn = established()
    conn.receive(seg(IRS + 1, 0, RST), 1.0)
    assert conn.state is TcpState.CLOSED and conn.error == "reset"
    assert conn.events() == [TcpEvent.RESET, TcpEvent.CLOSED]
    none(conn, 1.0)


def test_in_window_rst_not_at_rcv_nxt_draws_challenge_ack_rfc5961_3_2() -> None:
    conn = established()
    conn.receive(seg(IRS + 500, 0, RST), 1.0)
    assert conn.state is TcpState.ESTABLISHED
    ack = one(conn, 1.0)
    assert (ack.flags, ack.seq, ack.ack) == (ACK, ISS + 1, IRS + 1)
    assert conn.counters["drop_rst_challenged"] == 1


def test_out_of_window_rst_silently_dropped_rfc5961_3_2() -> None:
    conn = established()
    conn.receive(seg(IRS + 10_000_000, 0, RST), 1.0)
    assert conn.state is TcpState.ESTABLISHED
    none(conn, 1.0)
    assert conn.counters["drop_rst_out_of_window"] == 1


def test_syn_in_established_draws_challenge_ack_rfc5961_4() -> None:
    conn = established()
    conn.receive(seg(IRS + 1, 0, SYN), 1.0)
    assert conn.state is TcpState.ESTABLISHED
    ack = one(conn, 1.0)
    assert (ack.flags, ack.ack) == (ACK, IRS + 1)
    assert conn.counters["drop_syn_challenged"] == 1


def test_challenge_acks_are_rate_limited_rfc5961_7() -> None:
    conn = established(plain_config(challenge_ack_limit=3))
    sent = 0
    for i in range(10):
        conn.receive(seg(IRS + 100 + i, 0, RST), 1.0)
        sent += len(out(conn, 1.0))
    assert sent == 3
    assert conn.counters["challenge_acks_ratelimited"] == 7
    conn.receive(seg(IRS + 100, 0, RST), 2.5)  # a new second: allowed again
    assert len(out(conn, 2.5)) == 1


def test_paws_drops_old_timestamp_rfc7323_5_3() -> None:
    cfg = plain_config(timestamps=True)
    conn = established(cfg, peer_options=TcpOptions(mss=1460, timestamps=(1000, 0)))
    conn.receive(seg(IRS + 1, ISS + 1, ACK, b"new", options=TcpOptions(timestamps=(2000, 0))), 1.0)
    assert conn.recv() == b"new"
    conn.receive(seg(IRS + 4, ISS + 1, ACK, b"old", options=TcpOptions(timestamps=(1500, 0))), 1.1)
    assert conn.recv() == b""
    assert conn.counters["drop_paws"] == 1


def test_missing_timestamp_accepted_as_linux_does_rfc7323_3_2() -> None:
    """RFC 7323 §3.2 says a receiver SHOULD drop a non-RST segment without TSopt once
    timestamps are negotiated; Linux accepts it, and so do we: the data is taken,
    counted, and TS.Recent is left alone (there is nothing to update it from)."""
    cfg = plain_config(timestamps=True)
    conn = established(cfg, peer_options=TcpOptions(mss=1460, timestamps=(1000, 0)))
    conn.send(b"q" * 100)
    assert len(out(conn, 0.5)) == 1
    conn.receive(seg(IRS + 1, ISS + 101, ACK | FIN, b"x"), 1.0)
    assert conn.recv() == b"x" and conn.eof
    assert conn.send_queue == 0  # its ACK was processed too
    assert conn.counters["ts_missing_accepted"] == 1
    assert conn.counters["drop_missing_timestamp"] == 0
    ack = one(conn, 1.0)
    assert ack.ack == IRS + 3
    assert ack.options.timestamps is not None and ack.options.timestamps[1] == 1000
    # PAWS still applies to the next timestamped segment, against the old TS.Recent.
    conn.receive(seg(IRS + 3, ISS + 101, ACK, options=TcpOptions(timestamps=(999, 0))), 1.1)
    assert conn.counters["drop_paws"] == 1


def test_zero_window_persist_probe_and_backoff_rfc9293_3_8_6_1() -> None:
    conn = established()
    conn.receive(seg(IRS + 1, ISS + 1, ACK, window=0), 0.5)
    conn.send(b"q" * 100)
    none(conn, 1.0)
    first = conn.poll_at()
    assert first is not None
    conn.on_timer(first)
    probe = one(conn, first)
    assert probe.payload == b"q" and probe.seq == ISS + 1
    # Receiver still at zero window: ACK unchanged.
    conn.receive(seg(IRS + 1, ISS + 1, ACK, window=0), first + 0.01)
    none(conn, first + 0.01)
    second = conn.poll_at()
    assert second is not None and second - first > first - 1.0  # backed off
    # Window opens: data flows, persist stops.
    conn.receive(seg(IRS + 1, ISS + 1, ACK, window=5000), second - 0.1)
    data = one(conn, second - 0.1)
    assert data.payload == b"q" * 100
    assert not conn._timers.is_set(Timer.PERSIST)


def test_zero_window_receiver_acks_but_refuses_data_rfc9293_3_8_6() -> None:
    conn = established(plain_config(receive_buffer=2920, receive_buffer_max=2920))
    conn.receive(seg(IRS + 1, ISS + 1, ACK, b"a" * 1460), 1.0)
    conn.receive(seg(IRS + 1461, ISS + 1, ACK, b"b" * 1460), 1.0)
    ack = one(conn, 1.0)
    assert ack.window == 0 and ack.ack == IRS + 2921
    conn.receive(seg(IRS + 2921, ISS + 1, ACK, b"c"), 1.1)  # a probe
    probe_ack = one(conn, 1.1)
    assert probe_ack.ack == IRS + 2921 and probe_ack.window == 0
    assert len(conn.recv(1460)) == 1460  # reading half the buffer reopens the window
    upd = one(conn, 1.2)
    assert upd.window == 1460


def test_window_update_when_the_peer_may_wait_for_it_rfc9293_3_8_6_2_2() -> None:
    """With a large buffer too, a read that opens a window the peer may be held back by
    (less than two full segments left) is announced at once."""
    conn = established(TcpConfig(receive_buffer=8 * 1460, receive_buffer_max=8 * 1460),
                       peer_options=TcpOptions(mss=1460, wscale=0))
    for i in range(8):  # fill the window: ACKs every second segment, the last at 0
        conn.receive(seg(IRS + 1 + i * 1460, ISS + 1, ACK, b"x" * 1460), 1.0)
    assert out(conn, 1.0)[-1].window == 0
    assert len(conn.recv(4 * 1460)) == 4 * 1460
    update = one(conn, 1.1)
    assert update.ack == IRS + 1 + 8 * 1460 and update.window == 4 * 1460


def test_window_update_when_short_segments_would_not_draw_an_ack_rfc9293_3_8_6_2_1() -> None:
    """The peer sends segments shorter than our MSS (a smaller path MTU): two of them
    do not reach the two full segments that draw an ACK, and it stops with less than a
    segment of window left (RFC 9293 §3.8.6.2.1). A read that opens the window while
    those two are in flight must announce it, not leave the peer to our delayed ACK."""
    conn = established(plain_config(receive_buffer=8 * 1460, receive_buffer_max=8 * 1460))
    seq, short = IRS + 1, 1400
    for _ in range(6):
        conn.receive(seg(seq, ISS + 1, ACK, b"x" * short), 1.0)
        seq += short
    last = out(conn, 1.0)[-1]
    assert last.ack + last.window - seq == 3280  # two more, then 480 left: it stops
    assert len(conn.recv(6 * short)) == 6 * short
    update = one(conn, 1.0)
    assert update.window == 8 * 1460 and update.ack == seq


def test_receiver_sws_does_not_advertise_tiny_windows_rfc9293_3_8_6_2_2() -> None:
    conn = established(plain_config(receive_buffer=2920, receive_buffer_max=2920))
    conn.receive(seg(IRS + 1, ISS + 1, ACK, b"a" * 1460), 1.0)
    conn.receive(seg(IRS + 1461, ISS + 1, ACK, b"b" * 1460), 1.0)
    assert one(conn, 1.0).window == 0
    conn.recv(10)  # 10 bytes free: below min(buffer/2, MSS)
    none(conn, 1.1)
    conn.receive(seg(IRS + 2921, ISS + 1, ACK, b"c"), 1.2)
    assert one(conn, 1.2).window == 0


def test_keepalive_probes_then_times_out_rfc9293_3_8_4() -> None:
    cfg = plain_config(keepalive=True, keepalive_idle=100.0, keepalive_interval=10.0,
                       keepalive_probes=2)
    conn = established(cfg)
    assert conn.poll_at() == 100.0
    conn.on_timer(100.0)
    probe = one(conn, 100.0)
    assert probe.seq == ISS and probe.payload == b""  # SND.UNA - 1
    conn.receive(seg(IRS + 1, ISS + 1, ACK), 100.5)  # the peer is alive
    assert conn.poll_at() == 200.5
    conn.on_timer(200.5)
    one(conn, 200.5)
    conn.on_timer(210.5)
    one(conn, 210.5)
    conn.on_timer(220.5)
    assert conn.state is TcpState.CLOSED and conn.error == "timeout"


def test_keepalive_off_by_default_rfc9293_3_8_4() -> None:
    conn = established()
    assert conn.poll_at() is None


def test_keepalive_switched_on_and_off_on_a_live_connection_rfc9293_3_8_4() -> None:
    """setsockopt(SO_KEEPALIVE, TCP_KEEPIDLE) after the handshake (``reconfigure``):
    idle time counts from then; switching it off cancels the probe timer."""
    conn = established()
    conn.reconfigure(replace(conn.config, keepalive=True, keepalive_idle=30.0), 5.0)
    assert conn.poll_at() == 5.0  # dirty: a transmit pass is due at once
    none(conn, 5.0)
    assert conn.poll_at() == 35.0
    conn.on_timer(35.0)
    assert one(conn, 35.0).seq == ISS  # the probe: SND.UNA - 1
    conn.reconfigure(replace(conn.config, keepalive=False), 36.0)
    none(conn, 36.0)
    assert conn.poll_at() is None


def test_reconfigure_keeps_the_negotiated_receive_buffer() -> None:
    conn = established()
    before = conn.config.receive_buffer
    conn.reconfigure(replace(conn.config, receive_buffer=4096, send_buffer=8192,
                             nodelay=True), 1.0)
    assert conn.config.receive_buffer == before
    assert conn.config.send_buffer == 8192 and conn.config.nodelay


def test_fin_with_data_delivers_then_eof_rfc9293_3_10_7_4_eighth() -> None:
    conn = established()
    conn.receive(seg(IRS + 1, ISS + 1, ACK | FIN, b"bye"), 1.0)
    assert conn.events() == [TcpEvent.DATA, TcpEvent.EOF]
    assert conn.recv() == b"bye"
    assert conn.eof and conn.state is TcpState.CLOSE_WAIT
    assert one(conn, 1.0).ack == IRS + 5


def test_out_of_order_fin_waits_for_the_gap_rfc9293_3_10_7_4() -> None:
    conn = established()
    conn.receive(seg(IRS + 4, ISS + 1, ACK | FIN, b"def"), 1.0)
    assert conn.state is TcpState.ESTABLISHED
    assert one(conn, 1.0).ack == IRS + 1
    conn.receive(seg(IRS + 1, ISS + 1, ACK, b"abc"), 1.1)
    assert conn.recv() == b"abcdef"
    assert conn.state is TcpState.CLOSE_WAIT
    assert one(conn, 1.1).ack == IRS + 8


def test_ack_every_second_full_segment_with_timestamps_rfc5681_4_2() -> None:
    """A full-sized segment carries MSS - 12 bytes once timestamps are on (RFC 7323
    §3.2 option space): the every-second-segment ACK rule must count those."""
    cfg = plain_config(timestamps=True)
    conn = established(cfg, peer_options=TcpOptions(mss=1460, timestamps=(1000, 0)))
    full = 1460 - 12
    for i in range(2):
        conn.receive(seg(IRS + 1 + i * full, ISS + 1, ACK, b"f" * full,
                         options=TcpOptions(timestamps=(1001 + i, 0))), 1.0)
    assert [s.ack for s in out(conn, 1.0)] == [IRS + 1 + 2 * full]
