"""The results document from synthetic runs: medians, paired ratios, targets, table."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from joyride.bench import plot, results, servers, workloads
from joyride.bench.procstat import CpuUsage
from joyride.bench.progress import Progress, bar, fmt_seconds
from joyride.bench.runner import BenchConfig, RawResults, count_runs, serves


def rec(rep: int, **metrics: float) -> dict[str, Any]:
    return {"rep": rep, "metrics": metrics}


def synthetic() -> RawResults:
    cfg = BenchConfig(repetitions=3, seconds=1.0, mtus=(1500,), flows=(1,), xsk=False)
    wls = workloads.standard(cfg.mtus, cfg.flows)
    raw = RawResults(cfg, wls, {}, started=1000.0, finished=1100.0)
    rr = next(w for w in wls if w.kind == "rr")
    wrk = next(w for w in wls if w.kind == "wrk")
    thr = next(w for w in wls if w.kind == "throughput")
    p = raw.pair(rr, "sockperf", "service")
    p.kernel += [rec(0, p50_us=10), rec(1, p50_us=12), rec(2, p50_us=11)]
    p.joyride += [rec(0, p50_us=12), {"rep": 1, "error": "sockperf exited 7"},
                  rec(2, p50_us=14)]
    p = raw.pair(rr, "python", "embedded")
    p.kernel += [{**rec(i, p50_us=20), "cpu": {"processes": 1.0 + i, "system": 3.0,
                                               "softirq_system": 0.5}} for i in range(3)]
    p.joyride += [rec(i, p50_us=18) for i in range(3)]
    p = raw.pair(wrk, "nginx", "service")
    p.kernel += [rec(i, rps=1000, cpu_us_per_req=50) for i in range(3)]
    p.joyride += [rec(i, rps=600 + i, cpu_us_per_req=40) for i in range(3)]
    p = raw.pair(thr, "iperf3", "service")
    p.kernel += [rec(i, gbps=4.0, cpu_s_per_gb=2.0) for i in range(3)]
    p.joyride += [rec(i, gbps=2.4, cpu_s_per_gb=3.0) for i in range(3)]
    raw.memory_kb["service_mtu1500"] = 204800
    raw.xsk = {"rx_c_pps": 2_000_000, "rx_python_pps": 1_000_000}
    return raw


def test_medians_and_paired_ratios() -> None:
    doc = results.build(synthetic())
    row = results.find(doc, "rr_64B", "sockperf")
    assert row is not None
    p50 = row["metrics"]["p50_us"]
    assert p50["kernel"] == 11
    assert p50["service"]["value"] == 13  # median of the two good runs
    assert p50["service"]["ratio"] == pytest.approx(13 / 11, abs=5e-3)
    assert p50["service"]["errors"] == ["sockperf exited 7"]
    assert p50["service"]["samples"] == [12, None, 14]
    py = results.find(doc, "rr_64B", "python")
    assert py is not None and py["metrics"]["p50_us"]["embedded"]["ratio"] == 0.9
    cpu = py["cpu_seconds"]["embedded"]
    assert cpu["kernel_processes"] == 2.0 and cpu["kernel_system"] == 3.0
    assert cpu["joyride_processes"] is None  # no CPU recorded for those runs
    assert json.loads(json.dumps(doc)) == doc  # plain JSON all the way down
    assert doc["duration_s"] == 100.0


def test_targets() -> None:
    doc = results.build(synthetic())
    by = {(t["target"]): t for t in doc["targets"]}
    assert by["RR latency p50, embedded"]["status"] == "met"
    assert by["RR latency p50, service mode"]["status"] == "met"  # 1.18 <= 1.3
    assert by["transactions/s, 100 connections, service mode"]["status"] == "not met"
    assert by["CPU per request, service mode"]["status"] == "met"
    assert by["single-flow throughput, MTU 1500, service mode"]["ratio"] == 0.6
    assert by["transactions/s, 100 connections, embedded"]["status"] == "not measured"


def test_unavailable_mode_is_said_not_faked() -> None:
    raw = synthetic()
    raw.unavailable = {"embedded": "not available yet (no module named joyride.embed)"}
    doc = results.build(raw)
    assert doc["modes"]["embedded"].startswith("not available yet")
    emb = [t for t in doc["targets"] if t["mode"] == "embedded"]
    assert emb and all(t["status"] == "not measured" for t in emb)
    assert "embedded mode: not available yet" in results.markdown(doc)


def test_markdown_rows_and_stack_overhead() -> None:
    doc = results.build(synthetic())
    text = results.markdown(doc)
    assert "| RR 64 B, 1 connection (sockperf) | sockperf | p50 (µs) | service | 11.0 | 13.0 | " \
           "1.18× |" in text
    assert "service_mtu1500 200 MiB" in text
    over = doc["stack_overhead"]
    assert over["service_segments_per_s"] == round(2.4e9 / 8 / 1448)
    assert over["service_fraction_of_raw"] == pytest.approx(over["service_segments_per_s"]
                                                            / 2e6, abs=1e-4)
    assert "Failed runs:" in text and "sockperf exited 7" in text


def test_plot_bars_and_png(tmp_path: Path) -> None:
    doc = results.build(synthetic())
    bars = dict(plot.bars(doc))
    assert bars["wrk_100conn · nginx · requests/s"] == {"service": 0.601}  # no embedded nginx
    assert bars["rr_64B · python · p50"] == {"embedded": 0.9}
    assert bars["rr_64B · sockperf · p99"] == {"service": None}  # failed, not faked
    pytest.importorskip("matplotlib")
    png = tmp_path / "bench.png"
    assert plot.render(doc, png) is None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_count_and_mode_support() -> None:
    cfg = BenchConfig(repetitions=3, mtus=(1500,), flows=(1,))
    wls = workloads.standard(cfg.mtus, cfg.flows, ipv6=False)
    assert serves("nginx", "service") and not serves("nginx", "embedded")
    assert serves("python", "embedded")
    # 4 workloads x 2 servers x 2 sides (service) + 4 x 1 x 2 (embedded), 3 times.
    assert count_runs(cfg, wls, ["service", "embedded"]) == (16 + 8) * 3
    # The IPv6 rows and the IPv4 RR-over-HTTP twin: one native server each, service
    # mode only (embedded mode's sockets are IPv4).
    both = workloads.standard(cfg.mtus, cfg.flows)
    assert count_runs(cfg, both, ["service", "embedded"]) == (16 + 8 + 4 * 2) * 3
    with pytest.raises(ValueError):
        BenchConfig(repetitions=2)


def test_ipv6_rows_are_judged_against_their_ipv4_twins() -> None:
    """Issue 18's target: each IPv6 row's Joyride figure over its IPv4 twin's, within
    5 % (rates at least 0.95 times, latency and CPU at most 1.05 times)."""
    cfg = BenchConfig(repetitions=3, seconds=1.0, mtus=(1500,), flows=(1,), xsk=False)
    wls = {w.key: w for w in workloads.standard(cfg.mtus, cfg.flows)}
    assert {k for k, w in wls.items() if w.ipv6} == {
        "ipv6_rr_http_1conn", "ipv6_throughput_1flow_mtu1500", "ipv6_wrk_100conn"}
    assert all(w.twin in wls for w in wls.values() if w.ipv6)
    raw = RawResults(cfg, list(wls.values()), {}, started=1000.0, finished=1100.0)
    for key, rps, p50 in (("wrk_100conn", 1000, 50), ("ipv6_wrk_100conn", 960, 56)):
        pair = raw.pair(wls[key], "nginx", "service")
        pair.kernel += [rec(i, rps=1000, p50_us=50, p99_us=90, cpu_us_per_req=40)
                        for i in range(3)]
        pair.joyride += [rec(i, rps=rps, p50_us=p50, p99_us=90, cpu_us_per_req=40)
                         for i in range(3)]
    doc = results.build(raw)
    got = {f["metric"]: f for f in doc["ipv6_vs_ipv4"]}
    assert got["rps"]["ratio"] == 0.96 and got["rps"]["within"]
    assert got["p50_us"]["ratio"] == 1.12 and not got["p50_us"]["within"]
    assert got["cpu_us_per_req"]["within"]
    table = results.markdown(doc)
    assert "| ipv6_wrk_100conn | nginx | requests/s (req/s) | service | 1,000 | 960 | 0.96× " \
           "| yes |" in table
    client, _ = workloads.client(wls["ipv6_wrk_100conn"],
                                 servers.Endpoint("nginx", "service", {"nginx": 8103}, []),
                                 "2001:2::1", 1.0)
    assert client[-1] == "http://[2001:2::1]:8103/body"
    iperf, _ = workloads.client(wls["ipv6_throughput_1flow_mtu1500"],
                                servers.Endpoint("iperf3", "service", {"iperf3": 8102}, []),
                                "2001:2::1", 1.0)
    assert "-6" in iperf and "-4" not in iperf
    rr, _ = workloads.client(wls["rr_http_1conn"],
                             servers.Endpoint("nginx", "service", {"nginx": 8103}, []),
                             "198.18.0.1", 1.0)
    assert rr[:3] == ["wrk", "-t1", "-c1"]


def test_metrics_of_divides_cpu_by_work() -> None:
    wls = {w.kind: w for w in workloads.standard((1500,), (1,))}
    cpu = CpuUsage(processes=2.0, system=3.0, softirq_system=0.5)
    thr = workloads.metrics_of(wls["throughput"], {"gbps": 8.0, "bytes": 1e9}, cpu)
    assert thr == {"gbps": 8.0, "cpu_s_per_gb": 2.0}
    wrk = workloads.metrics_of(wls["wrk"], {"rps": 1e4, "requests": 2e4, "errors": 0,
                                            "p50_us": 5.0, "p99_us": 9.0}, cpu)
    assert wrk["cpu_us_per_req"] == 100.0
    with pytest.raises(ValueError):  # more than 1 % errors: a failed run
        workloads.metrics_of(wls["connrate"], {"rps": 1e4, "requests": 1e4, "errors": 200},
                             cpu)
    rr = workloads.metrics_of(wls["rr"], {"p50_us": 1, "p99_us": 2, "p999_us": 3,
                                          "round_trips": 1e5, "total_round_trips": 2e5}, cpu)
    assert rr["cpu_us_per_rt"] == 10.0


def test_progress_lines() -> None:
    out = io.StringIO()
    now = [0.0]
    p = Progress(4, stream=out, tty=False, clock=lambda: now[0])
    p.step("first")
    now[0] = 10.0
    p.advance()
    p.step("second")
    p.note("a note")
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[") and "0/4" in lines[0] and lines[0].endswith("first")
    assert "1/4 0:10, ~0:30 left  second" in lines[1]
    assert lines[2] == "a note"
    assert fmt_seconds(125) == "2:05" and bar(0.5, 4) == "##--"
    tty = io.StringIO()
    q = Progress(2, stream=tty, tty=True)
    q.step("x")
    q.close()
    assert tty.getvalue().startswith("\r\x1b[2K") and tty.getvalue().endswith("\n")


def test_write_report_stamps_and_writes_both(tmp_path: Path) -> None:
    import os

    from joyride.bench.results import write_report

    out_json, out_md = tmp_path / "r" / "x.json", tmp_path / "x.md"
    write_report({"rows": [1, 2]}, 0.0, str(out_json), "| a |", str(out_md))
    doc = json.loads(out_json.read_text())
    assert doc == {"measured_at": "1970-01-01 00:00:00 UTC",
                   "kernel": os.uname().release, "rows": [1, 2]}
    assert out_md.read_text() == "| a |\n"
