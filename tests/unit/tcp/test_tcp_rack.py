"""RACK (RFC 8985 §6) as the connection drives it, stepped at explicit times: RFC
6675's DupThresh decides until reordering is seen; then loss is decided by time,
with the reordering window of §6.2 step 4 and the reordering timer of §6.3.

The handshake takes 20 ms (SRTT 20 ms); ten full segments go at t = 1.0 from ISS+1,
``S(k)`` is segment k's first octet. SACK on, timestamps off.
"""

from __future__ import annotations

import pytest
from tcp_helpers import ACK, IRS, ISS, SYN, one, out, plain_config, seg, syn_sent

from joyride.tcp.connection import TcpConnection
from joyride.tcp.timers import Timer
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpOptions, TcpSegment

MSS = 1460
BASE = ISS + 1


def S(k: int) -> Seq:
    return BASE + k * MSS


def _ack(ack: Seq, *blocks: tuple[int, int]) -> TcpSegment:
    sack = tuple((S(a), S(b)) for a, b in blocks)
    return seg(IRS + 1, ack, ACK, options=TcpOptions(sack_blocks=sack))


def _conn() -> TcpConnection:
    conn = syn_sent(plain_config(sack=True, congestion_control="cubic"), 0.0)
    conn.receive(seg(IRS, ISS + 1, SYN | ACK, options=TcpOptions(mss=MSS, sack_permitted=True)),
                 0.02)
    one(conn, 0.02)
    assert conn.rtt.srtt == pytest.approx(0.02)
    conn.send(b"d" * MSS * 10)
    assert [s.seq for s in out(conn, 1.0)] == [S(k) for k in range(10)]
    return conn


def _reordered_once(conn: TcpConnection) -> None:
    """S(0) arrives after S(1): the hole below SACKed data is filled by the original
    transmission (RFC 8985 §6.2 step 3), and RACK takes over from DupThresh."""
    conn.receive(_ack(S(0), (1, 2)), 1.02)  # RACK.rtt = RACK.min_RTT = 20 ms
    rec = conn._recovery
    assert not rec.reordering_seen and not rec.board.rack_mode
    conn.receive(_ack(S(2)), 1.021)
    assert rec.reordering_seen and rec.board.rack_mode
    assert conn.counters["rack_reordering_seen"] == 1
    # §6.2 step 4: reo_wnd = min(min_RTT / 4 * reo_wnd_mult, SRTT) = 5 ms.
    assert rec.reo_wnd(conn.rtt.srtt) == pytest.approx(0.005)


def test_dupthresh_decides_before_reordering_is_seen_rfc8985_6_2_step4() -> None:
    conn = _conn()
    conn.receive(_ack(S(0), (1, 4)), 1.03)  # three segments SACKed above S(0)
    assert conn.in_recovery  # RFC 6675 IsLost(): RACK.reo_wnd is 0 until then
    assert out(conn, 1.03)[0].seq == S(0)


def test_reordering_window_holds_back_fast_retransmit_rfc8985_6_2() -> None:
    conn = _conn()
    _reordered_once(conn)
    conn.receive(_ack(S(2), (3, 6)), 1.03)  # S(2) missing, three segments above it
    # DupThresh would have declared S(2) lost; RACK waits until it was sent RACK.rtt
    # (30 ms) + reo_wnd (5 ms) ago: t = 1.035, the reordering timer (§6.3).
    assert not conn.in_recovery and conn.counters["fast_retransmits"] == 0
    assert conn._timers.deadline(Timer.REORDER) == pytest.approx(1.035)
    assert conn.hot_ready()  # the C data plane carries RACK's timer (it hands back)
    # S(2) was only late: it arrives, nothing is retransmitted, the timer goes.
    conn.receive(_ack(S(6)), 1.033)
    assert not conn._timers.is_set(Timer.REORDER)
    assert conn.counters["fast_retransmits"] == 0 and conn.counters["retransmitted_segments"] == 0


def test_reordering_timer_declares_the_hole_lost_rfc8985_6_3() -> None:
    conn = _conn()
    _reordered_once(conn)
    conn.receive(_ack(S(2), (3, 6)), 1.03)
    out(conn, 1.03)
    conn.on_timer(1.034)  # early: nothing
    assert not conn.in_recovery
    conn.on_timer(1.036)
    assert conn.counters["rack_timer_fired"] == 1
    assert conn.in_recovery and conn.counters["fast_retransmits"] == 1
    assert out(conn, 1.036)[0].seq == S(2)


def test_what_went_after_the_delivered_segment_is_not_lost_rfc8985_6_2() -> None:
    """The ten segments went in one send (one send time). S(3) is SACKed, S(2) is
    missing and S(4)..S(9) are still on their way: when the timer fires only S(2) is
    lost. S(4) on were sent after S(3), the segment delivered; RACK_sent_after breaks
    the tie in time by sequence (RACK.end_seq), so they are not RACK's to declare."""
    conn = _conn()
    _reordered_once(conn)
    rec = conn._recovery
    conn.receive(_ack(S(2), (3, 4)), 1.03)
    assert rec.rack_end_seq == S(4)
    out(conn, 1.03)
    conn.on_timer(conn._timers.deadline(Timer.REORDER) or 0.0)
    assert conn.in_recovery
    assert rec.board.is_lost(S(2)) and not rec.board.is_lost(S(4))
    sent = out(conn, 1.04)
    assert [s.seq for s in sent if s.seq < S(10)] == [S(2)]  # no spurious resends
    assert conn.counters["retransmitted_segments"] == 1


def test_each_ack_retimes_the_wait_by_rack_rtt_rfc8985_6_2_step5() -> None:
    """Segments sent together: each later ACK measures a longer RACK.rtt (from the
    same send time), so the hole is lost only once RACK.rtt + reo_wnd has passed
    since it was sent, as measured by the latest ACK: the timer decides."""
    conn = _conn()
    _reordered_once(conn)
    conn.receive(_ack(S(2), (3, 6)), 1.03)
    conn.receive(_ack(S(2), (3, 7)), 1.04)  # RACK.rtt 40 ms: lost at 1.045
    assert not conn.in_recovery
    assert conn._timers.deadline(Timer.REORDER) == pytest.approx(1.045)
    conn.receive(_ack(S(2), (3, 8)), 1.05)  # RACK.rtt 50 ms: lost at 1.055
    assert not conn.in_recovery
    assert conn._timers.deadline(Timer.REORDER) == pytest.approx(1.055)
    conn.on_timer(conn._timers.deadline(Timer.REORDER) or 0.0)
    assert conn.in_recovery


def test_dsack_rounds_widen_the_reordering_window_rfc8985_6_2_step4() -> None:
    conn = _conn()
    _reordered_once(conn)
    rec = conn._recovery
    conn.receive(_ack(S(2), (0, 1)), 1.03)  # a D-SACK of S(0): a duplicate came back
    assert conn.counters["dsack_received"] == 1 and rec.reo_wnd_mult == 2
    conn.receive(_ack(S(2), (1, 2)), 1.031)  # the same round: no further widening
    assert rec.reo_wnd_mult == 2
    # min(20 ms / 4 * 2, SRTT).
    assert rec.reo_wnd(conn.rtt.srtt) == pytest.approx(0.01)


def test_send_times_follow_batches_and_hand_back() -> None:
    """Send times are kept per send call; what the C data plane sent is timed by its
    last send (so RACK can only find it lost later, never earlier)."""
    conn = _conn()
    rec = conn._recovery
    assert rec._tx_time(S(0)) == 1.0 and rec._tx_time(S(10) - 1) == 1.0
    conn.receive(_ack(S(4)), 1.02)
    conn.send(b"e" * MSS)
    out(conn, 1.05)
    assert rec._tx_time(S(10)) == 1.05 and rec._tx_time(S(5)) == 1.0
    rec.note_sent(S(20), 1.2, S(4))  # as import_hot does with the TCB's last_send
    assert rec._tx_time(S(15)) == 1.2
    rec.note_sent(S(21), 1.3, S(10))  # records below SND.UNA go
    assert rec._tx_ends[0] == S(10) and rec._tx_time(S(10)) == 1.05


def test_a_lost_retransmission_is_sent_again_without_an_rto_rfc8985_6_2() -> None:
    """RFC 8985 §6.2: retransmissions are timed too. S(0) is lost and so is its
    retransmission (t = 1.022); once a segment sent after it (S(12), t = 1.032) is
    SACKed and RACK.rtt has passed since the retransmission, it is lost again and goes
    first - RFC 6675 alone would wait for the RTO. Reordering never seen: this runs in
    the DupThresh regime too."""
    conn = syn_sent(plain_config(sack=True, congestion_control="cubic"), 0.0)
    conn.receive(seg(IRS, ISS + 1, SYN | ACK, options=TcpOptions(mss=MSS, sack_permitted=True)),
                 0.02)
    one(conn, 0.02)
    conn.send(b"d" * MSS * 20)
    assert len(out(conn, 1.0)) == 10
    sent: list[tuple[float, int]] = []
    for t, k in ((1.02, 2), (1.021, 3), (1.022, 4), (1.03, 5), (1.031, 6), (1.032, 7),
                 (1.04, 10), (1.05, 11)):
        conn.receive(_ack(S(0), (1, k)), t)
        sent += [(t, (s.seq - BASE) // MSS) for s in out(conn, t)]
    assert (1.022, 0) in sent and (1.032, 12) in sent  # the retransmission, then S(12)
    assert [k for _, k in sent].count(0) == 1
    assert not conn._recovery.reordering_seen
    conn.receive(_ack(S(0), (1, 13)), 1.06)  # S(12) SACKed; RACK.rtt 28 ms
    assert conn.counters["rack_lost_retransmissions"] == 1
    first = out(conn, 1.06)[0]
    assert (first.seq, len(first.payload)) == (S(0), MSS)
    conn.receive(_ack(S(0), (1, 14)), 1.061)  # no second resend of the same loss
    assert all(s.seq != S(0) for s in out(conn, 1.061))
    conn.receive(_ack(S(19)), 1.08)
    assert conn.counters["rto_expired"] == 0 and conn.counters["retransmitted_segments"] == 2


class _Tx:
    def __init__(self) -> None:
        self.end = 0
        self.at = 0.0


class _Range:
    def __init__(self) -> None:
        self.start = self.end = 0


class _Tcb:
    """A stand-in for ``struct dp_tcb``'s recovery fields (LossRecovery.save_hot)."""

    def __init__(self, records: int, ranges: int = 8) -> None:
        self.tx = [_Tx() for _ in range(records)]
        self.tx_count = 0
        self.rack_xmit_ts = self.rack_rtt = self.rack_min_rtt = self.rack_timeout = 0.0
        self.undo_open = self.undo_expired = 0
        self.undo_until = 0.0
        self.snd_una = 0
        self.sacked = [_Range() for _ in range(ranges)]
        self.sacked_count = self.sacked_bytes = self.dupacks = self.lt_bytes = 0
        self.dupthresh = self.reo_wnd_mult = self.reordering_seen = self.enter_pending = 0
        self.rack_mode = self.rack_end_seq = 0


def test_rack_records_and_state_ride_a_c_stint_unchanged() -> None:
    """While C runs a connection it keeps RACK's send-time records and state and the
    sender's scoreboard: what LossRecovery.save_hot writes, load_hot reads back as it
    was (no record made up at hand-back), the reordering timer included."""
    from joyride.tcp.recovery import HOT_TX_RECORDS

    conn = _conn()
    _reordered_once(conn)
    rec = conn._recovery
    conn.send(b"e" * MSS * 3)
    out(conn, 1.03)
    conn.receive(_ack(S(2), (3, 5)), 1.031)  # a hole below SACKed data: the timer waits

    def snapshot() -> tuple[object, ...]:
        return (rec.tx_records(), rec.rack_xmit_ts, rec.rack_rtt, rec.rack_min_rtt,
                rec.board.blocks(), rec.sacked_bytes, rec.dupacks, rec.reordering_seen,
                rec.rack_timeout, rec.board.rack_mode)

    before = snapshot()
    assert len(before[0]) == 2 and before[1] is not None  # two send times outstanding
    assert rec.dupacks == 1 and rec.rack_timeout is not None and conn.hot_ready()
    tcb = _Tcb(HOT_TX_RECORDS)
    tcb.snd_una = int(conn.snd_una)
    rec.save_hot(tcb)
    assert tcb.tx_count == 2 and tcb.sacked_count == 1 and tcb.dupthresh == 3
    rec.load_hot(tcb)
    assert snapshot() == before
    assert conn.counters["rack_reordering_seen"] == 1  # not counted again


def test_c_takes_the_newest_rack_records_and_none_reads_as_none() -> None:
    from joyride.tcp.recovery import HOT_TX_RECORDS

    conn = _conn()
    rec = conn._recovery
    for k in range(HOT_TX_RECORDS + 5):  # one send time each, after the first ten
        rec.note_sent(S(11 + k), 1.001 + k / 1000, conn.snd_una)
    records = rec.tx_records()
    assert len(records) == HOT_TX_RECORDS + 6
    tcb = _Tcb(HOT_TX_RECORDS)
    tcb.snd_una = int(conn.snd_una)
    rec.save_hot(tcb)
    assert tcb.tx_count == HOT_TX_RECORDS and tcb.rack_xmit_ts == -1.0  # nothing ACKed
    rec.load_hot(tcb)
    assert rec.tx_records() == records[-HOT_TX_RECORDS:]  # the oldest went
    assert rec.rack_xmit_ts is None and rec.rack_min_rtt is None
