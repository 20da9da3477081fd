"""Unmodified Debian servers, on the kernel and under ``joyride run``, side by side.

``python -m joyride.bench.daemons [--quick] [--json FILE]`` (as root) builds one veth
test bed and, for each data plane asked for (``--planes c,python``: the service with
``JOYRIDE_DATAPLANE`` set so), attaches Joyride, starts the same server binary on a
kernel port and on a steered port, and drives both with the same client from the peer
namespace, alternating which goes first, ``--reps`` times. It prints a table and
writes JSON: every sample, medians, and ratios to the kernel samples of that phase.

CPU per request is measured two ways: the whole machine (``/proc/stat`` busy time: on
veth the receive work runs in softirq and is charged to whoever was running, so only
the total is honest) and per process (service, server tree, client), from
``/proc/<pid>/stat``. Python calls per request: the data plane's returns to Python
(``dp_run`` returns) and the service loop's rounds, divided by requests.

Workloads (the issue's list): redis GET and SET (50 connections), redis GET pipelined
(-P 16), nginx (1 and 2 workers; wrk, 100 connections, 1 KiB), new connections per
second (wrk, ``Connection: close``, 50 connections), nginx latency (wrk, 1 connection: the
demo's latency row), sockperf ping-pong (p50, p99),
iperf3 one flow each way (Gbit/s, CPU per gigabyte, Python calls per segment).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from joyride.bench import tools
from joyride.bench.procstat import CLK_TCK, SystemCpu, descendants, snapshot
from joyride.bench.results import write_report
from joyride.bench.servers import (
    JOYRIDE,
    Endpoint,
    attach,
    detach,
    nginx_conf,
    service_stats,
    wait_port,
)
from joyride.processes import terminate
from joyride.testbed import Testbed

KERNEL_PORT: Final = 9300
JOY_PORT: Final = 8300
STEERED: Final = 20  # ports steered to Joyride: one per workload (port_of), with room
PORTS: Final = f"{JOY_PORT}-{JOY_PORT + STEERED - 1}"
BODY_KIB: Final = 1


@dataclass(frozen=True)
class Daemon:
    key: str
    title: str
    server: Callable[[int, Path], list[str]]
    client: Callable[[str, int, float], list[str]]
    parse: Callable[[str], dict[str, float] | None]
    metric: str  # the rate key in parse's result ("rps"), or "p50_us"
    # The accelerated side is the client: the server runs on the peer's kernel, and the
    # client in the Joyride namespace, on the kernel or under `joyride run --outgoing`.
    outgoing: bool = False


def redis_server(port: int, work: Path) -> list[str]:
    return ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
            "--protected-mode", "no", "--bind", "0.0.0.0", "--dir", str(work)]


def redis_client(test: str, pipeline: int = 1) -> Callable[[str, int, float], list[str]]:
    def argv(ip: str, port: int, seconds: float) -> list[str]:
        # The request count sets the run's length: about 140k req/s on the kernel here,
        # and 2.3M pipelined (sized for 600k before session 30, so a "3 s" pipelined run
        # lasted under one second, and a profile of it recorded mostly idle CPUs).
        n = max(20000, int(seconds * (140_000 if pipeline == 1 else 2_400_000)))
        return ["redis-benchmark", "-h", ip, "-p", str(port), "-c", "50", "-n", str(n),
                "-t", test, "-P", str(pipeline), "-q", "--csv"]
    return argv


def requests_made(parsed: dict[str, float], argv: list[str], wall_seconds: float) -> float:
    """The requests a client run made: its own count, or the count asked of
    redis-benchmark (``-n``: it makes exactly that many), or its rate over the run's wall
    time, which also counts the client's start (and ``joyride run``'s), a few tenths of a
    second in which it made none."""
    if parsed.get("requests"):
        return parsed["requests"]
    if "redis-benchmark" in argv:
        own = argv[argv.index("redis-benchmark"):]  # not a wrapper's -n
        if "-n" in own:
            return float(own[own.index("-n") + 1])
    return parsed["rps"] * wall_seconds


def parse_redis(text: str) -> dict[str, float] | None:
    """``--csv`` output: "test","rps",... one line per test."""
    for line in text.splitlines():
        parts = [p.strip('"') for p in line.split(",")]
        if len(parts) >= 2 and parts[0] in ("GET", "SET"):
            try:
                rps = float(parts[1])
            except ValueError:
                continue
            return {"rps": rps}
    return None


def nginx_server(workers: int) -> Callable[[int, Path], list[str]]:
    def argv(port: int, work: Path) -> list[str]:
        conf = nginx_conf(work / f"nginx-{port}", port, workers=workers)
        return ["nginx", "-c", str(conf), "-e", str(conf.parent / "error.log")]
    return argv


def wrk_client(close: bool, connections: int,
               path: str = "/body") -> Callable[[str, int, float], list[str]]:
    def argv(ip: str, port: int, seconds: float) -> list[str]:
        return tools.wrk_client(f"http://{ip}:{port}{path}", seconds, connections, close=close)
    return argv


def iperf3_server(port: int, work: Path) -> list[str]:
    return ["iperf3", "-s", "-4", "-p", str(port)]


def iperf3_client(reverse: bool) -> Callable[[str, int, float], list[str]]:
    """One flow; ``reverse``: the server (Joyride's side) sends (-R)."""
    def argv(ip: str, port: int, seconds: float) -> list[str]:
        return [*tools.iperf3_client(ip, port, seconds, 1), *(["-R"] if reverse else [])]
    return argv


def sockperf_server(port: int, work: Path) -> list[str]:
    return ["sockperf", "server", "--tcp", "-p", str(port)]


def sockperf_client(ip: str, port: int, seconds: float) -> list[str]:
    return tools.sockperf_pingpong(ip, port, seconds)


DAEMONS: Final = (
    Daemon("redis_get", "redis-benchmark GET, 50 connections", redis_server,
           redis_client("get"), parse_redis, "rps"),
    Daemon("redis_set", "redis-benchmark SET, 50 connections", redis_server,
           redis_client("set"), parse_redis, "rps"),
    Daemon("redis_get_p16", "redis-benchmark GET, 50 connections, pipelined -P 16",
           redis_server, redis_client("get", 16), parse_redis, "rps"),
    Daemon("nginx_1w", "nginx 1 worker, wrk 100 connections, 1 KiB", nginx_server(1),
           wrk_client(False, 100), tools.parse_wrk, "rps"),
    Daemon("nginx_2w", "nginx 2 workers, wrk 100 connections, 1 KiB", nginx_server(2),
           wrk_client(False, 100), tools.parse_wrk, "rps"),
    Daemon("nginx_64k", "nginx 2 workers, wrk 100 connections, 64 KiB", nginx_server(2),
           wrk_client(False, 100, "/body64k"), tools.parse_wrk, "rps"),
    Daemon("nginx_rr", "nginx 1 worker, wrk 1 connection, 1 KiB (the demo's latency row)",
           nginx_server(1), wrk_client(False, 1), tools.parse_wrk, "p50_us"),
    Daemon("connrate", "new connections/s (wrk -c50, Connection: close), nginx 1 worker",
           nginx_server(1), wrk_client(True, 50), tools.parse_wrk, "rps"),
    Daemon("sockperf", "sockperf ping-pong 64 B, 1 connection", sockperf_server,
           sockperf_client, tools.parse_sockperf, "p50_us"),
    Daemon("iperf3_recv", "iperf3 one flow, the peer sending to Joyride", iperf3_server,
           iperf3_client(False), tools.parse_iperf3, "gbps"),
    Daemon("iperf3_send", "iperf3 one flow, Joyride sending (-R)", iperf3_server,
           iperf3_client(True), tools.parse_iperf3, "gbps"),
    Daemon("redis_client_get", "redis-benchmark GET as the accelerated client "
           "(joyride run --outgoing), kernel redis", redis_server, redis_client("get"),
           parse_redis, "rps", outgoing=True),
    Daemon("connrate_client", "new connections/s as the accelerated client (wrk -c50, "
           "Connection: close, joyride run --outgoing), kernel nginx 1 worker",
           nginx_server(1), wrk_client(True, 50), tools.parse_wrk, "rps", outgoing=True),
)


@dataclass
class Sample:
    daemon: str
    stack: str  # "kernel" or "joyride"
    plane: str  # the service's data plane of this phase
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def _ticks(pids: set[int], table: dict[int, Any]) -> int:
    return sum(table[p].ticks for p in pids if p in table)


def port_of(d: Daemon, stack: str) -> int:
    """A port per workload: a server just stopped may hold the last one a while."""
    index = [x.key for x in DAEMONS].index(d.key)
    return (KERNEL_PORT if stack == "kernel" else JOY_PORT) + index


def client_command(bed: Testbed, d: Daemon, stack: str, seconds: float) -> list[str]:
    """The workload's client: on the peer against the server in Joyride's namespace, or,
    for an outgoing workload, in Joyride's namespace (under ``joyride run --outgoing``
    on Joyride) against the one kernel server on the peer: the client is what changes."""
    if not d.outgoing:
        return bed.peer.cmd(*d.client(bed.joy.ip, port_of(d, stack), seconds))
    argv = d.client(bed.peer.ip, port_of(d, "kernel"), seconds)
    if stack == "joyride":
        argv = [JOYRIDE, "run", "--outgoing", "--iface", bed.joy.ifname, "--", *argv]
    return bed.joy.cmd(*argv)


def measure(bed: Testbed, d: Daemon, stack: str, plane: str, server_pids: list[int],
            svc_pid: int | None, seconds: float) -> Sample:
    before = snapshot()
    server_tree = descendants(server_pids, before)
    sys_before = SystemCpu.read()
    stats_before = service_stats(bed) if svc_pid is not None and stack == "joyride" else {}
    argv = client_command(bed, d, stack, seconds)
    result = tools.run_client(argv, timeout=seconds * 10 + 60)
    sys_after = SystemCpu.read()
    after = snapshot()
    sample = Sample(d.key, stack, plane)
    parsed = d.parse(result.stdout) if result.ok else None
    if parsed is None:
        sample.error = result.tail()
        return sample
    client_s = result.cpu_seconds
    machine_s = (sys_after.busy - sys_before.busy) / CLK_TCK
    server_s = (_ticks(server_tree, after) - _ticks(server_tree, before)) / CLK_TCK
    m = dict(parsed)
    m["cpu_machine_s"] = machine_s
    if d.metric == "rps":
        requests = requests_made(parsed, argv, result.wall_seconds)
        m["requests"] = requests
        m["cpu_machine_us_per_req"] = machine_s / requests * 1e6
        m["cpu_server_us_per_req"] = server_s / requests * 1e6
        m["cpu_client_us_per_req"] = client_s / requests * 1e6
        if svc_pid is not None and stack == "joyride":
            svc = {svc_pid} | descendants([svc_pid], after)
            svc_s = (_ticks(svc, after) - _ticks(svc, before)) / CLK_TCK
            m["cpu_service_us_per_req"] = svc_s / requests * 1e6
            calls = python_calls(stats_before, service_stats(bed))
            if calls is not None:
                m["python_calls_per_req"] = calls / requests
    if d.metric == "gbps":  # CPU per gigabyte, and Python calls per 1448-byte segment
        gigabytes = parsed["bytes"] / 1e9
        m["cpu_machine_s_per_gb"] = machine_s / gigabytes
        if svc_pid is not None and stack == "joyride":
            svc = {svc_pid} | descendants([svc_pid], after)
            m["cpu_service_s_per_gb"] = (_ticks(svc, after) - _ticks(svc, before)) / (
                CLK_TCK * gigabytes)
            calls = python_calls(stats_before, service_stats(bed))
            if calls is not None:
                m["python_calls_per_seg"] = calls / (parsed["bytes"] / 1448)
    sample.metrics = m
    return sample


def python_calls(before: dict[str, Any], after: dict[str, Any]) -> float | None:
    """Returns of the C data plane's loop to Python between two ``stats`` snapshots
    (None with the Python data plane, where every segment is Python's work)."""
    def returns(doc: dict[str, Any]) -> int | None:
        plane = (doc.get("datapath") or {}).get("dataplane")
        if not plane:
            return None
        # With workers, each stop for Python returns every worker's loop: count stops.
        return int(plane["stops"] if "stops" in plane else plane.get("returns", 0))
    first, last = returns(before), returns(after)
    if first is None or last is None:
        return None
    return float(last - first - 1)  # the stats request itself woke it once


def start_server(bed: Testbed, d: Daemon, stack: str, work: Path, log: Path) -> Endpoint:
    if d.outgoing:  # the kernel server on the peer, for both clients
        port = port_of(d, "kernel")
        with log.open("ab") as out:
            proc = bed.peer.popen(*d.server(port, work), stdout=out, stderr=subprocess.STDOUT)
        ep = Endpoint(d.key, "peer", {d.key: port}, [proc])
        wait_port(bed.joy, bed.peer.ip, port, 20.0, ep, log)
        return ep
    port = port_of(d, stack)
    argv = d.server(port, work)
    if stack == "joyride":
        argv = [JOYRIDE, "run", "--iface", bed.joy.ifname, "--", *argv]
    with log.open("ab") as out:
        proc = bed.joy.popen(*argv, stdout=out, stderr=subprocess.STDOUT)
    ep = Endpoint(d.key, stack, {d.key: port}, [proc])
    wait_port(bed.peer, bed.joy.ip, port, 20.0, ep, log)
    return ep


def run(daemons: list[Daemon], planes: list[str], reps: int, seconds: float,
        progress: Callable[[str], None] = print, *, queues: int = 1,
        workers: str = "1") -> list[Sample]:
    """Each daemon on the kernel and on Joyride, alternating; the veth pair has
    ``queues`` rx queues, which ``workers`` data-plane workers serve."""
    samples: list[Sample] = []
    with Testbed(rx_queues=queues) as bed, \
            tempfile.TemporaryDirectory(prefix="joyride-daemons-") as tmp:
        tools.prepare_load_generator(bed.peer)
        work = Path(tmp)
        for plane in planes:
            os.environ["JOYRIDE_DATAPLANE"] = plane.split("+")[0]
            try:
                svc = attach(bed, PORTS, "--workers", workers)
            finally:
                os.environ.pop("JOYRIDE_DATAPLANE", None)
            try:
                for d in daemons:
                    stacks = ("kernel",) if d.outgoing else ("kernel", "joyride")
                    eps = [start_server(bed, d, s, work, work / f"{d.key}-{s}.log")
                           for s in stacks]
                    try:
                        for rep in range(reps):
                            order = ("kernel", "joyride") if rep % 2 == 0 else (
                                "joyride", "kernel")
                            for stack in order:
                                ep = eps[0] if stack == "kernel" else eps[-1]
                                s = measure(bed, d, stack, plane, ep.pids, svc, seconds)
                                samples.append(s)
                                progress(f"{plane:6} {d.key:14} {stack:7} "
                                         + (s.error or _brief(s.metrics)))
                    finally:
                        for ep in eps:
                            terminate(ep.procs, 5.0)
            finally:
                detach(bed)
    return samples


def _brief(m: dict[str, float]) -> str:
    keys = ("rps", "p50_us", "p99_us", "cpu_machine_us_per_req", "cpu_service_us_per_req",
            "python_calls_per_req", "gbps", "cpu_machine_s_per_gb", "cpu_service_s_per_gb")
    return "  ".join(f"{k}={m[k]:.4g}" for k in keys if k in m)


RATIO_METRICS: Final = ("rps", "p50_us", "p99_us", "cpu_machine_us_per_req", "gbps",
                        "cpu_machine_s_per_gb")


def summarize(samples: list[Sample]) -> list[dict[str, Any]]:
    """Per workload and plane: each stack's median of every metric, and for the metrics
    both stacks have, the ratio of the medians (``ratio_<metric>``) with the lowest and
    highest ratio of one repetition's pair (``ratio_<metric>_lo``/``_hi``): the kernel's
    and Joyride's runs of a repetition follow each other, so their ratio is what the
    machine's drift over the whole run disturbs least."""
    rows: list[dict[str, Any]] = []
    keys = sorted({(s.daemon, s.plane) for s in samples}, key=lambda k: (k[1], k[0]))
    for daemon, plane in keys:
        runs = [s for s in samples if s.daemon == daemon and s.plane == plane]
        group = [s for s in runs if not s.error]
        row: dict[str, Any] = {"daemon": daemon, "plane": plane}
        for stack in ("kernel", "joyride"):
            ms = [s.metrics for s in group if s.stack == stack]
            for k in sorted({k for m in ms for k in m}):
                vals = [m[k] for m in ms if k in m]
                row[f"{stack}_{k}"] = statistics.median(vals)
        # Paired by repetition, failed runs included, so that one cannot shift the rest.
        kernel = [{} if s.error else s.metrics for s in runs if s.stack == "kernel"]
        joyride = [{} if s.error else s.metrics for s in runs if s.stack == "joyride"]
        for k in RATIO_METRICS:
            if f"kernel_{k}" in row and f"joyride_{k}" in row and row[f"kernel_{k}"]:
                row[f"ratio_{k}"] = row[f"joyride_{k}"] / row[f"kernel_{k}"]
                pairs = paired_ratios(kernel, joyride, k)
                if len(pairs) > 1:
                    row[f"ratio_{k}_lo"], row[f"ratio_{k}_hi"] = min(pairs), max(pairs)
        rows.append(row)
    return rows


def paired_ratios(kernel: list[dict[str, float]], joyride: list[dict[str, float]],
                  key: str) -> list[float]:
    """Joyride over the kernel, repetition by repetition (``run`` measures one of each
    per repetition, in alternating order); a pair missing the metric (a failed run) is
    left out."""
    return [j[key] / k[key] for k, j in zip(kernel, joyride, strict=False)
            if key in k and key in j and k[key]]


def ratio_cell(row: dict[str, Any], key: str) -> str:
    """"0.89×", and "0.89× (0.84–0.97)" when repetitions give a spread."""
    ratio = row.get(f"ratio_{key}")
    if not ratio:
        return "–"
    lo, hi = row.get(f"ratio_{key}_lo"), row.get(f"ratio_{key}_hi")
    return f"{ratio:.2f}×" + (f" ({lo:.2f}–{hi:.2f})" if lo is not None else "")


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| workload | plane | metric | kernel | Joyride | Joyride/kernel |",
           "|---|---|---|---:|---:|---:|"]
    for r in rows:
        for k, label in (("rps", "requests/s"), ("p50_us", "p50 (µs)"), ("p99_us", "p99 (µs)"),
                         ("cpu_machine_us_per_req", "machine CPU/request (µs)"),
                         ("gbps", "Gbit/s"), ("cpu_machine_s_per_gb", "machine CPU/GB (s)")):
            if f"joyride_{k}" not in r:
                continue
            kern = r.get(f"kernel_{k}")
            out.append(f"| {r['daemon']} | {r['plane']} | {label} | "
                       f"{kern:,.4g} | {r[f'joyride_{k}']:,.4g} | {ratio_cell(r, k)} |")
        for k, label in (("cpu_service_us_per_req", "service CPU/request (µs)"),
                         ("python_calls_per_req", "Python calls/request"),
                         ("cpu_service_s_per_gb", "service CPU/GB (s)"),
                         ("python_calls_per_seg", "Python calls/segment")):
            if f"joyride_{k}" in r:
                out.append(f"| {r['daemon']} | {r['plane']} | {label} | – | "
                           f"{r[f'joyride_{k}']:.4g} | – |")
    return "\n".join(out)


def side_by_side(rows: list[dict[str, Any]]) -> str:
    """One line per workload and metric: the kernel, Joyride on the C data plane and on
    the Python one, each ratio against the kernel samples of its own phase."""
    by = {(r["daemon"], r["plane"]): r for r in rows}
    out = ["| workload | metric | kernel | Joyride, C data plane | ratio | "
           "Joyride, Python data plane | ratio |", "|---|---|---:|---:|---:|---:|---:|"]
    metrics = (("rps", "requests/s"), ("p50_us", "p50 (µs)"), ("p99_us", "p99 (µs)"),
               ("cpu_machine_us_per_req", "machine CPU per request (µs)"),
               ("cpu_service_us_per_req", "service CPU per request (µs)"),
               ("python_calls_per_req", "Python calls per request"),
               ("gbps", "Gbit/s"), ("cpu_machine_s_per_gb", "machine CPU per GB (s)"),
               ("cpu_service_s_per_gb", "service CPU per GB (s)"),
               ("python_calls_per_seg", "Python calls per segment"))
    for d in DAEMONS:
        c, py = by.get((d.key, "c")), by.get((d.key, "python"))
        if c is None and py is None:
            continue
        for k, label in metrics:
            cells = []
            for r in (c, py):
                if r is None or f"joyride_{k}" not in r:
                    cells += ["–", "–"]
                    continue
                cells += [_fmt(r[f"joyride_{k}"]), ratio_cell(r, k)]
            if cells == ["–"] * 4:
                continue
            base = (c or py or {}).get(f"kernel_{k}")
            out.append(f"| {d.title} | {label} | {_fmt(base) if base else '–'} | "
                       + " | ".join(cells) + " |")
    return "\n".join(out)


def _fmt(v: float) -> str:
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 repetitions of 2 s")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--planes", default="c,python")
    ap.add_argument("--only", default="", help="comma-separated workload keys")
    ap.add_argument("--queues", type=int, default=1, help="rx queues of the veth pair")
    ap.add_argument("--workers", default="auto", help="joyride attach --workers (N or auto)")
    ap.add_argument("--json", default="results/daemons.json")
    ap.add_argument("--markdown", default="results/daemons.md")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces, XDP)", file=sys.stderr)
        return 2
    reps, seconds = (3, 2.0) if args.quick else (args.reps, args.seconds)
    chosen = [d for d in DAEMONS if not args.only or d.key in args.only.split(",")]
    planes = [p for p in args.planes.split(",") if p]
    started = time.time()
    samples = run(chosen, planes, reps, seconds, queues=args.queues, workers=args.workers)
    rows = summarize(samples)
    print(table(rows))
    write_report({"reps": reps, "seconds": seconds, "queues": args.queues,
                  "workers": args.workers, "rows": rows,
                  "samples": [s.__dict__ for s in samples]},
                 started, args.json, side_by_side(rows), args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
