"""Opening a connection: RFC 9293 §3.5, §3.7.1, §3.10.7.3; RFC 7323; RFC 2018."""

from __future__ import annotations

from tcp_helpers import (
    ACK,
    IRS,
    ISS,
    LOCAL_IP,
    LOCAL_PORT,
    PSH,
    REMOTE_IP,
    REMOTE_PORT,
    RST,
    SYN,
    FixedIsn,
    none,
    one,
    plain_config,
    seg,
    syn_sent,
)

from joyride.tcp.config import TcpConfig
from joyride.tcp.connection import TcpConnection
from joyride.tcp.listener import Listener
from joyride.tcp.state import TcpEvent, TcpState
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpOptions


def test_active_open_sends_syn_with_all_offered_options_rfc9293_3_5() -> None:
    cfg = TcpConfig(receive_buffer_max=4 * 1024 * 1024)
    conn = TcpConnection.connect(
        cfg, LOCAL_IP, LOCAL_PORT, REMOTE_IP, REMOTE_PORT, 5.0, FixedIsn(ISS), ts_offset=0
    )
    syn = one(conn, 5.0)
    assert (syn.flags, syn.seq, syn.ack) == (SYN, ISS, Seq(0))
    assert syn.options.mss == 1460
    assert syn.options.wscale == 7  # 65535 << 7 >= 4 MiB (RFC 7323 §2.3)
    assert syn.options.sack_permitted
    assert syn.options.timestamps == (5000, 0)
    assert syn.window == min(cfg.receive_buffer, 0xFFFF)  # SYN windows are unscaled
    assert conn.poll_at() == 5.0 + cfg.initial_rto


def test_syn_sent_synack_establishes_and_acks_rfc9293_3_10_7_3() -> None:
    conn = syn_sent()
    conn.receive(seg(IRS, ISS + 1, SYN | ACK, options=TcpOptions(mss=1200)), 0.1)
    ack = one(conn, 0.1)
    assert (ack.flags, ack.seq, ack.ack) == (ACK, ISS + 1, IRS + 1)
    assert conn.state is TcpState.ESTABLISHED
    assert conn.events() == [TcpEvent.ESTABLISHED]
    assert conn.mss == 1200
    assert conn.rtt.srtt is not None and abs(conn.rtt.srtt - 0.1) < 1e-9


def test_syn_sent_bad_ack_answered_with_rst_rfc9293_3_10_7_3() -> None:
    conn = syn_sent()
    conn.receive(seg(IRS, ISS + 5, SYN | ACK), 0.1)
    rst = one(conn, 0.1)
    assert (rst.flags, rst.seq) == (RST, ISS + 5)
    assert conn.state is TcpState.SYN_SENT
    assert conn.counters["drop_syn_sent_bad_ack"] == 1


def test_syn_sent_rst_with_acceptable_ack_refuses_rfc9293_3_10_7_3() -> None:
    conn = syn_sent()
    conn.receive(seg(0, ISS + 1, RST | ACK), 0.1)
    assert conn.state is TcpState.CLOSED
    assert conn.error == "refused"
    assert conn.events() == [TcpEvent.RESET, TcpEvent.CLOSED]


def test_syn_sent_rst_without_ack_ignored_rfc5961_3_2() -> None:
    conn = syn_sent()
    conn.receive(seg(IRS, 0, RST), 0.1)
    assert conn.state is TcpState.SYN_SENT
    assert conn.counters["drop_syn_sent_rst_bad_ack"] == 1
    none(conn, 0.1)


def test_simultaneous_open_rfc9293_3_5_figure_8() -> None:
    conn = syn_sent()
    conn.receive(seg(IRS, 0, SYN, options=TcpOptions(mss=1460)), 0.1)
    assert conn.state is TcpState.SYN_RECEIVED
    synack = one(conn, 0.1)
    assert (synack.flags, synack.seq, synack.ack) == (SYN | ACK, ISS, IRS + 1)
    conn.receive(seg(IRS + 1, ISS + 1, ACK), 0.2)
    assert conn.state is TcpState.ESTABLISHED
    assert conn.events() == [TcpEvent.ESTABLISHED]


def test_syn_retransmitted_with_backoff_then_abandoned_rfc6298_5_5() -> None:
    conn = syn_sent(plain_config(max_syn_retries=2))
    times = []
    t = 0.0
    for _ in range(2):
        deadline = conn.poll_at()
        assert deadline is not None
        t = deadline
        conn.on_timer(t)
        syn = one(conn, t)
        assert syn.flags == SYN and syn.seq == ISS
        times.append(t)
    assert times == [1.0, 3.0]  # 1 s, then doubled (RFC 6298 §5.5)
    deadline = conn.poll_at()
    assert deadline == 7.0
    conn.on_timer(deadline)
    assert conn.state is TcpState.CLOSED and conn.error == "timeout"


def test_mss_defaults_to_536_without_option_rfc9293_3_7_1() -> None:
    conn = syn_sent()
    conn.receive(seg(IRS, ISS + 1, SYN | ACK), 0.1)
    assert conn.mss == 536


def test_window_scaling_needs_both_sides_rfc7323_1_3() -> None:
    cfg = TcpConfig(timestamps=False, sack=False)
    conn = TcpConnection.connect(
        cfg, LOCAL_IP, LOCAL_PORT, REMOTE_IP, REMOTE_PORT, 0.0, FixedIsn(ISS)
    )
    one(conn, 0.0)
    conn.receive(seg(IRS, ISS + 1, SYN | ACK, window=1000, options=TcpOptions(mss=1460)), 0.1)
    assert conn.options["snd_wscale"] == 0 and conn.options["rcv_wscale"] == 0
    ack = one(conn, 0.1)
    assert ack.window <= 0xFFFF


def test_window_scale_applied_to_later_windows_rfc7323_2_3() -> None:
    cfg = TcpConfig(timestamps=False, sack=False)
    conn = TcpConnection.connect(
        cfg, LOCAL_IP, LOCAL_PORT, REMOTE_IP, REMOTE_PORT, 0.0, FixedIsn(ISS)
    )
    one(conn, 0.0)
    conn.receive(
        seg(IRS, ISS + 1, SYN | ACK, window=1000, options=TcpOptions(mss=1460, wscale=20)), 0.1
    )
    assert conn.options["snd_wscale"] == 14  # clamped (RFC 7323 §2.3)
    assert conn.send_window == 1000  # the SYN's window is never scaled
    conn.receive(seg(IRS + 1, ISS + 1, ACK, window=3), 0.2)
    assert conn.send_window == 3 << 14


def test_timestamps_negotiated_reduce_mss_rfc7323_3_2() -> None:
    cfg = TcpConfig(sack=False)
    conn = TcpConnection.connect(
        cfg, LOCAL_IP, LOCAL_PORT, REMOTE_IP, REMOTE_PORT, 0.0, FixedIsn(ISS), ts_offset=0
    )
    one(conn, 0.0)
    conn.receive(
        seg(IRS, ISS + 1, SYN | ACK, options=TcpOptions(mss=1460, timestamps=(777, 0))), 0.1
    )
    assert conn.options["timestamps"] is True
    assert conn.mss == 1448
    ack = one(conn, 0.1)
    assert ack.options.timestamps == (100, 777)


def test_listener_passive_open_and_accept_rfc9293_3_10_7_2() -> None:
    cfg = plain_config()
    lst = Listener(cfg, REMOTE_PORT, isn_generator=FixedIsn(Seq(7777)))
    syn = seg(IRS, 0, SYN, options=TcpOptions(mss=1400))
    # The test plays a client talking to the listener on port 80.
    syn = type(syn)(LOCAL_PORT, REMOTE_PORT, IRS, Seq(0), SYN, 5000, b"", TcpOptions(mss=1400))
    lst.receive(syn, LOCAL_IP, REMOTE_IP, 0.0)
    outs = lst.segments_to_send(0.0)
    assert len(outs) == 1
    synack = outs[0].segment
    assert (synack.flags, synack.seq, synack.ack) == (SYN | ACK, Seq(7777), IRS + 1)
    assert outs[0].dst_ip == LOCAL_IP and outs[0].src_ip == REMOTE_IP
    assert lst.accept() is None
    ack = type(syn)(LOCAL_PORT, REMOTE_PORT, IRS + 1, Seq(7778), ACK, 5000)
    lst.receive(ack, LOCAL_IP, REMOTE_IP, 0.05)
    conn = lst.accept()
    assert conn is not None and conn.state is TcpState.ESTABLISHED
    assert conn.mss == 1400
    assert conn.events() == [TcpEvent.ESTABLISHED]


def test_first_read_after_the_synack_window_sends_no_update_rfc7323_2_2() -> None:
    """A SYN-ACK's window is never scaled (RFC 7323 §2.2): after a passive open the
    client knows at most 65,535 bytes while a larger buffer's window is twice that.
    Reading a small request frees only its own bytes, and a client with less than two
    segments unacknowledged cannot be waiting on the window: no pure window update
    (which cost every short connection a segment); the ACK rides on the answer."""
    lst = Listener(TcpConfig(), REMOTE_PORT, isn_generator=FixedIsn(Seq(7777)))
    proto = seg(IRS)
    syn = type(proto)(LOCAL_PORT, REMOTE_PORT, IRS, Seq(0), SYN, 64240, b"",
                      TcpOptions(mss=1460, wscale=7))
    lst.receive(syn, LOCAL_IP, REMOTE_IP, 0.0)
    synack = lst.segments_to_send(0.0)[0].segment
    assert synack.window == 0xFFFF and synack.options.wscale is not None
    lst.receive(type(proto)(LOCAL_PORT, REMOTE_PORT, IRS + 1, Seq(7778), ACK, 502), LOCAL_IP,
                REMOTE_IP, 0.05)
    conn = lst.accept()
    assert conn is not None and conn.events() == [TcpEvent.ESTABLISHED]
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    conn.receive(type(proto)(LOCAL_PORT, REMOTE_PORT, IRS + 1, Seq(7778), ACK | PSH, 502,
                             request), 0.1)
    assert conn.recv() == request
    none(conn, 0.1)
    conn.send(b"HTTP/1.1 204 No Content\r\n\r\n")
    answer = one(conn, 0.101)
    assert answer.payload.startswith(b"HTTP/1.1 204") and answer.ack == IRS + 1 + len(request)
    assert answer.window << synack.options.wscale >= 2 * 0xFFFF  # the whole window now


def test_listener_answers_stray_ack_with_rst_rfc9293_3_10_7_2() -> None:
    lst = Listener(plain_config(syn_cookies=False), REMOTE_PORT)
    ack = seg(IRS, 1234, ACK)
    ack = type(ack)(LOCAL_PORT, REMOTE_PORT, IRS, Seq(1234), ACK, 5000)
    lst.receive(ack, LOCAL_IP, REMOTE_IP, 0.0)
    outs = lst.segments_to_send(0.0)
    assert [(o.segment.flags, o.segment.seq) for o in outs] == [(RST, Seq(1234))]
    assert lst.counters["drop_listen_ack"] == 1


def test_listener_resends_synack_when_syn_is_retransmitted() -> None:
    lst = Listener(plain_config(), REMOTE_PORT, isn_generator=FixedIsn(Seq(7777)))
    proto = seg(IRS)
    syn = type(proto)(LOCAL_PORT, REMOTE_PORT, IRS, Seq(0), SYN, 5000)
    lst.receive(syn, LOCAL_IP, REMOTE_IP, 0.0)
    assert len(lst.segments_to_send(0.0)) == 1
    lst.receive(syn, LOCAL_IP, REMOTE_IP, 0.3)
    again = lst.segments_to_send(0.3)
    assert [o.segment.flags for o in again] == [SYN | ACK]
    assert lst.syn_queue_len == 1


def test_rto_reinitialised_to_3s_after_syn_timeout_rfc6298_5_7() -> None:
    conn = syn_sent()
    conn.on_timer(1.0)
    one(conn, 1.0)  # the SYN again
    conn.receive(seg(IRS, ISS + 1, SYN | ACK, options=TcpOptions(mss=1460)), 1.2)
    assert conn.state is TcpState.ESTABLISHED
    assert conn.rtt.srtt is None  # Karn: no sample from the retransmitted SYN
    assert conn.rtt.rto == 3.0
