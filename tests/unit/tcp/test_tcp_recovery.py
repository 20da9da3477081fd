"""Retransmission and loss recovery: RFC 6298, RFC 5681 §3.2, RFC 6582, RFC 6675."""

from __future__ import annotations

import pytest
from tcp_helpers import ACK, IRS, ISS, PSH, established, none, one, out, plain_config, seg

from joyride.tcp.congestion import Cubic
from joyride.tcp.connection import TcpConnection
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpOptions, TcpSegment


def _loaded(n_segments: int, **cfg: object) -> tuple[TcpConnection, list[TcpSegment]]:
    conn = established(plain_config(**cfg))
    conn.send(b"d" * (1460 * n_segments))
    return conn, out(conn, 1.0)


def test_rto_retransmits_head_and_backs_off_rfc6298_5_4() -> None:
    conn = established()
    conn.send(b"x" * 1000)
    first = one(conn, 1.0)
    deadline = conn.poll_at()
    assert deadline == 1.0 + conn.config.min_rto  # 0 s handshake RTT: RTO at its floor
    conn.on_timer(deadline)
    again = one(conn, deadline)
    assert again.seq == first.seq and again.payload == first.payload
    assert conn.poll_at() == deadline + 2 * conn.config.min_rto  # doubled (§5.5)
    assert conn.congestion.cwnd == conn.mss  # RFC 5681 §3.1 loss window


def test_karn_no_rtt_sample_from_retransmission_rfc6298_3() -> None:
    conn = established()
    conn.send(b"x" * 100)
    one(conn, 1.0)
    conn.on_timer(1.2)
    one(conn, 1.2)
    conn.receive(seg(IRS + 1, ISS + 101), 1.25)
    # The handshake gave the only sample (0 s RTT): the ACK after the retransmission
    # must not add the ambiguous 0.25 s or 0.05 s.
    assert conn.rtt.srtt == 0.0
    assert conn.rtt.rto == conn.config.min_rto


def test_rtt_sampled_from_timed_segment_rfc6298_2() -> None:
    conn = established()
    conn.send(b"x" * 100)
    one(conn, 1.0)
    conn.receive(seg(IRS + 1, ISS + 101), 1.25)
    assert conn.rtt.srtt is not None and 0.0 < conn.rtt.srtt <= 0.25


def test_three_dupacks_trigger_fast_retransmit_rfc5681_3_2() -> None:
    conn, segs = _loaded(10)
    assert len(segs) == 10  # IW10 (RFC 6928)
    cwnd_before = conn.congestion.cwnd
    for i in range(3):
        conn.receive(seg(IRS + 1, ISS + 1), 1.1 + i * 0.001)
    rtx = out(conn, 1.11)
    assert rtx[0].seq == ISS + 1 and len(rtx[0].payload) == 1460
    assert conn.in_recovery
    cc = conn.congestion
    assert cc.ssthresh == max(1460 * 10 // 2, 2 * 1460)
    assert cc.cwnd == cc.ssthresh + 3 * 1460
    assert cwnd_before > cc.ssthresh


def test_newreno_partial_ack_retransmits_next_hole_rfc6582_3_2() -> None:
    conn, _ = _loaded(10)
    for _ in range(3):
        conn.receive(seg(IRS + 1, ISS + 1), 1.1)
    out(conn, 1.1)
    # Partial ACK: the first segment arrived, the third is also lost.
    conn.receive(seg(IRS + 1, ISS + 1 + 2 * 1460), 1.2)
    rtx = out(conn, 1.2)
    assert rtx and rtx[0].seq == ISS + 1 + 2 * 1460
    assert conn.in_recovery
    # Full ACK ends recovery with cwnd <= ssthresh (RFC 6582 §3.2 step 3).
    conn.receive(seg(IRS + 1, ISS + 1 + 10 * 1460), 1.3)
    assert not conn.in_recovery
    cc = conn.congestion
    assert cc.cwnd <= cc.ssthresh


def test_sack_recovery_retransmits_only_holes_rfc6675_5() -> None:
    conn = established(
        plain_config(sack=True), peer_options=TcpOptions(mss=1460, sack_permitted=True)
    )
    conn.send(b"d" * 1460 * 10)
    out(conn, 1.0)
    base = ISS + 1
    # Segments 0 and 2 lost; 1 and 3..9 SACKed, reported over a few ACKs.
    blocks = [
        ((base + 1460, base + 2 * 1460),),
        ((base + 3 * 1460, base + 5 * 1460), (base + 1460, base + 2 * 1460)),
        ((base + 3 * 1460, base + 8 * 1460), (base + 1460, base + 2 * 1460)),
        ((base + 3 * 1460, base + 10 * 1460), (base + 1460, base + 2 * 1460)),
    ]
    rtx_seqs: list[Seq] = []
    for i, b in enumerate(blocks):
        conn.receive(seg(IRS + 1, base, ACK, options=TcpOptions(sack_blocks=b)), 1.1 + i / 100)
        rtx_seqs += [s.seq for s in out(conn, 1.1 + i / 100)]
    assert conn.in_recovery
    assert base in rtx_seqs and base + 2 * 1460 in rtx_seqs
    assert base + 1460 not in rtx_seqs  # SACKed: never resent
    assert all(s < base + 3 * 1460 for s in rtx_seqs)


def test_ack_restarts_retransmit_timer_rfc6298_5_3() -> None:
    conn = established(plain_config(nodelay=True))
    conn.send(b"a" * 100)
    one(conn, 1.0)
    conn.send(b"b" * 100)
    one(conn, 1.1)
    conn.receive(seg(IRS + 1, ISS + 101), 1.15)
    deadline = conn.poll_at()
    assert deadline is not None and deadline > 1.2


def test_all_acked_stops_retransmit_timer_rfc6298_5_2() -> None:
    conn = established()
    conn.send(b"a" * 100)
    one(conn, 1.0)
    conn.receive(seg(IRS + 1, ISS + 101), 1.1)
    assert conn.poll_at() is None
    none(conn, 1.2)


def test_cubic_hears_the_smoothed_rtt_rfc9438_4_2() -> None:
    """RFC 9438 §4.2: W_cubic(t + RTT) uses the smoothed RTT, not the latest sample
    (and not nothing when an ACK carries no sample)."""
    conn = established(plain_config(congestion_control="cubic"))
    cc = conn.congestion
    assert isinstance(cc, Cubic)
    conn.send(b"x" * 1460 * 10)
    out(conn, 1.0)
    conn.receive(seg(IRS + 1, ISS + 1 + 1460 * 5), 1.1)  # a 100 ms sample
    srtt = conn.rtt.srtt
    assert srtt is not None and srtt != pytest.approx(0.1)
    assert cc.last_rtt == srtt
    conn.receive(seg(IRS + 1, ISS + 1 + 1460 * 10), 1.3)  # no sample: none timed
    assert cc.last_rtt == conn.rtt.srtt == srtt


def _dupack(conn: TcpConnection, sack_to: int, now: float) -> None:
    """A duplicate ACK of ISS+1; with SACK it reports segments [1, sack_to)."""
    opts = None
    if conn.options["sack"]:
        base = ISS + 1
        opts = TcpOptions(sack_blocks=((base + 1460, base + sack_to * 1460),))
    conn.receive(seg(IRS + 1, ISS + 1, ACK, options=opts), now)


@pytest.mark.parametrize("sack", [False, True])
def test_limited_transmit_on_first_two_dupacks_rfc3042_2(sack: bool) -> None:
    """RFC 3042 §2: each of the first two duplicate ACKs sends one new segment if the
    peer's window allows and outstanding data stays <= cwnd + 2*SMSS; cwnd itself
    does not change, and those segments are left out of FlightSize when ssthresh is
    computed at the third (RFC 5681 §3.2 step 2)."""
    conn = established(
        plain_config(sack=sack), peer_options=TcpOptions(mss=1460, sack_permitted=sack)
    )
    conn.send(b"d" * 1460 * 15)
    assert len(out(conn, 1.0)) == 10  # IW10
    cwnd = conn.congestion.cwnd
    base = ISS + 1
    _dupack(conn, 2, 1.1)
    assert [s.seq for s in out(conn, 1.1)] == [base + 10 * 1460]
    _dupack(conn, 3, 1.11)
    assert [s.seq for s in out(conn, 1.11)] == [base + 11 * 1460]
    assert conn.congestion.cwnd == cwnd and not conn.in_recovery
    assert conn.counters["limited_transmit_segments"] == 2
    _dupack(conn, 4, 1.12)
    assert conn.in_recovery
    rtx = out(conn, 1.12)
    assert rtx[0].seq == base  # fast retransmit, and no new data: the window is full
    assert all(s.seq < base + 12 * 1460 for s in rtx)
    assert conn.congestion.ssthresh == 5 * 1460  # FlightSize 10, not 12, segments


def test_limited_transmit_respects_the_peer_window_rfc3042_2() -> None:
    conn = established(window=10 * 1460)
    conn.send(b"d" * 1460 * 15)
    assert len(out(conn, 1.0)) == 10
    conn.receive(seg(IRS + 1, ISS + 1, ACK, window=10 * 1460), 1.1)
    assert out(conn, 1.1) == []
    assert conn.counters["limited_transmit_segments"] == 0


def test_pure_ack_after_rto_carries_snd_max_rfc9293_3_10_7_4() -> None:
    """After an RTO rewinds SND.NXT (go-back-N), a pure ACK must still be acceptable
    to a peer that received more than we know (its ACKs were lost): numbered SND.MAX,
    not the rewound SND.NXT, or the peer drops it unread (§3.10.7.4 first check)."""
    conn = established()
    conn.send(b"x" * 1460 * 3)
    assert len(out(conn, 1.0)) == 3
    deadline = conn.poll_at()
    assert deadline is not None
    conn.on_timer(deadline)
    rtx = out(conn, deadline)
    assert [s.seq for s in rtx] == [ISS + 1]  # go-back-N from SND.UNA, one segment (cwnd)
    conn.receive(seg(IRS + 1, ISS + 1, ACK | PSH, b"hello"), deadline + 0.01)
    conn.on_timer(deadline + 0.1)
    acks = [s for s in out(conn, deadline + 0.1) if not s.payload]
    assert acks and all(a.seq == ISS + 1 + 3 * 1460 for a in acks)
    assert acks[-1].ack == IRS + 6


def test_a_batch_of_acks_taken_before_sending_still_doubles_slow_start() -> None:
    """The ACKs of one flight, all taken before anything more is sent (one rx batch),
    each leave less in flight; whether cwnd may grow is decided on the most this
    window of data had in flight (RFC 7661 §4.3, as Linux's tcp_cwnd_validate), so
    slow start still doubles: 10 ACKs of 10 segments make cwnd 20 (it made 14)."""
    conn, segs = _loaded(40)
    assert len(segs) == 10
    cwnd = conn.congestion.cwnd
    for k in range(1, 11):
        conn.receive(seg(IRS + 1, ISS + 1 + k * 1460), 1.05 + k * 1e-6)
    assert conn.congestion.cwnd == cwnd + 10 * 1460
    assert len(out(conn, 1.06)) == 20


def test_an_application_limited_window_does_not_grow_cwnd_rfc7661() -> None:
    """RFC 7661 §4.3: a window in which the sender used less than half of cwnd (the
    application had little to send) gives no growth, whatever the ACKs."""
    conn, segs = _loaded(3)
    assert len(segs) == 3  # 3 of IW10: application-limited
    cwnd = conn.congestion.cwnd
    for k in range(1, 4):
        conn.receive(seg(IRS + 1, ISS + 1 + k * 1460), 1.05 + k * 1e-6)
    assert conn.congestion.cwnd == cwnd
