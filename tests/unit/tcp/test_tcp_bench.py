"""The core benchmark runs, checks its own content, and keeps to the fast path."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from joyride.tcp import fastpath

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "bench_tcp_core.py"

pytestmark = pytest.mark.skipif(not fastpath.available(), reason=fastpath.BUILD_HINT)


def test_bench_run_delivers_the_stream_on_the_fast_path() -> None:
    spec = importlib.util.spec_from_file_location("bench_tcp_core", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.run(0.3, 64, True)
    assert res["content_ok"] is True
    assert res["fast_path_share"] > 0.99
    assert res["segments_per_s"] > 10_000  # sanity floor, not a performance claim


def test_bench_prints_json_last_line() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--seconds", "0.2"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["bench"] == "tcp_core" and last["segments_per_s"] > 0
