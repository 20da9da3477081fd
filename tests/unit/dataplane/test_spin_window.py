"""The spin's window (``dp_spin_window``; docs/dataplane.md, "Spinning"): sized by the
loop's idle periods below a cap, as KVM's halt polling sizes its poll. Properties over
any window, period and cap, and the sequences that matter: a ping-pong whose answers
take longer than the old fixed spin grows the window until it catches them; a client
that thinks longer than the cap stops the spin; a slept-through short period starts
it again."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from joyride.dataplane.plane import lib

US = 1e-6
CAP = 200e-6
START = 20e-6  # SPIN_GROW_START

seconds = st.floats(min_value=0.0, max_value=10e-3, allow_nan=False)


def run(periods: list[float], window: float = 0.0, cap: float = CAP) -> list[float]:
    """The window after each period, from ``window``."""
    out = []
    for period in periods:
        window = lib.dp_spin_window(window, period, cap)
        out.append(window)
    return out


@given(window=seconds, period=seconds, cap=seconds)
def test_window_stays_within_the_cap(window: float, period: float, cap: float) -> None:
    assert 0.0 <= lib.dp_spin_window(window, period, cap) <= cap


@given(window=seconds, period=seconds)
def test_each_period_keeps_grows_or_shrinks_the_window(window: float, period: float) -> None:
    window = min(window, CAP)
    after = lib.dp_spin_window(window, period, CAP)
    if period <= window:  # caught: a hit leaves the window as it is
        assert after == window
    elif period <= CAP:  # a longer spin would have caught it
        assert after == pytest.approx(min(CAP, max(START, 2 * window)))
        assert after > window
    else:  # longer than any spin may last
        assert after == pytest.approx(window / 2 if window / 2 >= START else 0.0)
        assert after < window or window == 0.0


def test_answers_slower_than_the_window_grow_it_until_caught() -> None:
    # nginx's answer to one connection: about 90 us on the 2026-12-07 machine.
    windows = run([90 * US] * 6)
    assert windows == pytest.approx([START, 40 * US, 80 * US, 160 * US, 160 * US, 160 * US])


def test_a_thinking_client_stops_the_spin_and_a_quick_one_restarts_it() -> None:
    windows = run([1e-3] * 5, window=CAP)
    assert windows == pytest.approx([100 * US, 50 * US, 25 * US, 0.0, 0.0])
    # Stopped, the loop sleeps; a period slept through that still ends within the cap
    # (its wake-up included) starts the spin again.
    assert run([150 * US], window=0.0) == pytest.approx([START])


def test_no_cap_no_spin() -> None:
    assert run([0.0, 10 * US, 1e-3], window=0.0, cap=0.0) == [0.0, 0.0, 0.0]
