"""HyStart++ (RFC 9406) stepped ACK by ACK at explicit RTTs, alone and inside the
congestion controllers, and its hand-off to the C data plane's fields."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from joyride.tcp.congestion import INITIAL_SSTHRESH, Cubic, NewReno, _Base
from joyride.tcp.counters import CONGESTION_COUNTERS
from joyride.tcp.hystart import (
    ACK_TRAIN_EXITED,
    CSS_ABANDONED,
    CSS_ENTERED,
    CSS_GROWTH_DIVISOR,
    CSS_ROUNDS,
    N_RTT_SAMPLE,
    PHASE_CSS,
    PHASE_OFF,
    PHASE_SLOW_START,
    SLOW_START_EXITED,
    HyStart,
)
from joyride.wire.seq import Seq

MSS = 1000


class Sender:
    """Rounds of ACKs as a sender in slow start sees them: each round sends what the
    window allows past SND.NXT, and its ACKs (one per ``per_ack`` bytes) carry the
    given RTT samples."""

    def __init__(self, cc: _Base, una: int = 0xFFFF_F000) -> None:  # wraps mid-test
        self.cc = cc
        self.now = 0.0  # ACKs at one instant unless a round says otherwise
        self.una = Seq(una)
        self.nxt = Seq(una) + cc.cwnd
        self.events: list[str] = []

    def round(self, rtts: list[float | None], per_ack: int = 2 * MSS,
              spacing: float = 0.0) -> None:
        """One round trip: ACKs for the round's data, ``spacing`` seconds apart, ``rtts``
        giving each ACK's sample (the last one repeated when the round has more)."""
        end = self.nxt
        i = 0
        while self.una < end:
            acked = min(per_ack, end - self.una)
            self.una = self.una + acked
            rtt = rtts[min(i, len(rtts) - 1)]
            self.now += spacing
            event = self.cc.on_delivery(self.una, self.nxt, rtt, self.now)
            if event is not None:
                self.events.append(event)
            self.cc.on_ack(0.0, acked, 0.001, self.nxt - self.una + acked)
            self.nxt = self.una + self.cc.cwnd  # the window's new room goes out at once
            i += 1


def test_delay_rise_enters_css_and_quarters_the_growth_rfc9406_4_2() -> None:
    cc = NewReno(MSS)
    s = Sender(cc)
    s.round([0.010])  # the first round: no last round to compare with
    s.round([0.010])
    assert cc.hystart.phase == PHASE_SLOW_START
    # RttThresh = max(4 ms, min(10 ms / 8, 16 ms)) = 4 ms: a rise to 13.9 ms is not one.
    s.round([0.0139])
    assert cc.hystart.phase == PHASE_SLOW_START and s.events == []
    before = cc.cwnd
    s.round([0.020])  # the last round's minimum was 13.9 ms: 20 >= 17.9 -> CSS
    assert s.events == [CSS_ENTERED]
    assert cc.hystart.phase == PHASE_CSS and cc.hystart.css_baseline == 0.020
    # Slow start doubled cwnd until the eighth sample; from there a quarter per ACK.
    grown = cc.cwnd - before
    assert N_RTT_SAMPLE * 2 * MSS < grown < before
    cwnd = cc.cwnd
    cc.on_ack(0.0, 4 * MSS, 0.001, cwnd)
    assert cc.cwnd == cwnd + 4 * MSS // CSS_GROWTH_DIVISOR
    assert cc.ssthresh == INITIAL_SSTHRESH  # still slow start, conservatively


def test_no_decision_before_n_rtt_samples_in_the_round() -> None:
    h = HyStart()
    una = Seq(0)
    assert h.on_ack(una + 1, una + 100, 0.001, 0.0, False) is None  # round 1 begins
    for _ in range(N_RTT_SAMPLE - 1):
        h.on_ack(una + 2, una + 100, 0.001, 0.0, False)
    end = una + 100
    # Round 2 with a large rise, but one sample short of N_RTT_SAMPLE.
    for i in range(N_RTT_SAMPLE - 1):
        assert h.on_ack(end + i, end + 500, 0.050, 0.0, False) is None
    assert h.phase == PHASE_SLOW_START
    assert h.on_ack(end + 10, end + 500, 0.050, 0.0, False) == CSS_ENTERED


def test_samples_without_rtt_do_not_count() -> None:
    h = HyStart()
    h.on_ack(Seq(1), Seq(100), 0.001, 0.0, False)
    for i in range(N_RTT_SAMPLE):
        h.on_ack(Seq(2 + i), Seq(100), 0.001, 0.0, False)
    for i in range(3 * N_RTT_SAMPLE):
        assert h.on_ack(Seq(100 + i), Seq(500), None, 0.0, False) is None
    assert h.samples == 0 and h.phase == PHASE_SLOW_START


@pytest.mark.parametrize(("last", "threshold"), [
    (0.001, 0.004),  # 1/8 of 1 ms is below MIN_RTT_THRESH
    (0.064, 0.008),  # 64 ms / 8
    (0.400, 0.016),  # 50 ms capped at MAX_RTT_THRESH
])
def test_the_threshold_is_an_eighth_of_the_last_minimum_clamped(
        last: float, threshold: float) -> None:
    for rise, entered in ((threshold * 0.95, False), (threshold * 1.05, True)):
        h = HyStart()
        for i in range(N_RTT_SAMPLE):
            h.on_ack(Seq(1 + i), Seq(100), last, 0.0, False)
        events = [h.on_ack(Seq(100 + i), Seq(500), last + rise, 0.0, False)
                  for i in range(N_RTT_SAMPLE)]
        assert (CSS_ENTERED in events) is entered, (last, rise)


def test_css_abandoned_when_the_delay_falls_back_rfc9406_4_2() -> None:
    cc = Cubic(MSS)
    s = Sender(cc)
    # The sender's rounds and HyStart++'s do not line up (its first round began at the
    # first ACK), so each RTT lasts two of the sender's rounds here.
    for rtt in (0.001, 0.001, 0.001, 0.010, 0.010):
        s.round([rtt])
    assert s.events == [CSS_ENTERED]
    assert cc.hystart.css_baseline == 0.010
    s.round([0.012, 0.006])  # minimum below the baseline of 10 ms: jitter
    s.round([0.012, 0.006])
    assert s.events == [CSS_ENTERED, CSS_ABANDONED]
    assert cc.hystart.phase == PHASE_SLOW_START and math.isinf(cc.hystart.css_baseline)
    cwnd = cc.cwnd
    cc.on_ack(0.0, 4 * MSS, 0.001, cwnd)
    assert cc.cwnd == cwnd + 4 * MSS  # full slow start again
    # ... and it may enter CSS again on a later rise.
    s.round([0.030])
    assert s.events[-1] == CSS_ENTERED


@pytest.mark.parametrize("controller", [NewReno, Cubic])
def test_css_rounds_end_slow_start_with_ssthresh_at_cwnd_rfc9406_4_2(
        controller: type[_Base]) -> None:
    cc = controller(MSS)
    s = Sender(cc)
    for rtt in (0.001, 0.001, 0.001, 0.008, 0.008):
        s.round([rtt])
    assert s.events == [CSS_ENTERED]
    rounds = 0
    while cc.ssthresh == INITIAL_SSTHRESH:
        s.round([0.008])
        rounds += 1
    assert rounds in (CSS_ROUNDS - 1, CSS_ROUNDS)  # the sender's rounds vs HyStart's
    assert s.events == [CSS_ENTERED, SLOW_START_EXITED]
    assert cc.hystart.css_rounds == 0  # reset
    assert cc.ssthresh < INITIAL_SSTHRESH and not cc.in_slow_start
    # Congestion avoidance now; HyStart++ has no more say (RFC 9406 §4.3).
    s.round([0.050])
    assert s.events == [CSS_ENTERED, SLOW_START_EXITED]
    if isinstance(cc, Cubic):
        # RFC 9438 §4.10: slow start left without a loss: W_max = cwnd at the start
        # of the stage, K = 0.
        assert cc.k == 0.0 and cc.w_max > 0


def test_only_the_initial_slow_start_rfc9406_4_3() -> None:
    cc = Cubic(MSS)
    s = Sender(cc)
    s.round([0.001])
    cc.on_congestion(1.0, cc.cwnd)
    cc.on_recovery_exit(1.1)
    assert cc.hystart.phase == PHASE_SLOW_START and cc.hystart.window_end is None
    for rtt in (0.001, 0.050, 0.100):
        s.round([rtt])
    assert s.events == []
    # An undo that gives back the initial ssthresh is the initial slow start again;
    # its rounds start from nothing.
    cc.ssthresh = INITIAL_SSTHRESH
    for rtt in (0.001, 0.001, 0.020, 0.020):
        s.round([rtt])
    assert s.events == [CSS_ENTERED]


def test_an_rto_and_an_idle_restart_start_over() -> None:
    for end in ("rto", "idle"):
        cc = NewReno(MSS)
        s = Sender(cc)
        for rtt in (0.001, 0.001, 0.001, 0.010, 0.010):
            s.round([rtt])
        assert cc.hystart.phase == PHASE_CSS
        if end == "rto":
            cc.on_rto(2.0, cc.cwnd)
        else:
            cc.on_idle(2.0, 0.2)
            assert cc.ssthresh == INITIAL_SSTHRESH  # the idle restart keeps it
        assert cc.hystart.phase == PHASE_SLOW_START and math.isinf(cc.hystart.last_round_min)


def test_off_when_configured_so() -> None:
    cc = NewReno(MSS, hystart=False)
    s = Sender(cc)
    for rtt in (0.001, 0.001, 0.050, 0.200):
        s.round([rtt])
    assert s.events == [] and cc.hystart.phase == PHASE_OFF
    cc.on_rto(1.0, cc.cwnd)
    assert cc.hystart.phase == PHASE_OFF


def test_save_and_load_round_trip() -> None:
    h = HyStart()
    for i in range(N_RTT_SAMPLE):  # window_end past the wrap
        h.on_ack(Seq(0xFFFF_FFF0 + i), Seq(0x10), 0.002, 0.5 + i / 1000, True)
    h.on_ack(Seq(0x10), Seq(0x400), 0.009, 0.6, True)
    tcb = SimpleNamespace()
    h.save_hot(tcb)
    back = HyStart(enabled=False)
    back.load_hot(tcb)
    assert back.window_end == Seq(0x400)
    fields = ("phase", "window_end", "last_round_min", "current_round_min", "samples",
              "css_baseline", "css_rounds", "round_start", "last_ack_at", "delay_min")
    assert [getattr(back, k) for k in fields] == [getattr(h, k) for k in fields]
    fresh, tcb2 = HyStart(), SimpleNamespace()
    fresh.save_hot(tcb2)
    again = HyStart()
    again.window_end = Seq(5)
    again.load_hot(tcb2)
    assert again.window_end is None and math.isinf(again.current_round_min)


def test_its_counters_are_listed() -> None:
    assert {CSS_ENTERED, CSS_ABANDONED, SLOW_START_EXITED,
            ACK_TRAIN_EXITED} == CONGESTION_COUNTERS


@pytest.mark.parametrize("controller", [NewReno, Cubic])
def test_an_ack_train_past_half_the_min_rtt_ends_slow_start(controller: type[_Base]) -> None:
    """Linux's HyStart ACK train: once cwnd is 16 segments, ACKs back to back (at most
    2 ms apart) for longer than half the smallest RTT end slow start at once."""
    cc = controller(MSS)
    s = Sender(cc)
    # 1 ms RTT; ACKs 0.1 ms apart: a round of 5 ACKs spans 0.4 ms (< 0.5 ms), the
    # next of 10 spans 0.9 ms but cwnd is below 16 segments until its sixth ACK.
    s.round([0.001], spacing=0.0001)
    assert s.events == [] and cc.in_slow_start
    s.round([0.001], spacing=0.0001)
    assert s.events == [ACK_TRAIN_EXITED]
    assert not cc.in_slow_start
    # ssthresh = cwnd on the first ACK more than 0.5 ms into HyStart's round (which
    # began at the first ACK): cwnd doubled from 10 segments on ACKs of 2 by then.
    assert cc.ssthresh == 28 * MSS and cc.cwnd < 30 * MSS


def test_no_ack_train_below_16_segments_or_with_gaps() -> None:
    cc = NewReno(MSS, initial_window=4 * MSS)
    s = Sender(cc)
    s.round([0.001], spacing=0.0004)  # 2 ACKs, cwnd 8 segments: too small
    s.round([0.001], spacing=0.0004)  # cwnd to 16 segments
    assert s.events == []
    s.round([0.001], spacing=0.003)  # ACKs 3 ms apart: no train
    s.round([0.001], spacing=0.003)
    assert s.events == [] and cc.in_slow_start
    s.round([0.001], spacing=0.0004)
    assert s.events == [ACK_TRAIN_EXITED]
