"""Reading scripts/bench_xsk.py's JSON line."""

from __future__ import annotations

import json

from joyride.bench import xskrate


def test_parse_batch_64() -> None:
    doc = {"mode": "native", "frame_len": 60,
           "rx": {"64": {"python_pps": 1.5e6, "c_pps": 3.25e6}},
           "tx": {"64": {"python_pps": 0.9e6, "c_pps": 1.1e6, "overhead_ns": 3}}}
    got = xskrate.parse("batch 64: ...\n" + json.dumps(doc) + "\n")
    assert got == {"batch": 64, "frame_len": 60, "mode": "native", "rx_c_pps": 3250000,
                   "rx_python_pps": 1500000, "tx_c_pps": 1100000, "tx_python_pps": 900000}


def test_parse_bad() -> None:
    assert xskrate.parse("") is None
    assert xskrate.parse('{"rx": {}}') is None
    assert xskrate.parse("{not json") is None


def test_script_is_in_the_source_tree() -> None:
    assert xskrate.script_path().name == "bench_xsk.py"
    assert xskrate.script_path().exists()
