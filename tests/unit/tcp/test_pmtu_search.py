"""The MSS search after a cut (RFC 4821 §7, ``joyride.tcp.pmtu``) on its own: against
any path limit it ends within SEARCH_DONE below the limit, never above it, and starts
again after REPROBE_INTERVAL from where it ended."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from joyride.tcp.pmtu import REPROBE_INTERVAL, SEARCH_DONE, PmtuSearch
from joyride.wire.seq import Seq


def run_search(search: PmtuSearch, limit: int, now: float) -> tuple[int, float]:
    """Probe until the search rests; each probe passes iff it is at most ``limit``.
    (the MSS found, the time of the last probe's outcome)."""
    seq = Seq(1000)
    last = now
    for _ in range(64):
        size = search.size_due(now)
        if size is None:
            return search.low, last
        assert search.low < size <= max(search.high, search.ceiling)
        search.sent(seq, size)
        if size <= limit:
            assert search.acked(seq + size, now) == size
        else:
            assert search.resent(seq, seq + 100, now)
        last = now
        seq = seq + size
        now += 0.1
    raise AssertionError("the search did not end")


@given(cut=st.integers(536, 1400), extra=st.integers(0, 1000), limit_at=st.floats(0, 1))
def test_the_search_ends_just_under_the_paths_limit(cut: int, extra: int,
                                                     limit_at: float) -> None:
    ceiling = cut + extra
    limit = cut + int(extra * limit_at)  # the path carries [cut, limit]
    search = PmtuSearch.after_cut(cut, ceiling + 1, ceiling, 0.0, at_once=True)
    found, rested = run_search(search, limit, 0.0)
    assert limit - SEARCH_DONE < found <= limit or found == cut == limit
    assert search.due == rested + REPROBE_INTERVAL or search.restored


def test_a_reported_mtu_waits_then_a_wider_path_is_found_again() -> None:
    """After a router's report the search waits REPROBE_INTERVAL; then it probes up to
    the handshake's MSS, and a path that widened meanwhile gives it back whole."""
    search = PmtuSearch.after_cut(1148, 1448, 1448, 10.0, at_once=False)
    assert search.size_due(10.0) is None and search.size_due(609.0) is None
    found, _ = run_search(search, 1448, 10.0 + REPROBE_INTERVAL)
    assert found > 1448 - SEARCH_DONE
    assert not search.searching


def test_a_finished_search_tries_again_after_the_interval() -> None:
    search = PmtuSearch.after_cut(1012, 1448, 1448, 0.0, at_once=True)
    found, rested = run_search(search, 1148, 0.0)
    assert 1148 - SEARCH_DONE < found <= 1148
    assert search.size_due(rested + 1.0) is None  # resting
    size = search.size_due(rested + REPROBE_INTERVAL)
    assert size is not None and found < size <= 1448  # up to the handshake's again


def test_what_a_search_after_a_guess_found_is_told_once() -> None:
    """After a black-hole guess the search's result is news for the destination's other
    connections (``found``, once); after a router's report it is not (the report was)."""
    guessed = PmtuSearch.after_cut(1012, 1448, 1448, 0.0, at_once=True)
    assert guessed.found == 1012  # the guess is news at once
    guessed.found = None  # told
    found, _ = run_search(guessed, 1148, 0.0)
    assert guessed.found == found > 1012  # and what the search found, later
    reported = PmtuSearch.after_cut(1148, 1448, 1448, 0.0, at_once=False)
    run_search(reported, 1448, REPROBE_INTERVAL)
    assert reported.found is None
