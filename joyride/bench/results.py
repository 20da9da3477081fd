"""The results document (JSON), its markdown table and the target checks.

Per workload and server: the kernel's median, and for each Joyride mode its median,
the median of the kernel samples measured alongside it, and the Joyride/kernel ratio
of the two. Ratios are Joyride over kernel for every metric: above 1 is better for
rates, below 1 is better for latency and CPU.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from joyride.bench import stats
from joyride.bench.runner import Pair, RawResults, config_json, machine

SCHEMA = 1

# The targets: (workload prefix, metric, mode, bound, "max"|"min", wording).
TARGETS: tuple[tuple[str, str, str, float, str, str], ...] = (
    ("rr_64B", "p50_us", "embedded", 1.0, "max", "RR latency p50, embedded"),
    ("rr_64B", "p50_us", "service", 1.3, "max", "RR latency p50, service mode"),
    ("throughput_1flow_mtu1500", "gbps", "service", 0.5, "min",
     "single-flow throughput, MTU 1500, service mode"),
    ("throughput_1flow_mtu1500", "gbps", "embedded", 0.5, "min",
     "single-flow throughput, MTU 1500, embedded"),
    ("wrk_", "rps", "service", 1.0, "min", "transactions/s, 100 connections, service mode"),
    ("wrk_", "rps", "embedded", 1.0, "min", "transactions/s, 100 connections, embedded"),
    ("wrk_", "cpu_us_per_req", "service", 1.0, "max", "CPU per request, service mode"),
    ("wrk_", "cpu_us_per_req", "embedded", 1.0, "max", "CPU per request, embedded"),
)
# Issue 18: IPv6 within 5 % of Joyride's own IPv4 figures (same workload, server, mode).
FAMILY_TOLERANCE = 0.05
# Which server a mode's target is judged on: native binaries where they run.
TARGET_SERVER = {"service": ("sockperf", "iperf3", "nginx", "python"), "embedded": ("python",)}


def _values(records: list[dict[str, Any]], key: str) -> list[float | None]:
    return [r["metrics"].get(key) if "metrics" in r else None for r in records]


def _round(x: float | None, digits: int = 4) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def summarize_pair(pair: Pair, key: str) -> dict[str, Any]:
    joy, ker = _values(pair.joyride, key), _values(pair.kernel, key)
    mj, mk = stats.median(joy), stats.median(ker)
    out: dict[str, Any] = {"value": _round(mj), "kernel": _round(mk),
                           "ratio": _round(stats.ratio(mj, mk), 3),
                           "samples": [_round(v) for v in joy],
                           "kernel_samples": [_round(v) for v in ker]}
    errors = sorted({r["error"] for r in pair.joyride + pair.kernel if "error" in r})
    if errors:
        out["errors"] = errors
    return out


def cpu_summary(pair: Pair) -> dict[str, float | None]:
    """Median CPU seconds per run, both views (``procstat``): the participating processes
    plus ksoftirqd, and the whole machine's /proc/stat busy time (softirq shown apart)."""
    out: dict[str, float | None] = {}
    for side, records in (("joyride", pair.joyride), ("kernel", pair.kernel)):
        for view in ("processes", "system", "softirq_system"):
            out[f"{side}_{view}"] = _round(stats.median(
                [r["cpu"].get(view) if "cpu" in r else None for r in records]))
    return out


def build(raw: RawResults) -> dict[str, Any]:
    rows = []
    for w in raw.workloads:
        for server in w.servers:
            by_mode = raw.pairs.get(w.key, {}).get(server, {})
            if not by_mode:
                continue
            metrics: dict[str, Any] = {}
            for m in w.metrics:
                entry: dict[str, Any] = {"label": m.label, "unit": m.unit, "better": m.better}
                kernel_all: list[float | None] = []
                for mode, pair in by_mode.items():
                    entry[mode] = summarize_pair(pair, m.key)
                    kernel_all += _values(pair.kernel, m.key)
                entry["kernel"] = _round(stats.median(kernel_all))
                metrics[m.key] = entry
            rows.append({"workload": w.key, "title": w.title, "kind": w.kind,
                         "ipv4_twin": w.twin,
                         "server": server, "mtu": w.mtu, "flows": w.flows,
                         "connections": w.connections, "modes": sorted(by_mode),
                         "metrics": metrics,
                         "cpu_seconds": {mode: cpu_summary(pair)
                                         for mode, pair in by_mode.items()}})
    doc: dict[str, Any] = {
        "schema": SCHEMA, "machine": machine(), "config": config_json(raw.config),
        "duration_s": round((raw.finished or raw.started) - raw.started, 1),
        "modes": {m: raw.unavailable.get(m, "measured") for m in raw.config.modes},
        "results": rows, "start_errors": raw.start_errors,
        "peak_memory_kb": raw.memory_kb, "steering": raw.steering, "xsk": raw.xsk,
    }
    doc["targets"] = check_targets(doc)
    doc["stack_overhead"] = stack_overhead(doc)
    doc["ipv6_vs_ipv4"] = family_comparison(doc)
    return doc


def family_comparison(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Each IPv6 row's Joyride figures over its IPv4 twin's (same server and mode), per
    metric, and whether IPv6 is within ``FAMILY_TOLERANCE`` of IPv4 (issue 18)."""
    rows = {(r["workload"], r["server"]): r for r in doc["results"]}
    out = []
    for row in doc["results"]:
        twin = rows.get((row.get("ipv4_twin"), row["server"]))
        if twin is None:
            continue
        for key, entry in row["metrics"].items():
            for mode in row["modes"]:
                v6 = (entry.get(mode) or {}).get("value")
                v4 = (twin["metrics"].get(key, {}).get(mode) or {}).get("value")
                ratio = stats.ratio(v6, v4)
                verdict: dict[str, Any] = {"workload": row["workload"],
                                           "server": row["server"], "mode": mode,
                                           "metric": key, "label": entry["label"],
                                           "unit": entry["unit"], "ipv6": v6, "ipv4": v4,
                                           "ratio": _round(ratio, 3)}
                if ratio is not None:
                    verdict["within"] = (ratio >= 1 - FAMILY_TOLERANCE
                                         if entry["better"] == "higher"
                                         else ratio <= 1 + FAMILY_TOLERANCE)
                out.append(verdict)
    return out


def find(doc: dict[str, Any], workload_prefix: str, server: str) -> dict[str, Any] | None:
    for row in doc["results"]:
        if row["workload"].startswith(workload_prefix) and row["server"] == server:
            return dict(row)
    return None


def check_targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for prefix, metric, mode, bound, kind, wording in TARGETS:
        verdict: dict[str, Any] = {"target": wording, "metric": metric, "mode": mode,
                                   "bound": bound, "kind": kind}
        if doc["modes"].get(mode) != "measured":
            verdict.update(status="not measured", why=doc["modes"].get(mode, "not requested"))
            out.append(verdict)
            continue
        ratio, server = None, None
        for candidate in TARGET_SERVER[mode]:
            row = find(doc, prefix, candidate)
            if row is None:
                continue
            got = row["metrics"][metric].get(mode, {}).get("ratio")
            if got is not None:
                ratio, server = got, candidate
                break
        if ratio is None:
            verdict.update(status="not measured", why="no successful runs")
        else:
            met = ratio <= bound if kind == "max" else ratio >= bound
            verdict.update(status="met" if met else "not met", ratio=ratio, server=server)
        out.append(verdict)
    return out


def stack_overhead(doc: dict[str, Any]) -> dict[str, Any]:
    """Joyride's single-flow segment rate next to the raw AF_XDP rate on the same kind of
    bed: how much of the packet budget the stack itself spends."""
    raw_pps = (doc.get("xsk") or {}).get("rx_c_pps")
    out: dict[str, Any] = {"raw_afxdp_rx_pps": raw_pps,
                           "raw_afxdp_rx_python_pps": (doc.get("xsk") or {}).get("rx_python_pps")}
    for mode, server in (("service", "iperf3"), ("embedded", "python")):
        row = find(doc, "throughput_1flow_mtu1500", server)
        if row is None:
            continue
        gbps = row["metrics"]["gbps"].get(mode, {}).get("value")
        if gbps is None:
            continue
        mss = 1500 - 52  # IPv4 + TCP with timestamps
        pps = gbps * 1e9 / 8 / mss
        out[f"{mode}_segments_per_s"] = round(pps)
        if raw_pps:
            out[f"{mode}_fraction_of_raw"] = round(pps / raw_pps, 4)
    return out


def save(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")


def write_report(fields: dict[str, Any], started: float, json_path: str, table: str,
                 markdown_path: str) -> None:
    """A benchmark's results: ``fields`` as JSON, stamped with when it started and the
    kernel it ran on, and its table as markdown; says where it wrote them."""
    doc = {"measured_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
           "kernel": os.uname().release, **fields}
    save(doc, Path(json_path))
    Path(markdown_path).write_text(table + "\n")
    print(f"wrote {json_path} and {markdown_path}")


# -- markdown ------------------------------------------------------------------------------


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def _row_cells(entry: dict[str, Any], mode: str) -> tuple[str, str, str] | None:
    """(kernel alongside, Joyride, ratio) cells of one mode, None if it did not run."""
    got = entry.get(mode)
    if not got:
        return None
    value = _fmt(got["value"]) if got.get("value") is not None else "failed"
    ratio = f"{got['ratio']:.2f}×" if got.get("ratio") is not None else "—"
    return _fmt(got.get("kernel")), value, ratio


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        f"Measured {m['date']} on {m['cpus']} vCPUs ({m['cpu_model'] or 'unknown CPU'}), "
        f"Linux {m['kernel']}, NIC: {m['nic']}; Python {m['python']}. "
        f"{doc['config']['repetitions']} alternating repetitions of "
        f"{doc['config']['seconds']:g} s per point, medians; the kernel figure of each "
        f"row was measured alongside that mode. Ratios are Joyride / kernel: above 1 is "
        f"better for rates, below 1 for latency and CPU. Run took {doc['duration_s']:.0f} s.",
        "",
    ]
    for mode, state in doc["modes"].items():
        if state != "measured":
            lines.append(f"**{mode} mode: {state}.**")
    if any(state != "measured" for state in doc["modes"].values()):
        lines.append("")
    lines += ["| workload | server | metric | mode | kernel | Joyride | Joyride/kernel |",
              "|---|---|---|---|---:|---:|---:|"]
    for row in doc["results"]:
        for entry in row["metrics"].values():
            for mode in ("service", "embedded"):
                cells = _row_cells(entry, mode)
                if cells is not None:
                    lines.append(f"| {row['title']} | {row['server']} | {entry['label']} "
                                 f"({entry['unit']}) | {mode} | {' | '.join(cells)} |")
    lines += ["", "Targets:", ""]
    for t in doc["targets"]:
        bound = ("≤" if t["kind"] == "max" else "≥") + f" {t['bound']:g}"
        if t["status"] == "not measured":
            lines.append(f"- {t['target']} {bound}: not measured ({t['why']})")
        else:
            lines.append(f"- {t['target']} {bound}: **{t['status']}** "
                         f"(measured {t['ratio']:.2f}× with {t['server']})")
    family = doc.get("ipv6_vs_ipv4") or []
    if family:
        lines += ["", f"IPv6 against IPv4, Joyride's own figures (target: within "
                  f"{FAMILY_TOLERANCE:.0%}):", "",
                  "| workload | server | metric | mode | IPv4 | IPv6 | IPv6/IPv4 | within |",
                  "|---|---|---|---|---:|---:|---:|---|"]
        for f in family:
            within = {True: "yes", False: "**no**"}.get(f.get("within"), "—")
            ratio = f"{f['ratio']:.2f}×" if f["ratio"] is not None else "—"
            lines.append(f"| {f['workload']} | {f['server']} | {f['label']} ({f['unit']}) "
                         f"| {f['mode']} | {_fmt(f['ipv4'])} | {_fmt(f['ipv6'])} | {ratio} "
                         f"| {within} |")
    mem = doc.get("peak_memory_kb") or {}
    if mem:
        lines += ["", "Peak memory (VmHWM): " + ", ".join(
            f"{k} {v / 1024:.0f} MiB" for k, v in sorted(mem.items()))]
    over = doc.get("stack_overhead") or {}
    if over.get("raw_afxdp_rx_pps"):
        parts = [f"raw AF_XDP rx on this bed: {over['raw_afxdp_rx_pps'] / 1e6:.2f} Mpps "
                 "(C loop)"]
        if over.get("raw_afxdp_rx_python_pps"):
            parts.append(f"{over['raw_afxdp_rx_python_pps'] / 1e6:.2f} Mpps "
                         "(Python batch API)")
        for mode in ("service", "embedded"):
            if f"{mode}_segments_per_s" in over:
                frac = over.get(f"{mode}_fraction_of_raw")
                parts.append(f"Joyride {mode} single flow: "
                             f"{over[f'{mode}_segments_per_s'] / 1e3:.0f} k segments/s"
                             + (f" ({frac:.1%} of raw)" if frac else ""))
        lines += ["", "Stack overhead: " + "; ".join(parts) + "."]
    if doc.get("start_errors"):
        lines += ["", "Could not start:"] + [f"- {k}: {v}" for k, v in
                                             sorted(doc["start_errors"].items())]
    failed = [(row["workload"], row["server"], mode, err)
              for row in doc["results"] for entry in list(row["metrics"].values())[:1]
              for mode in ("service", "embedded") if entry.get(mode)
              for err in entry[mode].get("errors", [])]
    if failed:
        lines += ["", "Failed runs:"] + [f"- {w} / {s} / {mo}: {e[:200]}"
                                         for w, s, mo, e in failed]
    return "\n".join(lines) + "\n"
