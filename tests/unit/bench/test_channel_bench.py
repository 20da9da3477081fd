"""The channel microbenchmark runs and reports every transport against the unix socket."""

from __future__ import annotations

import shutil

import pytest

from joyride.bench import channel


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_measure_reports_every_transport() -> None:
    result = channel.measure(1, {"rr": 200, "bulk": 50})
    for workload in ("rr", "bulk"):
        rows = result["medians"][workload]
        assert set(rows) == set(channel.TRANSPORTS)
        assert rows["unix"]["wall_vs_unix"] == 1.0
        for row in rows.values():
            assert row["wall_us_per_op"] > 0 and row["cpu_us_per_op"] >= 0
    assert "64 KiB to the application" in channel.table(result)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_claims_report_both_ways_into_ring_mode_and_a_whole_connection() -> None:
    """The claims, the whole channel of a connection, and the kernel's loopback TCP
    connection (in a network namespace of the benchmark's own)."""
    result = channel.measure_claims(1, 200)
    assert set(result["medians"]) == set(channel.CLAIM_METHODS)
    for row in result["medians"].values():
        assert row["cpu_us_per_claim"] > 0
    table = channel.claims_table(result)
    assert "arena" in table and "the kernel's TCP connection" in table
