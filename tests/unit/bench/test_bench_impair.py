"""The impairment benchmark's bookkeeping (no test bed: the run itself is
``python -m joyride.bench.impair``, tried by hand and in results/impair.md)."""

from __future__ import annotations

from typing import Any

import pytest

from joyride.bench import impair


def test_profiles_are_those_of_the_issue_and_valid() -> None:
    assert set(impair.PROFILES) == {"clean", "loss1", "loss3", "reorder10", "reorder30",
                                    "loss1_delay20", "mixed"}
    to_joy, to_peer = impair.PROFILES["mixed"]
    assert (to_joy.loss, to_joy.reorder, to_joy.duplicate, to_joy.corrupt, to_joy.delay) == (
        0.03, 0.10, 0.01, 0.005, 0.005)
    assert to_peer.duplicate == 0  # the bed duplicates towards Joyride only


def test_median_needs_every_sample() -> None:
    assert impair._median([{"seconds": 3.0}, {"seconds": 1.0}, {"seconds": 2.0}]) == 2.0
    assert impair._median([{"seconds": 1.0}, {"error": "timeout"}, {"seconds": 2.0}]) is None


def test_table_shows_ratio_per_profile_and_direction() -> None:
    row = {"kernel_s": 2.0, "joyride_s": 3.0, "ratio": 1.5, "samples": {}}
    doc = {"when": "now", "machine": {"cpus": 2, "kernel": "k"}, "mb": 10, "reps": 3,
           "seconds": 1.0, "profiles": {
               "mixed": {"modes": {"service": {"download": row, "upload": dict(
                   row, joyride_s=None, ratio=None)}}},
               "loss1": {"error": "ServerError: no"}}}
    text = impair.table(doc)
    assert "| mixed | service | download | 2.00 | 3.00 | 1.50 |" in text
    assert "| mixed | service | upload | 2.00 | error | error |" in text
    assert "| loss1 | | | error: ServerError: no | | |" in text


def test_one_direction_only_shows_its_rows_and_bad_directions_are_refused() -> None:
    row = {"kernel_s": 2.0, "joyride_s": 2.2, "ratio": 1.1, "samples": {}}
    doc = {"when": "now", "machine": {"cpus": 2, "kernel": "k"}, "mb": 10, "reps": 3,
           "seconds": 1.0, "profiles": {"loss1_delay20": {"modes": {"service": {
               "download": row}}}}}
    text = impair.table(doc)
    assert "| loss1_delay20 | service | download | 2.00 | 2.20 | 1.10 |" in text
    assert "upload" not in text.split("|---|")[-1]
    for bad in ("sideways", ""):
        with pytest.raises(SystemExit) as exc:
            impair.main(["--directions", bad, "--profiles", "clean"])
        assert exc.value.code == 2


def _sides(kernel: list[float], joyride: list[float]) -> dict[str, list[dict[str, float]]]:
    return {"kernel": [{"seconds": s} for s in kernel],
            "joyride": [{"seconds": s} for s in joyride]}


def test_short_rows_repeat_until_each_side_ran_min_seconds() -> None:
    need = impair.repetitions_needed
    assert need(_sides([], []), 3, 2.0, 15)  # nothing yet
    assert need(_sides([5.0, 5.0], [5.0, 5.0]), 3, 2.0, 15)  # fewer than --reps
    assert not need(_sides([5.0] * 3, [5.0] * 3), 3, 2.0, 15)  # long rows stop at --reps
    assert need(_sides([0.02] * 3, [5.0] * 3), 3, 2.0, 15)  # one side still short
    assert need(_sides([1.0] * 3, [0.6] * 3), 3, 2.0, 15)  # 1.8 s < 2
    assert not need(_sides([1.0] * 3, [0.6] * 3), 3, 2.0, 3)  # capped by --max-reps
    assert not need(_sides([0.02] * 15, [0.02] * 15), 3, 2.0, 15)
    # A pair in progress (one side ahead) is finished before the rule looks again.
    assert need(_sides([0.02] * 4, [0.02] * 3), 3, 2.0, 4)
    # A failed transfer has ended the row's median already: it does not ask for more.
    failed: dict[str, list[dict[str, Any]]] = {
        "kernel": [{"seconds": 0.02}] * 3, "joyride": [{"error": "timeout"}] * 3}
    assert need(failed, 3, 2.0, 15)  # the kernel's side is still short
    failed["kernel"] = [{"seconds": 1.0}] * 3
    assert not need(failed, 3, 2.0, 15)


def test_counted_transfer_reports_what_the_transfer_added(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's counters are totals: the transfer's share is after minus before.
    Every recovery counter is reported (zeros too); the data plane's only where they
    moved; keys of neither kind not at all."""
    before = {"datapath": {
        "tcp_total": {"fast_retransmits": 4, "rto_expired": 1, "bytes_in": 10},
        "dataplane": {"rx_fast": 100, "rx_ooo": 5, "handback_recovery": 1, "rounds": 7,
                      "tx_data_segs": 0}}}
    after = {"datapath": {
        "tcp_total": {"fast_retransmits": 9, "rto_expired": 1, "bytes_in": 99},
        "dataplane": {"rx_fast": 900, "rx_ooo": 5, "handback_recovery": 3, "rounds": 90,
                      "tx_data_segs": 12}}}
    docs = iter([before, after])
    monkeypatch.setattr(impair.servers, "service_stats", lambda bed: next(docs))
    monkeypatch.setattr(impair, "_sample", lambda *a: {"seconds": 0.01})
    got = impair.counted_transfer(object(), 1, "download", 10, 5.0, "cubic")  # type: ignore[arg-type]
    assert got == dict.fromkeys(impair.COUNTERS, 0) | {
        "fast_retransmits": 5, "plane_rx_fast": 800, "plane_handback_recovery": 2,
        "plane_tx_data_segs": 12}


def test_service_counters_without_an_answer_are_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(impair.servers, "service_stats", lambda bed: {})
    assert impair.service_counters(object()) == {}  # type: ignore[arg-type]
