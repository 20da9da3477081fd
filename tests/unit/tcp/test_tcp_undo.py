"""Spurious retransmission detection and undo, stepped at explicit times: the
timestamp test (RFC 3522 Eifel), D-SACK (RFC 2883 §5, RFC 3708), the undo of
cwnd/ssthresh (RFC 4015 §3.2) after a spurious fast retransmit and a spurious RTO,
and what the C data plane may take meanwhile (docs/dataplane.md).

Ten full segments go at t = 1.0 from ISS+1; ``S(k)`` is segment k's first octet. With
timestamps the local clock has offset 0, so a segment sent at t carries TSval
int(t * 1000).
"""

from __future__ import annotations

import pytest
from tcp_helpers import ACK, IRS, ISS, established, out, plain_config, seg

from joyride.dataplane.plane import ffi
from joyride.tcp.congestion import INITIAL_SSTHRESH, NewReno
from joyride.tcp.connection import TcpConnection
from joyride.tcp.counters import Counters
from joyride.tcp.recovery import LossRecovery
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpOptions, TcpSegment

MSS = 1460
BASE = ISS + 1


def S(k: int) -> Seq:
    return BASE + k * MSS


def _conn(timestamps: bool, cc: str = "newreno", *, tlp: bool = True) -> TcpConnection:
    # With timestamps the MSS option leaves 12 bytes for them: offer 1472.
    mss = MSS + 12 if timestamps else MSS
    peer = TcpOptions(mss=mss, sack_permitted=True, timestamps=(500, 0) if timestamps else None)
    conn = established(
        plain_config(sack=True, timestamps=timestamps, congestion_control=cc, mss=mss,
                     tlp=tlp),
        peer_options=peer,
    )
    assert conn.mss == MSS
    conn.send(b"d" * MSS * 10)
    sent = out(conn, 1.0)
    assert [s.seq for s in sent] == [S(k) for k in range(10)]
    if timestamps:
        assert sent[0].options.timestamps is not None
        assert sent[0].options.timestamps[0] == 1000
    return conn


def _ack(ack: Seq, *blocks: tuple[Seq, Seq], tsecr: int | None = None) -> TcpSegment:
    ts = (600, tsecr) if tsecr is not None else None
    return seg(IRS + 1, ack, ACK, options=TcpOptions(sack_blocks=blocks, timestamps=ts))


def _spurious_fast_retransmit(conn: TcpConnection, tsecr: int | None = None) -> None:
    """S(0) is delayed: S(1)..S(3) are SACKed and S(0) goes again at t = 1.1."""
    for k in (2, 3, 4):
        conn.receive(_ack(S(0), (S(1), S(k)), tsecr=tsecr), 1.1)
    assert conn.in_recovery
    assert out(conn, 1.1)[0].seq == S(0)
    # NewReno (RFC 5681 eq. 4): ssthresh = FlightSize / 2; PRR below it.
    assert conn.congestion.ssthresh == 5 * MSS
    assert conn.counters["fast_retransmits"] == 1


def test_eifel_undoes_spurious_fast_retransmit_rfc3522_rfc4015() -> None:
    conn = _conn(timestamps=True)
    _spurious_fast_retransmit(conn, tsecr=1000)
    # The original S(0) arrives: the ACK echoes its TSval (1000), older than the
    # retransmission's (1100): RFC 3522 says spurious; RFC 4015 restores the state.
    conn.receive(_ack(S(10), tsecr=1000), 1.2)
    assert conn.counters["spurious_detected_timestamps"] == 1
    assert conn.counters["undo_fast_recovery"] == 1
    assert not conn.in_recovery
    assert conn.congestion.cwnd >= 10 * MSS
    assert conn.congestion.ssthresh == INITIAL_SSTHRESH
    assert conn._recovery.hot_ok and conn.hot_ready()


def test_eifel_keeps_reduction_when_retransmission_was_needed_rfc3522() -> None:
    conn = _conn(timestamps=True)
    _spurious_fast_retransmit(conn, tsecr=1000)
    # The ACK echoes the retransmission's TSval: S(0) was lost. No undo.
    conn.receive(_ack(S(10), tsecr=1100), 1.2)
    assert conn.counters["spurious_detected_timestamps"] == 0
    assert conn.counters["undo_fast_recovery"] == 0
    assert conn.congestion.cwnd == 5 * MSS and conn.congestion.ssthresh == 5 * MSS


def test_dsack_undoes_spurious_fast_retransmit_after_recovery_rfc3708() -> None:
    """Without timestamps: the full ACK ends recovery (cwnd = ssthresh), the D-SACK of
    the retransmitted S(0) comes after it and proves every retransmission was
    unneeded (RFC 3708 §3): undo. Until then the data plane may not take it."""
    conn = _conn(timestamps=False)
    _spurious_fast_retransmit(conn)
    conn.receive(_ack(S(10)), 1.2)
    assert not conn.in_recovery and conn.congestion.cwnd == 5 * MSS
    # Undo is still possible, and the data plane may run the connection meanwhile: it
    # declines the ACK that carries the D-SACK (docs/dataplane.md).
    assert conn._recovery.undo_pending and conn.hot_ready()
    conn.receive(_ack(S(10), (S(0), S(1))), 1.25)  # D-SACK: below the ACK
    assert conn.counters["dsack_received"] == 1
    assert conn.counters["spurious_detected_dsack"] == 1
    assert conn.counters["undo_fast_recovery"] == 1
    assert conn.congestion.cwnd >= 10 * MSS
    assert conn.congestion.ssthresh == INITIAL_SSTHRESH
    assert conn.hot_ready()


def test_dsack_of_some_retransmissions_only_is_no_undo_rfc3708_3() -> None:
    conn = _conn(timestamps=False)
    # S(0) and S(1) lost or delayed; S(2)..S(4) SACKed: both are retransmitted.
    for k in (3, 4, 5):
        conn.receive(_ack(S(0), (S(2), S(k))), 1.1)
    # PRR (RFC 6937): pipe (S(5)..S(9)) is at ssthresh: only the fast retransmit.
    assert [s.seq for s in out(conn, 1.1)] == [S(0)]
    conn.receive(_ack(S(0), (S(2), S(7))), 1.15)  # pipe falls below ssthresh
    assert [s.seq for s in out(conn, 1.15)] == [S(1)]
    conn.receive(_ack(S(10)), 1.2)
    conn.receive(_ack(S(10), (S(0), S(1))), 1.25)  # only S(0) was a duplicate
    assert conn.counters["dsack_received"] == 1
    assert conn.counters["undo_fast_recovery"] == 0
    assert conn.congestion.ssthresh == 5 * MSS


def test_undo_window_closes_and_data_plane_may_take_over() -> None:
    """A recovery that was real: no D-SACK comes; the first ACK after the hold
    (two smoothed RTTs, or the RTO without a sample) ends the episode."""
    conn = _conn(timestamps=False)
    _spurious_fast_retransmit(conn)
    conn.receive(_ack(S(10)), 1.2)
    assert conn._recovery.undo_pending and conn.hot_ready()
    conn.send(b"e" * 100)
    out(conn, 1.3)
    conn.receive(_ack(S(10) + 100), 5.0)
    assert not conn._recovery.undo_pending and conn.hot_ready()
    assert conn.counters["undo_fast_recovery"] == 0


def test_eifel_verdict_is_taken_before_the_data_plane_may_run_it_rfc3522() -> None:
    """The first acceptable ACK after a retransmission decides (RFC 3522 §2): C does not
    compare timestamps, so until that ACK the connection stays here."""
    conn = _conn(timestamps=True)
    _spurious_fast_retransmit(conn, tsecr=1000)
    conn.receive(_ack(S(0), (S(1), S(10)), tsecr=1000), 1.15)  # SACK only: no verdict
    assert not conn.hot_ready()
    conn.receive(_ack(S(10), tsecr=1100), 1.2)  # the verdict: the loss was real
    assert conn._recovery.undo_pending and conn.hot_ready()


def _c_stint(conn: TcpConnection, ack_past_deadline: bool) -> None:
    """Export to a real ``struct dp_tcb`` and back, as a C data plane stint would, C
    having taken an ACK past the episode's deadline or not (test_dataplane checks C's
    side of that rule)."""
    tcb = ffi.new("struct dp_tcb *")
    moved = conn.export_hot(tcb)
    assert moved is not None and conn.parked
    assert tcb.undo_open == 1 and tcb.undo_until > 1.2
    tcb.undo_expired = int(ack_past_deadline)
    conn.import_hot(tcb, *moved)


@pytest.mark.skipif(ffi is None, reason="the C data plane is not built")
def test_dsack_after_a_data_plane_stint_still_undoes_rfc3708() -> None:
    conn = _conn(timestamps=False)
    _spurious_fast_retransmit(conn)
    conn.receive(_ack(S(10)), 1.2)
    _c_stint(conn, ack_past_deadline=False)
    conn.receive(_ack(S(10), (S(0), S(1))), 1.25)  # the D-SACK C declined
    assert conn.counters["undo_fast_recovery"] == 1
    assert conn.congestion.ssthresh == INITIAL_SSTHRESH


@pytest.mark.skipif(ffi is None, reason="the C data plane is not built")
def test_an_ack_c_took_past_the_deadline_ends_the_episode_at_hand_back() -> None:
    conn = _conn(timestamps=False)
    _spurious_fast_retransmit(conn)
    conn.receive(_ack(S(10)), 1.2)
    _c_stint(conn, ack_past_deadline=True)
    assert not conn._recovery.undo_pending
    conn.receive(_ack(S(10), (S(0), S(1))), 5.0)  # a D-SACK too late to count
    assert conn.counters["undo_fast_recovery"] == 0
    assert conn.congestion.ssthresh == 5 * MSS


def test_dsack_only_acks_are_not_duplicate_acks_rfc2883_5() -> None:
    """Three ACKs that only D-SACK (the network replicated segments) are no loss
    signal: no fast retransmit."""
    conn = _conn(timestamps=False)
    conn.receive(_ack(S(2)), 1.1)
    for _ in range(4):
        conn.receive(_ack(S(2), (S(0), S(1))), 1.15)
    assert conn.counters["dsack_received"] == 4
    assert not conn.in_recovery and conn.counters["fast_retransmits"] == 0


def test_eifel_undoes_spurious_rto_rfc3522_rfc4015() -> None:
    """The ACKs were only late: the RTO fires, S(0) is resent (TSval 1200), and the
    first ACK echoes the original TSval 1000: spurious timeout. RFC 4015 §3.2:
    cwnd and ssthresh come back and the sender goes on from SND.MAX, not back N."""
    conn = _conn(timestamps=True, tlp=False)  # the RTO, not a loss probe
    before = conn.congestion.cwnd
    conn.on_timer(1.2)
    assert conn.counters["rto_expired"] == 1 and conn.congestion.cwnd == MSS
    rexmit = out(conn, 1.2)
    assert [s.seq for s in rexmit] == [S(0)]
    conn.receive(_ack(S(2), tsecr=1000), 1.25)
    assert conn.counters["spurious_detected_timestamps"] == 1
    assert conn.counters["undo_rto"] == 1
    assert conn.congestion.cwnd >= before
    assert conn.snd_nxt == S(10)
    conn.send(b"n" * MSS)
    assert [s.seq for s in out(conn, 1.25)] == [S(10)]  # new data, no go-back-N


def test_genuine_rto_is_not_undone_rfc3522() -> None:
    conn = _conn(timestamps=True, tlp=False)  # the RTO, not a loss probe
    conn.on_timer(1.2)
    out(conn, 1.2)
    conn.receive(_ack(S(1), tsecr=1200), 1.25)  # echoes the retransmission
    assert conn.counters["undo_rto"] == 0 and conn.congestion.cwnd <= 2 * MSS
    assert [s.seq for s in out(conn, 1.25)] == [S(1), S(2)]  # slow start, back N


# ---------------------------------------------------------------------- LossRecovery


M = 1000
UNA = Seq(5000)


def T(k: int) -> Seq:
    return UNA + k * M


def _rec() -> tuple[LossRecovery, NewReno, Counters]:
    cc = NewReno(M)
    counters = Counters()
    rec = LossRecovery(cc, counters, mss=M, dupthresh=3, iss=UNA - 1)
    rec.configure(M, True)
    return rec, cc, counters


def test_dsack_identification_rfc2883_5() -> None:
    """The first block is a D-SACK when below the ACK's own cumulative ACK, or inside
    the second block; a reordered older ACK's ordinary SACK block that lies below
    SND.UNA is not one."""
    rec, _, counters = _rec()
    mx = T(10)
    rec.on_ack(T(3), mx, 3 * M, False, ((T(1), T(2)),), 10 * M, None, 1.0, seg_ack=T(3))
    assert counters["dsack_received"] == 1
    rec.on_ack(T(3), mx, 0, False, ((T(5), T(6)), (T(5), T(7))), 7 * M, None, 1.0)
    assert counters["dsack_received"] == 2
    rec.on_ack(T(3), mx, 0, False, ((T(2), T(3)),), 7 * M, None, 1.0, seg_ack=T(1))
    assert counters["dsack_received"] == 2


def test_prr_proportional_part_rfc6937_3() -> None:
    """20 segments out, NewReno: ssthresh = 10 segments, RecoverFS = 20 segments.
    While pipe > ssthresh: sndcnt = CEIL(prr_delivered * ssthresh / RecoverFS) -
    prr_out, and cwnd = pipe + sndcnt."""
    rec, cc, _ = _rec()
    mx = T(20)
    # T(1)..T(3) SACKed: T(0) is lost (more than 2 segments SACKed above it).
    first = rec.on_ack(UNA, mx, 0, True, ((T(1), T(4)),), 20 * M, None, 1.0)
    assert first == (UNA, M) and rec.in_recovery
    assert cc.ssthresh == 10 * M and rec.recover_fs == 20 * M
    # DeliveredData = 3 segments; pipe = T(4)..T(19) = 16 segments > ssthresh:
    # sndcnt = ceil(3000 * 10000 / 20000) - 0 = 1500.
    assert rec.prr_delivered == 3 * M
    assert cc.cwnd == 16 * M + 1500
    rec.sent(M)  # the fast retransmit of T(0)
    assert rec.prr_out == M
    rec.on_ack(UNA, mx, 0, True, ((T(1), T(5)),), 20 * M, None, 1.1)
    # prr_delivered = 4000; pipe = T(0) resent (1000) + T(5)..T(19) (15000) = 16000;
    # sndcnt = ceil(4000 * 10000 / 20000) - 1000 = 1000.
    assert rec.prr_delivered == 4 * M
    assert cc.cwnd == 16 * M + 1000


def test_prr_slow_start_reduction_bound_rfc6937_3() -> None:
    """Once pipe <= ssthresh (PRR-SSRB): sndcnt = MIN(ssthresh - pipe,
    MAX(prr_delivered - prr_out, DeliveredData) + MSS)."""
    rec, cc, _ = _rec()
    mx = T(10)
    # T(1)..T(7) SACKed at once: DeliveredData 7000, pipe = T(8), T(9) = 2000.
    rec.on_ack(UNA, mx, 0, True, ((T(1), T(8)),), 10 * M, None, 1.0)
    assert cc.ssthresh == 5 * M
    # limit = max(7000 - 0, 7000) + 1000 = 8000; sndcnt = min(5000 - 2000, 8000).
    assert cc.cwnd == 2 * M + 3 * M
    rec.sent(M)
    rec.sent(4 * M)  # prr_out = 5000 (more than delivered would justify, say)
    rec.on_ack(UNA, mx, 0, True, ((T(1), T(9)),), 10 * M, None, 1.1)
    # prr_delivered = 8000, DeliveredData = 1000; pipe = T(0) resent + T(9) = 2000;
    # limit = max(8000 - 5000, 1000) + 1000 = 4000; sndcnt = min(3000, 4000) = 3000.
    assert cc.cwnd == 2 * M + 3 * M
    rec.sent(6 * M)  # prr_out = 11000 > prr_delivered: the bound bites
    rec.on_ack(UNA, mx, 0, True, ((T(1), T(10)),), 10 * M, None, 1.2)
    # prr_delivered = 9000; pipe = 1000; limit = max(9000 - 11000, 1000) + 1000 = 2000.
    assert cc.cwnd == 1 * M + 2 * M
    # RFC 6937 §3: on exit, cwnd = ssthresh.
    rec.on_ack(T(10), mx, 10 * M, False, (), 10 * M, None, 1.3)
    assert not rec.in_recovery and cc.cwnd == 5 * M


def _rto_with_more_queued(conn: TcpConnection) -> None:
    """Four more segments wait behind the window; the RTO fires at t = 1.2 and S(0)
    goes again (F-RTO, RFC 5682 §2 step 1)."""
    conn.send(b"e" * MSS * 4)
    assert out(conn, 1.0) == []  # the initial window is full
    conn.on_timer(1.2)
    assert conn.counters["rto_expired"] == 1 and conn._recovery.frto == 1
    assert [s.seq for s in out(conn, 1.2)] == [S(0)]


def test_frto_finds_a_spurious_rto_and_undoes_it_rfc5682_2() -> None:
    """The ACKs were only late (no timestamps: Eifel cannot tell). The first ACK
    covers the retransmission: two new segments go instead of more retransmissions
    (step 2b); the next ACK acknowledges data never retransmitted: spurious (step 3b),
    and RFC 4015 undoes the timeout."""
    conn = _conn(timestamps=False, tlp=False)
    before = conn.congestion.cwnd
    _rto_with_more_queued(conn)
    conn.receive(_ack(S(2)), 1.25)  # the originals S(0), S(1)
    assert [s.seq for s in out(conn, 1.25)] == [S(10), S(11)]
    assert conn._recovery.frto == 2
    conn.receive(_ack(S(4)), 1.26)
    assert conn.counters["spurious_detected_frto"] == 1 and conn.counters["undo_rto"] == 1
    assert conn.congestion.cwnd >= before
    assert conn.snd_nxt == S(12)  # resumes with new data, not back N
    assert all(s.seq >= S(12) for s in out(conn, 1.26))
    assert conn.counters["retransmitted_segments"] == 1


def test_frto_returns_to_go_back_n_after_a_genuine_rto_rfc5682_2() -> None:
    """Everything after S(0) was lost too: the new segments draw duplicate ACKs (step
    3a): slow start from at most 3*SMSS, retransmitting from SND.UNA."""
    conn = _conn(timestamps=False, tlp=False)
    _rto_with_more_queued(conn)
    conn.receive(_ack(S(1)), 1.25)  # only the retransmission arrived
    assert [s.seq for s in out(conn, 1.25)] == [S(10), S(11)]
    conn.receive(_ack(S(1), (S(10), S(11))), 1.26)
    assert conn._recovery.frto == 0 and conn.counters["undo_rto"] == 0
    assert conn.congestion.cwnd <= 3 * MSS
    assert out(conn, 1.26)[0].seq == S(1)  # go-back-N resumes


def test_frto_without_new_data_is_conventional_recovery_rfc5682_2() -> None:
    conn = _conn(timestamps=False, tlp=False)
    conn.on_timer(1.2)
    assert [s.seq for s in out(conn, 1.2)] == [S(0)]
    conn.receive(_ack(S(1)), 1.25)
    assert conn._recovery.frto == 0
    assert [s.seq for s in out(conn, 1.25)] == [S(1), S(2)]  # slow start, back N


def test_frto_off_is_plain_go_back_n() -> None:
    conn = established(plain_config(sack=True, congestion_control="newreno", tlp=False,
                                    frto=False),
                       peer_options=TcpOptions(mss=MSS, sack_permitted=True))
    conn.send(b"d" * MSS * 14)
    out(conn, 1.0)
    conn.on_timer(1.2)
    out(conn, 1.2)
    assert conn._recovery.frto == 0
    conn.receive(_ack(S(2)), 1.25)
    assert [s.seq for s in out(conn, 1.25)] == [S(2), S(3)]


def test_recovery_point_follows_snd_una_across_the_sequence_space() -> None:
    """RFC 6582's RecoveryPoint, compared modulo 2^32, must not be left behind: 2^31
    bytes after the last recovery (two seconds at 10 Gbit/s) a stale point would read
    as ahead of SND.UNA, and no fast recovery could start nor loss probe go."""
    rec, _cc, _counters = _rec()
    una = UNA
    for _ in range(6):  # 6 x 2^30 bytes: past 2^31 and round the whole space
        una = una + (1 << 30)
        rec.on_ack(una, una + 10 * M, 1 << 30, False, (), 10 * M, 0.001, 1.0)
        assert not una < rec.recover
        assert rec.tlp_allowed(una)


def test_recovery_point_comes_to_snd_una_when_c_gives_a_flow_back() -> None:
    """The C data plane runs a flow outside recovery and keeps no RecoveryPoint: the
    one Python held may be 2^31 bytes stale when the flow comes back."""
    rec, _cc, _counters = _rec()
    far = UNA + (1 << 31) + 5  # reads as below the old point
    assert far < rec.recover

    class Tcb:
        undo_open = 0
        undo_expired = 0
        snd_una = int(far)
        tx: tuple[object, ...] = ()
        tx_count = 0
        rack_xmit_ts = rack_min_rtt = -1.0
        rack_rtt = rack_timeout = 0.0
        sacked: tuple[object, ...] = ()
        sacked_count = dupacks = lt_bytes = reordering_seen = rack_mode = rack_end_seq = 0

    rec.load_hot(Tcb())
    assert not far < rec.recover and rec.tlp_allowed(far)
