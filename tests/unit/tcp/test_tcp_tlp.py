"""Tail loss probes (RFC 8985 §7) as the connection drives them, stepped at explicit
times: scheduling (§7.2), the probe (§7.3) and what the ACKs after it say (§7.4).

The handshake takes 20 ms (SRTT 20 ms, RTO 200 ms: the floor); ten full segments go
at t = 1.0 from ISS+1 (the initial window), ``S(k)`` is segment k's first octet. SACK
on, timestamps off, CUBIC.
"""

from __future__ import annotations

import pytest
from tcp_helpers import ACK, IRS, ISS, SYN, one, out, plain_config, seg, syn_sent

from joyride.tcp.connection import TcpConnection
from joyride.tcp.recovery import TLP_MAX_ACK_DELAY, TLP_MIN_EXTRA
from joyride.tcp.timers import Timer
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpOptions, TcpSegment

MSS = 1460
BASE = ISS + 1
SRTT = 0.02


def S(k: int) -> Seq:
    return BASE + k * MSS


def _ack(ack: Seq, *blocks: tuple[int, int]) -> TcpSegment:
    sack = tuple((S(a), S(b)) for a, b in blocks)
    return seg(IRS + 1, ack, ACK, options=TcpOptions(sack_blocks=sack))


def _conn(segments: int = 10, *, sack: bool = True, tlp: bool = True) -> TcpConnection:
    conn = syn_sent(plain_config(sack=sack, congestion_control="cubic", tlp=tlp), 0.0)
    conn.receive(seg(IRS, ISS + 1, SYN | ACK,
                     options=TcpOptions(mss=MSS, sack_permitted=sack)), SRTT)
    one(conn, SRTT)
    assert conn.rtt.srtt == pytest.approx(SRTT)
    conn.send(b"d" * MSS * segments)
    assert [s.seq for s in out(conn, 1.0)] == [S(k) for k in range(min(segments, 10))]
    return conn


def _pto(conn: TcpConnection) -> float | None:
    return conn._timers.deadline(Timer.PTO)


def test_pto_is_two_srtt_after_new_data_rfc8985_7_2() -> None:
    conn = _conn()
    # More than one segment in flight: 2*SRTT (+ Linux's 2 ms).
    assert _pto(conn) == pytest.approx(1.0 + 2 * SRTT + TLP_MIN_EXTRA)
    assert conn._timers.deadline(Timer.RETRANSMIT) == pytest.approx(1.2)
    assert conn.hot_ready()  # the C data plane keeps the deadline (docs/dataplane.md)


def test_an_ack_of_new_data_restarts_the_pto_rfc8985_7_2() -> None:
    conn = _conn()
    conn.receive(_ack(S(5)), 1.02)
    assert _pto(conn) == pytest.approx(1.02 + 2 * conn.rtt.srtt + TLP_MIN_EXTRA)


def test_one_segment_in_flight_waits_for_a_delayed_ack_but_not_past_the_rto_rfc8985_7_2(
) -> None:
    conn = _conn()
    conn.receive(_ack(S(9)), 1.02)  # one segment left in flight
    rto_at = conn._timers.deadline(Timer.RETRANSMIT)
    assert rto_at == pytest.approx(1.22)
    # 2*SRTT + TLP.max_ack_delay = 1.26 lies past the RTO's expiry: the RTO's time.
    assert 1.02 + 2 * conn.rtt.srtt + TLP_MAX_ACK_DELAY > rto_at
    assert _pto(conn) == pytest.approx(rto_at)


def test_the_probe_resends_the_last_segment_and_rearms_the_rto_rfc8985_7_3() -> None:
    conn = _conn()
    at = _pto(conn)
    assert at is not None
    conn.on_timer(at)
    probe = out(conn, at)
    assert [(s.seq, len(s.payload)) for s in probe] == [(S(9), MSS)]
    assert conn.counters["tlp_probes_retransmitted"] == 1
    assert conn.counters["rto_expired"] == 0
    # §7.3: the RTO is re-armed (from the probe), the PTO is not: one probe a flight.
    assert conn._timers.deadline(Timer.RETRANSMIT) == pytest.approx(at + 0.2)
    assert _pto(conn) is None
    assert conn._recovery.tlp_end_seq == S(10)
    assert not conn.hot_ready()  # the probe's outcome is Python's to judge (§7.4)
    conn.receive(_ack(S(3)), at + 0.001)  # part of the flight: no second probe
    assert _pto(conn) is None


def test_the_probe_sends_new_data_when_the_window_admits_it_rfc8985_7_3() -> None:
    conn = _conn(segments=12)  # cwnd holds back two segments
    at = _pto(conn)
    assert at is not None
    conn.on_timer(at)
    assert [s.seq for s in out(conn, at)] == [S(10)]
    assert conn.counters["tlp_probes_new_data"] == 1
    assert conn._recovery.tlp_end_seq == S(11) and not conn._recovery.tlp_is_retrans
    conn.receive(_ack(S(11)), at + SRTT)  # the probe of new data delivered
    assert conn._recovery.tlp_end_seq is None


def test_dsack_of_the_probe_means_no_loss_rfc8985_7_4() -> None:
    conn = _conn()
    at = _pto(conn)
    assert at is not None
    conn.on_timer(at)
    out(conn, at)
    cwnd = conn.congestion.cwnd
    conn.receive(_ack(S(10)), at + 0.001)  # the originals' ACK was only late
    assert conn._recovery.tlp_end_seq == S(10)  # no verdict yet
    conn.receive(_ack(S(10), (9, 10)), at + 0.002)  # then the probe's D-SACK
    assert conn._recovery.tlp_end_seq is None
    assert conn.counters["tlp_no_loss"] == 1 and conn.counters["tlp_loss_repaired"] == 0
    assert conn.congestion.cwnd >= cwnd


def test_a_loss_the_probe_repaired_reduces_cwnd_once_rfc8985_7_4() -> None:
    conn = _conn()
    conn.receive(_ack(S(9)), 1.02)  # S(9) is lost
    at = _pto(conn)
    assert at is not None
    conn.on_timer(at)
    assert [s.seq for s in out(conn, at)] == [S(9)]
    conn.receive(_ack(S(10)), at + SRTT)  # the probe's ACK, no D-SACK: no verdict yet
    cwnd = conn.congestion.cwnd
    conn.send(b"e" * MSS)
    assert [s.seq for s in out(conn, at + SRTT)] == [S(10)]
    conn.receive(_ack(S(11)), at + 2 * SRTT)  # beyond the probe: it repaired a loss
    assert conn.counters["tlp_loss_repaired"] == 1
    assert conn.congestion.cwnd < cwnd  # CUBIC's beta (as Linux's CWR)
    assert not conn.in_recovery and conn._recovery.tlp_end_seq is None


def test_rack_finds_the_losses_the_probes_sack_reveals_rfc8985_7_4_1() -> None:
    """The whole tail is lost: the probe (S(9) again) is SACKed, and RACK - in charge
    after a probe, reordering seen or not - declares the rest lost once min_RTT/4
    passed (§6.2 step 4), by its reordering timer; no RTO. (RACK.rtt, and with it
    RACK.min_RTT, is timed from the original's send: t - 1.0.)"""
    conn = _conn()
    at = _pto(conn)
    assert at is not None
    conn.on_timer(at)
    out(conn, at)
    t = at + SRTT
    conn.receive(_ack(S(0), (9, 10)), t)
    assert not conn.in_recovery
    reorder = conn._timers.deadline(Timer.REORDER)
    assert reorder == pytest.approx(t + (t - 1.0) / 4)
    conn.on_timer(reorder)
    assert conn.in_recovery and conn.counters["fast_retransmits"] == 1
    assert out(conn, reorder)[0].seq == S(0)
    assert conn.counters["rto_expired"] == 0


def test_pto_and_rto_due_together_the_probe_goes_rfc8985_7_2() -> None:
    conn = _conn()
    conn.receive(_ack(S(9)), 1.02)
    at = _pto(conn)
    assert at == conn._timers.deadline(Timer.RETRANSMIT)
    conn.on_timer(at + 0.0001)
    assert conn.counters["tlp_probes_retransmitted"] == 1
    assert conn.counters["rto_expired"] == 0  # re-armed by the probe, not due
    assert conn._timers.deadline(Timer.RETRANSMIT) == pytest.approx(at + 0.0001 + 0.2)


def test_no_probe_without_sack_or_when_turned_off_rfc8985_2() -> None:
    assert _pto(_conn(sack=False)) is None
    assert _pto(_conn(tlp=False)) is None


def test_no_probe_while_sacked_data_or_recovery_rfc8985_7_2() -> None:
    conn = _conn()
    conn.receive(_ack(S(0), (1, 2)), 1.02)  # data delivered out of order
    assert _pto(conn) is None
    for k in (3, 4):
        conn.receive(_ack(S(0), (1, k)), 1.021)
    assert conn.in_recovery and _pto(conn) is None
    conn.receive(_ack(S(10)), 1.05)  # all acknowledged: nothing to probe for
    assert _pto(conn) is None


def test_an_rto_ends_the_probe_and_no_probe_in_rto_recovery_rfc8985_7_2() -> None:
    conn = _conn()
    at = _pto(conn)
    assert at is not None
    conn.on_timer(at)
    out(conn, at)
    rto = conn._timers.deadline(Timer.RETRANSMIT)
    assert rto is not None
    conn.on_timer(rto)
    assert conn.counters["rto_expired"] == 1
    assert conn._recovery.tlp_end_seq is None and _pto(conn) is None
    out(conn, rto)
    conn.receive(_ack(S(1)), rto + SRTT)  # RTO recovery until S(10) is ACKed
    assert _pto(conn) is None and not conn.hot_ready()
