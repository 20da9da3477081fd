"""Medians, percentiles and ratios of repeated samples."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from joyride.bench import stats


def test_median_skips_failed_runs() -> None:
    assert stats.median([3.0, None, 1.0, float("nan"), 2.0]) == 2.0
    assert stats.median([None, float("inf")]) is None
    assert stats.median([]) is None


def test_ratio_is_joyride_over_kernel() -> None:
    assert stats.ratio(5.0, 10.0) == 0.5
    assert stats.ratio(None, 10.0) is None
    assert stats.ratio(5.0, None) is None
    assert stats.ratio(5.0, 0.0) is None  # no division by a zero baseline


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert stats.percentile(values, 0) == 1.0
    assert stats.percentile(values, 100) == 100.0
    assert stats.percentile(values, 50) == pytest.approx(50.5)
    assert stats.percentile(values, 99) == pytest.approx(99.01)
    with pytest.raises(ValueError):
        stats.percentile([], 50)
    with pytest.raises(ValueError):
        stats.percentile(values, 101)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=50),
       st.floats(0, 100))
def test_percentile_bounded_and_monotonic(values: list[float], q: float) -> None:
    p = stats.percentile(values, q)
    assert min(values) <= p <= max(values)
    assert stats.percentile(values, min(100.0, q + 1)) >= p - 1e-9


def test_spread() -> None:
    assert stats.spread([9.0, 10.0, 11.0]) == pytest.approx(0.2)
    assert stats.spread([None]) is None
    assert stats.spread([0.0, 0.0]) is None
    assert math.isclose(stats.spread([4.0]) or 0.0, 0.0)
