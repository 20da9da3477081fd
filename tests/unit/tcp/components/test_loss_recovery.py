"""LossRecovery in isolation: duplicate ACK counting, entry and exit of fast
recovery (RFC 5681 §3.2, RFC 6582, RFC 6675 §5), limited transmit (RFC 3042) and the
RTO's effect (RFC 6298 §5, RFC 6675 §5.1)."""

from __future__ import annotations

from joyride.tcp.congestion import NewReno
from joyride.tcp.counters import Counters
from joyride.tcp.recovery import LossRecovery
from joyride.wire.seq import Seq

MSS = 1000
UNA = Seq(5000)
MAX = UNA + 10 * MSS


def _rec(sack: bool) -> tuple[LossRecovery, NewReno, Counters]:
    cc = NewReno(MSS)
    counters: Counters = Counters()
    rec = LossRecovery(cc, counters, mss=MSS, dupthresh=3, iss=Seq(4999))
    rec.configure(MSS, sack)
    return rec, cc, counters


def _dup(rec: LossRecovery, blocks: tuple[tuple[Seq, Seq], ...] = ()) -> tuple[Seq, int] | None:
    return rec.on_ack(UNA, MAX, 0, True, blocks, 10 * MSS, 0.05, 1.0)


def test_third_dupack_enters_newreno_recovery_rfc5681_3_2() -> None:
    rec, cc, counters = _rec(sack=False)
    assert _dup(rec) is None and _dup(rec) is None
    assert not rec.in_recovery and rec.limited_transmit_allowance() == 2 * MSS
    assert _dup(rec) is None  # NewReno resends the head via rexmit_head
    assert rec.in_recovery and rec.rexmit_head and rec.recover == MAX
    assert cc.ssthresh == 5 * MSS and cc.cwnd == 8 * MSS  # ssthresh + 3*SMSS
    assert counters["fast_retransmits"] == 1
    assert rec.limited_transmit_allowance() == 0


def test_limited_transmit_data_left_out_of_flight_size_rfc5681_3_2() -> None:
    rec, cc, _ = _rec(sack=False)
    _dup(rec)
    rec.new_data_sent(MSS)
    _dup(rec)
    rec.new_data_sent(MSS)
    rec.on_ack(UNA, MAX + 2 * MSS, 0, True, (), 12 * MSS, 0.05, 1.0)
    assert cc.ssthresh == 5 * MSS  # FlightSize 10 segments, not 12


def test_sack_entry_returns_the_first_hole_and_sets_rescue_rxt_rfc6675_5() -> None:
    rec, _, _ = _rec(sack=True)
    blocks = ((UNA + MSS, UNA + 5 * MSS),)  # 4 segments SACKed above the first
    rexmit = _dup(rec, blocks)
    assert rec.in_recovery  # IsLost(SND.UNA) already: no need for three dupacks
    assert rexmit == (UNA, MSS)
    assert rec.high_rxt == UNA + MSS and rec.rescue_rxt == UNA + MSS - 1
    assert rec.sacked_bytes == 4 * MSS


def test_full_ack_leaves_recovery_and_partial_ack_resends_rfc6582_3_2() -> None:
    rec, cc, counters = _rec(sack=False)
    for _ in range(3):
        _dup(rec)
    rec.rexmit_head = False
    rec.on_ack(UNA + 2 * MSS, MAX, 2 * MSS, False, (), 10 * MSS, 0.05, 1.1)
    assert rec.in_recovery and rec.rexmit_head  # partial ACK: next hole
    rec.on_ack(MAX, MAX, 8 * MSS, False, (), 8 * MSS, 0.05, 1.2)
    assert not rec.in_recovery and counters["recovery_exits"] == 1
    assert cc.cwnd <= cc.ssthresh


def test_rto_discards_sack_state_and_blocks_a_new_recovery_rfc6675_5_1() -> None:
    rec, cc, _ = _rec(sack=True)
    _dup(rec, ((UNA + MSS, UNA + 5 * MSS),))
    rec.on_rto(MAX, 10 * MSS, 2.0)
    assert not rec.in_recovery and rec.sacked_bytes == 0 and rec.dupacks == 0
    assert cc.cwnd == MSS
    # Dupacks for data sent before the RTO do not start another recovery (RFC 6582).
    for _ in range(4):
        _dup(rec)
    assert not rec.in_recovery
