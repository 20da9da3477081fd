"""The daemons benchmark's summary: medians per stack, the ratio of the medians, and
the spread of the ratios of each repetition's kernel/Joyride pair."""

from __future__ import annotations

import pytest

from joyride.bench import daemons
from joyride.bench.daemons import Sample, side_by_side, summarize


def samples(kernel: list[float], joyride: list[float]) -> list[Sample]:
    """Repetitions in ``run``'s order (the pair's order alternates)."""
    out = []
    for i, (k, j) in enumerate(zip(kernel, joyride, strict=True)):
        pair = [Sample("redis_get", "kernel", "c", {"rps": k}),
                Sample("redis_get", "joyride", "c", {"rps": j})]
        out += pair if i % 2 == 0 else pair[::-1]
    return out


def test_the_ratio_is_of_the_medians_and_the_spread_of_the_pairs() -> None:
    row, = summarize(samples([100.0, 120.0, 80.0], [90.0, 132.0, 96.0]))
    assert row["kernel_rps"] == 100.0 and row["joyride_rps"] == 96.0
    assert row["ratio_rps"] == pytest.approx(0.96)
    # Pairs: 0.9, 1.1, 1.2 (the medians' ratio need not be any pair's).
    assert row["ratio_rps_lo"] == pytest.approx(0.9)
    assert row["ratio_rps_hi"] == pytest.approx(1.2)
    table = side_by_side([row])
    assert "0.96× (0.90–1.20)" in table


def test_one_repetition_has_no_spread_and_a_failed_run_no_pair() -> None:
    row, = summarize(samples([100.0], [90.0]))
    assert row["ratio_rps"] == pytest.approx(0.9) and "ratio_rps_lo" not in row
    assert "| 0.90× |" in side_by_side([row])
    runs = samples([100.0, 200.0, 100.0], [50.0, 80.0, 70.0])
    runs[2].error = "server died"  # the second repetition's Joyride run (joyride first)
    row, = summarize(runs)
    # The pairs left are the first and third repetitions', not the second's kernel run
    # against the third's Joyride run.
    assert row["ratio_rps_lo"] == pytest.approx(0.5)
    assert row["ratio_rps_hi"] == pytest.approx(0.7)


def test_requests_made_is_the_count_redis_benchmark_was_asked_for() -> None:
    """redis-benchmark makes exactly -n requests; its rate times the run's wall time
    would count its start (and joyride run's) as requests too."""
    argv = ["ip", "netns", "exec", "ns", "joyride", "run", "-n", "7", "--",
            *daemons.redis_client("get")("198.18.0.2", 6379, 3.0)]
    assert daemons.requests_made({"rps": 100.0}, argv, 5.0) == 420_000
    assert daemons.requests_made({"rps": 100.0, "requests": 12.0}, argv, 5.0) == 12.0
    wrk = ["wrk", "-t1", "-c100", "-d3s", "http://198.18.0.2/"]
    assert daemons.requests_made({"rps": 100.0}, wrk, 3.0) == 300.0


def test_every_workload_has_a_steered_port_of_its_own() -> None:
    joy = [daemons.port_of(d, "joyride") for d in daemons.DAEMONS]
    kernel = [daemons.port_of(d, "kernel") for d in daemons.DAEMONS]
    assert len(set(joy)) == len(joy) and len(set(kernel)) == len(kernel)
    assert all(daemons.JOY_PORT <= p < daemons.JOY_PORT + daemons.STEERED for p in joy)
    assert not set(joy) & set(kernel)
