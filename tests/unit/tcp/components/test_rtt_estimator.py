"""RttEstimator against RFC 6298, one rule per test."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from joyride.tcp.rtt import RttEstimator


def test_initial_rto_before_any_sample() -> None:
    # RFC 6298 §2.1: RTO is 1 s until a measurement is made.
    est = RttEstimator()
    assert est.srtt is None and est.rttvar is None
    assert est.rto == 1.0


def test_first_sample_sets_srtt_and_half_rttvar() -> None:
    # RFC 6298 §2.2: SRTT <- R, RTTVAR <- R/2, RTO <- SRTT + max(G, 4*RTTVAR).
    est = RttEstimator(min_rto=0.01)
    est.sample(0.1)
    assert est.srtt == pytest.approx(0.1)
    assert est.rttvar == pytest.approx(0.05)
    assert est.rto == pytest.approx(0.1 + 4 * 0.05)


def test_subsequent_sample_uses_old_srtt_for_rttvar() -> None:
    # RFC 6298 §2.3: RTTVAR <- 3/4 RTTVAR + 1/4 |SRTT - R'| (old SRTT), then SRTT.
    est = RttEstimator(min_rto=0.01)
    est.sample(0.1)
    est.sample(0.2)
    rttvar = 0.75 * 0.05 + 0.25 * abs(0.1 - 0.2)
    srtt = 0.875 * 0.1 + 0.125 * 0.2
    assert est.rttvar == pytest.approx(rttvar)
    assert est.srtt == pytest.approx(srtt)
    assert est.rto == pytest.approx(srtt + 4 * rttvar)


def test_granularity_floor_on_variance_term() -> None:
    # RFC 6298 §2.3: max(G, K*RTTVAR): with a steady RTT the variance decays towards 0
    # and the clock granularity G takes over.
    est = RttEstimator(min_rto=0.0001, granularity=0.01)
    for _ in range(200):
        est.sample(0.05)
    assert est.rttvar is not None and est.rttvar < 0.0025
    assert est.rto == pytest.approx(0.05 + 0.01, rel=1e-3)


def test_min_rto_clamp() -> None:
    # RFC 6298 §2.4 (floor; 200 ms default as Linux).
    est = RttEstimator(min_rto=0.2)
    est.sample(0.001)
    assert est.rto == 0.2


def test_max_rto_clamp() -> None:
    # RFC 6298 §2.5: a maximum may be placed on RTO (>= 60 s).
    est = RttEstimator(max_rto=60.0)
    est.sample(50.0)
    assert est.rto == 60.0


def test_backoff_doubles_and_caps() -> None:
    # RFC 6298 §5.5: RTO <- RTO * 2 on each expiry, bounded by the maximum.
    est = RttEstimator(initial_rto=1.0, max_rto=60.0)
    seen = []
    for _ in range(10):
        est.backoff()
        seen.append(est.rto)
    assert seen[:5] == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert seen[5:] == [60.0] * 5
    # Bounded state: further backoffs do not keep counting once the cap is reached.
    assert est.backoff_count == 6


def test_backoff_doubles_the_floored_rto() -> None:
    # §5.5 doubles the RTO in use; a sub-floor base must not make backoff invisible.
    est = RttEstimator(min_rto=0.2)
    est.sample(0.001)
    est.backoff()
    assert est.rto == pytest.approx(0.4)


def test_reset_backoff() -> None:
    est = RttEstimator()
    est.backoff()
    est.backoff()
    est.reset_backoff()
    assert est.rto == 1.0


def test_new_sample_collapses_backoff() -> None:
    # RFC 6298 §5 (after 5.7): a new measurement recomputes RTO per §2, which may
    # collapse RTO back down after backoff.
    est = RttEstimator(min_rto=0.01)
    est.sample(0.1)
    est.backoff()
    est.backoff()
    assert est.rto == pytest.approx(4 * 0.3)
    est.sample(0.1)
    assert est.backoff_count == 0
    assert est.rto < 0.3


def test_syn_timeout_raises_rto_to_three_seconds() -> None:
    # RFC 6298 §5.7: SYN retransmitted and no sample: RTO becomes 3 s for data.
    est = RttEstimator()
    est.syn_timed_out()
    assert est.rto == 3.0
    est2 = RttEstimator(min_rto=0.01)
    est2.sample(0.1)
    est2.syn_timed_out()  # a sample exists: keep it
    assert est2.rto == pytest.approx(0.3)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, -math.inf])
def test_hostile_samples_ignored(bad: float) -> None:
    est = RttEstimator(min_rto=0.01)
    est.sample(0.1)
    before = (est.srtt, est.rttvar, est.rto, est.samples)
    est.sample(bad)
    assert (est.srtt, est.rttvar, est.rto, est.samples) == before


def test_constructor_validates() -> None:
    with pytest.raises(ValueError):
        RttEstimator(min_rto=2.0, max_rto=1.0)
    with pytest.raises(ValueError):
        RttEstimator(initial_rto=0.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=100.0), min_size=1, max_size=50),
       st.integers(min_value=0, max_value=40))
def test_rto_always_within_bounds(samples: list[float], backoffs: int) -> None:
    est = RttEstimator(min_rto=0.2, max_rto=60.0)
    for s in samples:
        est.sample(s)
    assert 0.2 <= est.rto <= 60.0
    for _ in range(backoffs):
        prev = est.rto
        est.backoff()
        assert est.rto == min(prev * 2, 60.0) or est.rto == 60.0
        assert est.rto >= prev
