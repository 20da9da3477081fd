"""Summaries of repeated measurements: medians, percentiles, Joyride/kernel ratios.

Benchmarks on a shared 2-vCPU machine are noisy (DESIGN.md, facts): a single run says
little, so every figure reported is the median of several alternating repetitions and
every comparison is a ratio of medians measured side by side.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence


def finite(values: Iterable[float | None]) -> list[float]:
    """The values that are real numbers (failed runs are recorded as None or NaN)."""
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def median(values: Iterable[float | None]) -> float | None:
    """Median of the finite values, None when there are none."""
    good = finite(values)
    return statistics.median(good) if good else None


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} outside 0..100")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def ratio(joyride: float | None, kernel: float | None) -> float | None:
    """Joyride/kernel; None when either side is missing or the kernel figure is zero."""
    if joyride is None or kernel is None or kernel == 0:
        return None
    return joyride / kernel


def spread(values: Iterable[float | None]) -> float | None:
    """Relative spread (max - min) / median: how much to trust a median."""
    good = finite(values)
    mid = median(good)
    if not good or not mid:
        return None
    return (max(good) - min(good)) / abs(mid)
