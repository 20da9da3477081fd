"""The replay microbenchmark runs, checks its bytes, and writes its JSON (its numbers
are measurements, reported, never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from joyride.dataplane.plane import lib

pytestmark = pytest.mark.skipif(lib is None, reason="the C data plane is not built")


def test_replay_writes_every_workload(tmp_path: Path) -> None:
    from joyride.bench import replay

    out = tmp_path / "replay.json"
    assert replay.main(["--megabytes", "1", "--requests", "50", "--repeat", "1",
                        "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"receive", "send", "request_response"}
    for name, r in results.items():
        run = r["runs"][0]
        assert r["median"] > 0 and run["rounds"] > 0, name
    assert results["receive"]["runs"][0]["segments"] >= (1 << 20) // 1460
    assert results["request_response"]["runs"][0]["requests"] == 50
