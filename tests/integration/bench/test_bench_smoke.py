"""Smoke tests of ``joyride demo`` and ``joyride bench`` as a user runs them.

They check structure and sanity of what is printed and saved, and that nothing is left
behind (namespaces, processes, Joyride state) — never wall-clock limits: the machine
is shared and timing-based assertions would only measure the neighbours.
"""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from joyride.processes import pid_alive
from joyride.testbed import list_namespaces

pytestmark = pytest.mark.integration

JOYRIDE = str(Path(sys.executable).with_name("joyride"))


def namespaces_of(pid: int) -> list[str]:
    return [n for n in list_namespaces() if n.startswith(f"jr-{pid}-")]


def run_joyride(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], int]:
    """``joyride ARGS`` to completion; also its pid (its test beds are named after it)."""
    proc = subprocess.Popen([JOYRIDE, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # let it clean up, then make sure
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), proc.pid


def test_demo_quick_prints_table_and_counters_and_cleans_up() -> None:
    proc, pid = run_joyride("demo", "--quick", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    rows = {}
    for label in ("latency p50", "latency p99", "requests/s", "throughput"):
        line = next(ln for ln in out.splitlines() if ln.startswith(label))
        numbers = re.findall(r"\s([\d,.]+)\s", line + " ")
        kernel, joyride = (float(n.replace(",", "")) for n in numbers[:2])
        assert kernel > 0 and joyride > 0, line
        assert "×" in line, line
        rows[label] = (kernel, joyride)
    assert rows["latency p50"][0] <= rows["latency p99"][0]
    assert rows["latency p50"][1] <= rows["latency p99"][1]
    steered = re.search(r"([\d,]+) frames steered to Joyride", out)
    assert steered and int(steered.group(1).replace(",", "")) > 1000, out
    assert "problems:" not in out, out
    assert "round 1/1 kernel" in proc.stderr and "round 1/1 joyride" in proc.stderr
    assert namespaces_of(pid) == []  # the run's test bed is gone
    ifname = re.search(r"steering counters on (\S+) ", out)
    assert ifname, out
    # ... and so is the service's state (detached before the namespace went away).
    assert not list(Path("/run/joyride").glob(f"net*/{ifname.group(1)}"))


def test_demo_sigint_cleans_up_everything() -> None:
    """Ctrl-C in the middle of the measurements: namespaces, service, nginx all gone."""
    # Ctrl-C's default action, whatever this run inherited: a suite started in the
    # background of a shell without job control has SIGINT ignored, and Python keeps an
    # inherited SIG_IGN (the demo would then run to its end, exit 0).
    proc = subprocess.Popen([JOYRIDE, "demo", "--rounds", "3", "--seconds", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stderr is not None
        seen = ""
        for line in proc.stderr:  # progress lines, one a step (not a terminal)
            seen += line
            if "requests/s" in line:
                break
        assert "requests/s" in seen, seen
        spaces = namespaces_of(proc.pid)
        assert len(spaces) == 2, spaces
        inside = set()
        for ns in spaces:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                  text=True).stdout.split()
            inside |= {int(p) for p in pids}
        assert inside  # the service and both nginx instances at least
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in out
    assert namespaces_of(proc.pid) == []
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in inside) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in inside if pid_alive(p)]


# A hang guard, not a speed limit: the run takes about 92 s on the machine of sessions
# 21-28 in either channel mode, which the suite's 120 s left too little room for (one CI
# run went over it, 2026-12-06).
@pytest.mark.timeout(300)
def test_bench_quick_subset_results_are_sane(tmp_path: Path) -> None:
    """A reduced quick run (two workloads, MTU 1500, both modes, the raw AF_XDP rate)."""
    out = tmp_path / "r" / "bench.json"
    proc, pid = run_joyride("bench", "--quick", "--mtus", "1500", "--json", str(out),
                            "--workloads", "rr_64B,throughput_1flow", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["config"]["repetitions"] >= 3
    assert set(doc["modes"]) == {"service", "embedded"}
    keys = {(r["workload"], r["server"]) for r in doc["results"]}
    assert keys == {("rr_64B", "sockperf"), ("rr_64B", "python"),
                    ("throughput_1flow_mtu1500", "iperf3"),
                    ("throughput_1flow_mtu1500", "python")}
    for row in doc["results"]:
        for name, entry in row["metrics"].items():
            assert entry["kernel"] is not None and entry["kernel"] > 0, (row, name)
            for mode in row["modes"]:
                got = entry[mode]
                assert len(got["kernel_samples"]) == doc["config"]["repetitions"]
                assert len(got["samples"]) == doc["config"]["repetitions"]
                if got["value"] is not None:  # failures are listed, never faked
                    assert got["value"] > 0
                    assert math.isclose(got["ratio"], got["value"] / got["kernel"],
                                        rel_tol=0.01)
                else:
                    assert got["errors"]
    py = next(r for r in doc["results"] if r["workload"] == "rr_64B"
              and r["server"] == "python")
    p50, p99 = py["metrics"]["p50_us"], py["metrics"]["p99_us"]
    assert 0 < p50["kernel"] <= p99["kernel"]
    # The Python server ran in all three places.
    assert set(py["modes"]) == {"service", "embedded"}
    assert p50["embedded"]["value"] is not None and p50["service"]["value"] is not None
    thr = next(r for r in doc["results"] if r["workload"].startswith("throughput")
               and r["server"] == "python")
    assert thr["metrics"]["gbps"]["embedded"]["value"] > 0.01
    assert doc["peak_memory_kb"]["service_mtu1500"] > 1000
    assert doc["steering"]["mtu1500"]["totals"]["steered"] > 0
    assert doc["xsk"].get("rx_c_pps", 0) > 1000, doc["xsk"]
    assert {t["status"] for t in doc["targets"]} <= {"met", "not met", "not measured"}
    assert out.with_suffix(".md").read_text().count("|") > 20
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert namespaces_of(pid) == []
