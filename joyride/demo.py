"""``joyride demo``: the same HTTP server on the kernel and on Joyride, side by side.

Builds a veth test bed, attaches Joyride to the server side with one accelerated port,
starts the same nginx (same binary, same configuration) on that port under
``joyride run`` and on an unaccelerated port on the kernel, drives the same traffic
at both from the peer namespace (alternating, with a progress line), prints a table
(latency, requests/s, throughput) and Joyride's steering counters, and tears
everything down — on Ctrl-C too.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from joyride.bench import servers, stats, tools
from joyride.bench.progress import Progress
from joyride.bench.servers import Endpoint
from joyride.testbed import Testbed

BIG_FILE_BYTES = 64 << 20  # throughput: whole downloads of this file


@dataclass(frozen=True)
class Phase:
    key: str
    label: str
    unit: str
    better: str


PHASES = (
    Phase("latency_p50_us", "latency p50, 1 connection", "µs", "lower"),
    Phase("latency_p99_us", "latency p99, 1 connection", "µs", "lower"),
    Phase("rps", "requests/s, 50 connections", "req/s", "higher"),
    Phase("gbps", "throughput, 64 MiB downloads", "Gbit/s", "higher"),
)


@dataclass
class DemoConfig:
    rounds: int = 3
    seconds: float = 3.0

    @classmethod
    def quick(cls) -> DemoConfig:
        return cls(rounds=1, seconds=1.5)


@dataclass
class DemoResult:
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    counters: dict[str, Any] = field(default_factory=dict)
    ifname: str = ""

    def add(self, side: str, key: str, value: float | None) -> None:
        if value is not None:
            self.samples.setdefault(side, {}).setdefault(key, []).append(value)

    def median(self, side: str, key: str) -> float | None:
        return stats.median(self.samples.get(side, {}).get(key, []))


def _timed(bed: Testbed, argv: list[str], seconds: float, progress: Progress,
           label: str) -> tools.ClientResult:
    """Run a client in the peer namespace, ticking the progress line while it runs."""
    t0 = time.monotonic()
    progress.step(label)
    proc = subprocess.Popen(bed.peer.cmd(*argv), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while True:
            try:
                out, err = proc.communicate(timeout=0.25)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - t0
                progress.tick(f"{label} {elapsed:4.1f}/{seconds:g} s")
                if elapsed > seconds + 60:
                    proc.kill()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return tools.ClientResult(proc.returncode, out.decode(errors="replace"),
                              err.decode(errors="replace"), 0.0, time.monotonic() - t0)


def _downloads(bed: Testbed, url: str, seconds: float, progress: Progress,
               label: str) -> float | None:
    """Gbit/s over whole downloads of the big file, for about ``seconds``."""
    got, spent = 0.0, 0.0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds or got == 0:
        res = _timed(bed, ["curl", "-s", "-o", "/dev/null", "--max-time", "60", "-w",
                           "%{size_download} %{time_total}", url], seconds, progress, label)
        try:
            size, total = (float(x) for x in res.stdout.split())
        except ValueError:
            return None
        if not res.ok or size != BIG_FILE_BYTES:
            return None
        got, spent = got + size, spent + total
        if time.monotonic() - t0 > seconds + 60:
            break
    return got * 8 / spent / 1e9 if spent else None


def _measure(bed: Testbed, ep: Endpoint, side: str, cfg: DemoConfig, result: DemoResult,
             progress: Progress, rnd: int) -> None:
    url = f"http://{bed.joy.ip}:{ep.ports['nginx']}"
    tag = f"round {rnd + 1}/{cfg.rounds} {side:7s}"
    res = _timed(bed, tools.wrk_client(f"{url}/body", cfg.seconds, 1, threads=1),
                 cfg.seconds, progress, f"{tag} latency (wrk, 1 connection)")
    parsed = tools.parse_wrk(res.stdout) if res.ok else None
    if parsed is None or parsed["errors"]:
        result.errors.append(f"{side} latency: {res.tail()}")
    else:
        result.add(side, "latency_p50_us", parsed.get("p50_us"))
        result.add(side, "latency_p99_us", parsed.get("p99_us"))
    progress.advance()
    res = _timed(bed, tools.wrk_client(f"{url}/body", cfg.seconds, 50), cfg.seconds,
                 progress, f"{tag} requests/s (wrk, 50 connections)")
    parsed = tools.parse_wrk(res.stdout) if res.ok else None
    if parsed is None or parsed["errors"]:
        result.errors.append(f"{side} requests/s: {res.tail()}")
    else:
        result.add(side, "rps", parsed["rps"])
    progress.advance()
    gbps = _downloads(bed, f"{url}/big", cfg.seconds, progress,
                      f"{tag} throughput (curl, 64 MiB)")
    if gbps is None:
        result.errors.append(f"{side} throughput: download failed")
    result.add(side, "gbps", gbps)
    progress.advance()


def run(cfg: DemoConfig, out: TextIO = sys.stdout,
        progress: Progress | None = None) -> DemoResult:
    """The whole demo; every namespace, program and process is gone when it returns."""
    progress = progress or Progress(1)
    progress.total = 3 * 2 * cfg.rounds
    result = DemoResult()
    port = servers.port_of("service", "nginx")
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="jr-demo-")))
        progress.note("building a test bed: two network namespaces joined by a veth pair")
        bed = stack.enter_context(Testbed())
        result.ifname = bed.joy.ifname
        progress.note(f"joyride attach {bed.joy.ifname} --ports {port}  (server side, "
                      f"{bed.joy.ip}; clients in the peer namespace, {bed.peer.ip})")
        stack.callback(servers.detach, bed)
        servers.attach(bed, str(port))
        eps: dict[str, Endpoint] = {}
        for side, mode in (("kernel", "kernel"), ("joyride", "service")):
            progress.note(f"starting nginx on the {side}"
                          + (f" (joyride run, port {port})" if mode == "service" else
                             f" (port {servers.port_of('kernel', 'nginx')}, not accelerated)"))
            eps[side] = servers.start(bed, "nginx", mode, workdir, workdir / f"{side}.log")
            stack.callback(eps[side].stop)
            big = workdir / f"nginx-{mode}" / "www" / "big"
            with big.open("wb") as f:
                f.truncate(BIG_FILE_BYTES)
        for rnd in range(cfg.rounds):
            order = ("kernel", "joyride") if rnd % 2 == 0 else ("joyride", "kernel")
            for side in order:
                _measure(bed, eps[side], side, cfg, result, progress, rnd)
        progress.close()
        result.counters = servers.service_stats(bed)
        print(table(result), file=out)
        print(counters_text(result), file=out)
    return result


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def table(result: DemoResult) -> str:
    rows = [("", "kernel", "joyride", "joyride/kernel")]
    for ph in PHASES:
        k, j = result.median("kernel", ph.key), result.median("joyride", ph.key)
        ratio = stats.ratio(j, k)
        hint = "lower is better" if ph.better == "lower" else "higher is better"
        rows.append((f"{ph.label} ({ph.unit})", _fmt(k), _fmt(j),
                     f"{ratio:.2f}×  ({hint})" if ratio is not None else "—"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["", "nginx, same binary and configuration; medians of the rounds:", ""]
    for n, row in enumerate(rows):
        lines.append("  ".join([row[0].ljust(widths[0]), row[1].rjust(widths[1]),
                                row[2].rjust(widths[2]), "  " + row[3]]))
        if n == 0:
            lines.append("-" * (sum(widths) + 8))
    if result.errors:
        lines += ["", "problems:"] + [f"  {e}" for e in result.errors]
    return "\n".join(lines)


def counters_text(result: DemoResult) -> str:
    doc: dict[str, Any] = result.counters
    totals: dict[str, Any] = doc.get("totals") or {}
    steer: dict[str, Any] = doc.get("steer") or {}
    if not totals and not steer:
        return "\nsteering counters: unavailable (joyride stats gave nothing)"
    nonzero = ", ".join(f"{k} {v:,}" for k, v in sorted(steer.items()) if v)
    pick: Callable[[str], Any] = lambda k: totals.get(k, 0)  # noqa: E731
    return (f"\nsteering counters on {result.ifname} (XDP program): "
            f"{pick('steered'):,} frames steered to Joyride, {pick('pass'):,} passed to the "
            f"kernel, {pick('redirect_miss'):,} redirect misses, {pick('err'):,} errors"
            + (f"\n  by reason: {nonzero}" if nonzero else ""))
