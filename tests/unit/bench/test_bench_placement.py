"""The placement tool's bookkeeping: which tasks share a CPU, per window, and its rate."""

from __future__ import annotations

import io

from joyride.bench import placement


def test_placement_groups_the_tasks_that_share_a_cpu() -> None:
    tasks = placement.TASKS
    assert placement.placement_of({"service": 1, "server": 1, "client": 0}, tasks) == \
        "client | service+server"
    assert placement.placement_of({"service": 0, "server": 1, "client": 1}, tasks) == \
        "server+client | service"
    assert placement.placement_of({"service": 0, "server": 0, "client": 0}, tasks) == \
        "service+server+client"
    assert placement.placement_of({"service": 0, "server": 1}, tasks) == "?"


def test_a_window_has_a_placement_only_when_most_samples_agree() -> None:
    w = placement.Window(0.0)
    w.seen.update({"a | b": 7, "a+b": 3})
    assert w.placement() == "a | b"
    w.seen["a+b"] += 3  # 7 of 13: under SETTLED
    assert w.placement() == "moving"
    assert placement.Window(0.0).placement() == "?"


def test_rates_go_to_the_window_they_end_in_and_windows_without_one_are_dropped() -> None:
    samples = [(0.1, "x"), (0.3, "x"), (0.6, "y"), (0.9, "y"), (1.2, "x")]
    rates = [(0.45, 100.0), (0.95, 200.0), (0.99, 300.0)]
    windows = placement.windows_of(samples, rates, 0.5)
    assert [(w.start, w.rate, w.placement()) for w in windows] == \
        [(0.0, 100.0, "x"), (0.5, 250.0, "y")]
    rows = placement.summary(windows)
    assert {r["placement"]: r["median_rate"] for r in rows} == {"x": 100.0, "y": 250.0}
    assert sum(r["share"] for r in rows) == 1.0


def test_progress_lines_are_read_and_stamped_as_they_end() -> None:
    text = (b"GET: rps=140000.0 (overall: 140000.0) avg_msec=0.2 (overall: 0.2)\r"
            b"GET: rps=90000.5 (overall: 115000.0) avg_msec=0.3 (overall: 0.25)\r"
            b"GET: 115000.00 requests per second, p50=0.2 msec\n")
    assert placement.progress_rates(text.decode()) == [140000.0, 90000.5]
    out: list[tuple[float, float]] = []
    placement.stamped_progress(io.BufferedReader(io.BytesIO(text)), 0.0, out)
    assert [rate for _, rate in out] == [140000.0, 90000.5]
