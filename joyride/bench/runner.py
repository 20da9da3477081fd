"""The benchmark run: fresh beds, one Joyride mode at a time, alternating repetitions.

For each MTU a fresh test bed is built and the kernel servers are started on unsteered
ports. Then, for each available Joyride mode in turn (the network service and an
embedding process cannot own one interface at the same time), the Joyride servers are
started on steered ports and every workload runs ``repetitions`` times against each
(kernel, Joyride) pair, the order of the two swapped on every repetition so slow drift
of the shared machine (other tenants, thermal, caches) falls on both sides alike.
Ratios are taken between a mode's samples and the kernel samples measured alongside
them (DESIGN.md, facts: compare side by side, in one run, under the same conditions).
"""

from __future__ import annotations

import contextlib
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from joyride.bench import modes as modes_mod
from joyride.bench import servers, workloads
from joyride.bench.procstat import CpuMeter, peak_rss_kb
from joyride.bench.progress import Progress
from joyride.bench.servers import Endpoint, ServerError
from joyride.bench.tools import prepare_load_generator, run_client
from joyride.bench.workloads import Workload
from joyride.testbed import Testbed

# One record per client run: {"rep", "metrics", "cpu"} or {"rep", "error"}.
Record = dict[str, Any]


@dataclass
class BenchConfig:
    repetitions: int = 5
    seconds: float = 4.0  # per client run
    mtus: tuple[int, ...] = (1500, 3498)
    flows: tuple[int, ...] = (1, 4)
    wrk_connections: int = 100
    modes: tuple[str, ...] = ("service", "embedded")
    xsk: bool = True
    quick: bool = False
    only: tuple[str, ...] = ()  # workload key prefixes; empty: all

    @classmethod
    def quick_run(cls) -> BenchConfig:
        return cls(repetitions=3, seconds=1.0, quick=True)

    def __post_init__(self) -> None:
        if self.repetitions < 3:
            raise ValueError("at least 3 repetitions: a median of fewer says little")
        if self.seconds <= 0:
            raise ValueError("seconds must be positive")


@dataclass
class Pair:
    """Samples of one (workload, server, mode): Joyride's and the kernel's alongside."""

    joyride: list[Record] = field(default_factory=list)
    kernel: list[Record] = field(default_factory=list)


@dataclass
class RawResults:
    config: BenchConfig
    workloads: list[Workload]
    unavailable: dict[str, str]
    started: float = field(default_factory=time.time)
    # workload key -> server -> mode -> Pair
    pairs: dict[str, dict[str, dict[str, Pair]]] = field(default_factory=dict)
    # (server, mode) that could not start: why
    start_errors: dict[str, str] = field(default_factory=dict)
    memory_kb: dict[str, int] = field(default_factory=dict)
    steering: dict[str, Any] = field(default_factory=dict)
    xsk: dict[str, Any] = field(default_factory=dict)
    finished: float = 0.0

    def pair(self, w: Workload, server: str, mode: str) -> Pair:
        return self.pairs.setdefault(w.key, {}).setdefault(server, {}).setdefault(mode, Pair())


def serves(server: str, mode: str) -> bool:
    """Native binaries run under ``joyride run``; only Python can embed the stack."""
    return mode == "service" or server == "python"


def count_runs(config: BenchConfig, wls: list[Workload], modes: list[str]) -> int:
    runs = 0
    for mode in modes:
        for w in wls:
            runs += 2 * sum(serves(s, mode) for s in w.servers)
    return runs * config.repetitions


def run(config: BenchConfig, progress: Progress | None = None,
        workdir: Path | None = None) -> RawResults:
    """Everything, bounded: every bed, server and service is gone when this returns."""
    wls = [w for w in workloads.standard(config.mtus, config.flows, config.wrk_connections)
           if not config.only or w.key.startswith(config.only)]
    unavailable = {m: r for m, r in modes_mod.unavailable().items() if m in config.modes}
    modes = [m for m in config.modes if m not in unavailable]
    raw = RawResults(config, wls, unavailable)
    steps = count_runs(config, wls, modes) + (1 if config.xsk else 0)
    progress = progress or Progress(steps)
    progress.total = max(1, steps)
    for mode, reason in unavailable.items():
        progress.note(f"{mode} mode: {reason}")
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="jr-bench-")))
        for mtu in config.mtus:
            mtu_wls = [w for w in wls if w.mtu == mtu and (w.kind == "throughput"
                                                             or mtu == config.mtus[0])]
            if mtu_wls:
                _bed(raw, mtu, mtu_wls, modes, progress, workdir / f"mtu{mtu}")
        if config.xsk:
            from joyride.bench import xskrate

            progress.step("raw AF_XDP packet rate (scripts/bench_xsk.py)")
            raw.xsk = xskrate.measure(quick=config.quick)
            progress.advance()
    raw.finished = time.time()
    progress.close()
    return raw


def _bed(raw: RawResults, mtu: int, wls: list[Workload], modes: list[str],
         progress: Progress, workdir: Path) -> None:
    needed = sorted({s for w in wls for s in w.servers})
    progress.note(f"MTU {mtu}: fresh test bed; kernel servers: {', '.join(needed)}")
    with Testbed(mtu=mtu, ipv6=any(w.ipv6 for w in wls)) as bed, \
            contextlib.ExitStack() as kernel_stack:
        prepare_load_generator(bed.peer)
        kernel: dict[str, Endpoint] = {}
        for name in needed:
            try:
                kernel[name] = servers.start(bed, name, "kernel", workdir,
                                             workdir / f"{name}-kernel.log")
                kernel_stack.callback(kernel[name].stop)
            except ServerError as exc:
                raw.start_errors[f"{name}/kernel/mtu{mtu}"] = str(exc)
                progress.note(f"  kernel {name}: {exc}")
        for mode in modes:
            with contextlib.ExitStack() as stack:
                roots = _joyride_side(raw, bed, mode, mtu, progress, stack)
                joy: dict[str, Endpoint] = {}
                for name in needed:
                    if not serves(name, mode) or roots is None:
                        continue
                    try:
                        joy[name] = servers.start(bed, name, mode, workdir,
                                                  workdir / f"{name}-{mode}.log")
                        stack.callback(joy[name].stop)  # before the service detaches
                    except ServerError as exc:
                        raw.start_errors[f"{name}/{mode}/mtu{mtu}"] = str(exc)
                        progress.note(f"  {mode} {name}: {exc}")
                _repetitions(raw, bed, wls, mode, kernel, joy, roots or [], progress)
                if mode == "embedded" and "python" in joy:
                    rss = peak_rss_kb(joy["python"].pids)
                    if rss is not None:
                        raw.memory_kb[f"embedded_python_server_mtu{mtu}"] = rss


def _joyride_side(raw: RawResults, bed: Testbed, mode: str, mtu: int,
                  progress: Progress, stack: contextlib.ExitStack) -> list[int] | None:
    """The mode's shared machinery: the network service for service mode (detached by
    ``stack``), nothing for embedded mode (each embedding server brings its engine).
    Returns pids whose CPU belongs to Joyride's side of every run, None if the mode
    cannot run on this bed."""
    if mode != "service":
        return []
    progress.note(f"MTU {mtu}: joyride attach {bed.joy.ifname} --ports "
                  f"{servers.SERVICE_PORTS}")
    stack.callback(servers.detach, bed)
    try:
        pid = servers.attach(bed)
    except ServerError as exc:
        raw.start_errors[f"service/mtu{mtu}"] = str(exc)
        progress.note(f"  service mode: {exc}")
        return None

    def record() -> None:
        rss = peak_rss_kb([pid])
        if rss is not None:
            raw.memory_kb[f"service_mtu{mtu}"] = rss
        stats = servers.service_stats(bed)
        raw.steering[f"mtu{mtu}"] = {k: stats.get(k) for k in ("steer", "totals", "memory")}

    stack.callback(record)  # runs before detach (ExitStack unwinds last-in first-out)
    return [pid]


def _repetitions(raw: RawResults, bed: Testbed, wls: list[Workload], mode: str,
                 kernel: dict[str, Endpoint], joy: dict[str, Endpoint], roots: list[int],
                 progress: Progress) -> None:
    cfg = raw.config
    for rep in range(cfg.repetitions):
        for w in wls:
            for i, server in enumerate(w.servers):
                if not serves(server, mode):
                    continue
                pair = raw.pair(w, server, mode)
                sides = [("kernel", kernel.get(server), pair.kernel, []),
                         (mode, joy.get(server), pair.joyride, roots)]
                if (rep + i) % 2:
                    sides.reverse()
                for side, ep, records, extra in sides:
                    progress.step(f"rep {rep + 1}/{cfg.repetitions} {w.key} {server} "
                                  f"{side} (MTU {w.mtu})")
                    records.append(measure(bed, w, ep, extra, cfg.seconds, rep))
                    progress.advance()


def measure(bed: Testbed, w: Workload, ep: Endpoint | None, extra_pids: list[int],
            seconds: float, rep: int) -> Record:
    """One client run against ``ep``: metrics and CPU, or why it failed."""
    if ep is None:
        return {"rep": rep, "error": "server not running (see start errors)"}
    if not ep.alive():
        return {"rep": rep, "error": f"{ep.name} ({ep.mode}) has exited"}
    ip = bed.joy.ip6 if w.ipv6 else bed.joy.ip
    if ip is None:
        return {"rep": rep, "error": "the bed has no IPv6 address"}
    argv, parse = workloads.client(w, ep, ip, seconds)
    meter = CpuMeter([*ep.pids, *extra_pids])
    meter.start()
    res = run_client(bed.peer.cmd(*argv), timeout=seconds * 3 + 60)
    cpu = meter.stop(res.cpu_seconds)
    if not res.ok:
        return {"rep": rep, "error": f"{argv[0]} exited {res.returncode}: {res.tail()}"}
    parsed = parse(res.stdout)
    if parsed is None:
        return {"rep": rep, "error": f"unreadable {argv[0]} output: {res.tail()}"}
    try:
        metrics = workloads.metrics_of(w, parsed, cpu)
    except (ValueError, KeyError, ZeroDivisionError) as exc:
        return {"rep": rep, "error": f"{type(exc).__name__}: {exc}"}
    return {"rep": rep, "metrics": metrics, "cpu": cpu.to_json(),
            "client_cpu_s": round(res.cpu_seconds, 4), "wall_s": round(res.wall_seconds, 3)}


def machine() -> dict[str, Any]:
    """What the numbers were measured on (README: cores, kernel, NIC, date)."""
    import os

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "nic": "veth pair between two network namespaces (native XDP, AF_XDP copy mode)",
            "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())}


def config_json(config: BenchConfig) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
