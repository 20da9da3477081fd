"""System calls per request: the application's and the service's, the kernel's alongside.

``python -m joyride.bench.syscalls [--only redis_get,nginx_2w,connrate] [--seconds 3]``
(as root) builds the daemons benchmark's test bed (``joyride.bench.daemons``), and for
each workload runs the same server on the kernel and under ``joyride run``, drives it
with the same client, and counts the system calls of the server's processes and of the
service while it does, with ``perf trace -s`` (per thread, summed per role). Issue 17
asks for these next to the kernel's: with the application's bytes on a unix socket the
server makes the same calls as on TCP, and the service adds its own.

The tracing slows every traced call (a tracepoint and a ring-buffer record each), so the
rates here are not the benchmark's and batching may be a little thinner; the counts per
request are what this reports. It writes JSON and a markdown table.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

from joyride.bench import tools
from joyride.bench.daemons import DAEMONS, JOYRIDE, PORTS, Daemon, port_of, start_server
from joyride.bench.procstat import descendants, snapshot
from joyride.bench.results import write_report
from joyride.bench.servers import attach, detach
from joyride.processes import terminate
from joyride.testbed import Testbed

DEFAULT_WORKLOADS: Final = "redis_get,nginx_2w,connrate"
PERF_START: Final = 1.0  # seconds perf trace is given to attach before the client starts
#: ``perf trace -s``'s per-thread header ("  comm (tid), N events, P%") and table rows.
THREAD_LINE: Final = re.compile(r"^\s*(.+?) \((\d+)\), \d+ events")
ROW: Final = re.compile(r"^\s+([a-z_0-9]+)\s+(\d+)\s+(\d+)\s")


def parse_summary(text: str) -> dict[int, Counter[str]]:
    """``perf trace -s`` output: per thread id, calls by system call name."""
    out: dict[int, Counter[str]] = {}
    current: Counter[str] | None = None
    for line in text.splitlines():
        head = THREAD_LINE.match(line)
        if head:
            current = out.setdefault(int(head.group(2)), Counter())
            continue
        row = ROW.match(line)
        if row and current is not None and row.group(1) not in ("syscall",):
            current[row.group(1)] += int(row.group(2))
    return out


def threads_of(pids: set[int]) -> set[int]:
    """Every thread id of these processes now."""
    tids: set[int] = set()
    for pid in pids:
        try:
            tids.update(int(t) for t in os.listdir(f"/proc/{pid}/task"))
        except FileNotFoundError:
            continue
    return tids


def traced_run(bed: Testbed, d: Daemon, stack: str, server_pids: list[int],
               service_pid: int | None, seconds: float) -> dict[str, Any]:
    """One client run with the server tree (and the service) traced: requests, and calls
    per request by role and by name."""
    roles: dict[str, set[int]] = {"application": threads_of(
        set(server_pids) | descendants(server_pids, snapshot()))}
    if stack == "joyride" and service_pid is not None:
        roles["service"] = threads_of({service_pid} | descendants([service_pid], snapshot()))
    every = set().union(*roles.values())
    summary = Path(tempfile.mkstemp(prefix="joyride-perf-trace-")[1])
    perf = subprocess.Popen(
        ["perf", "trace", "-s", "-o", str(summary), "-t",
         ",".join(str(t) for t in sorted(every))],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(PERF_START)
        argv = d.client(bed.joy.ip, port_of(d, stack), seconds)
        result = tools.run_client(bed.peer.cmd(*argv), timeout=seconds * 10 + 60)
    finally:
        perf.send_signal(signal.SIGINT)
        try:
            perf.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            perf.kill()
            perf.communicate()
        text = summary.read_text(errors="replace")
        summary.unlink()
    parsed = d.parse(result.stdout) if result.ok else None
    if parsed is None:
        return {"error": result.tail()}
    requests = parsed.get("requests") or parsed["rps"] * result.wall_seconds
    per_thread = parse_summary(text)
    out: dict[str, Any] = {"requests": requests, "rps_traced": parsed["rps"]}
    for role, tids in roles.items():
        calls: Counter[str] = Counter()
        for tid in tids:
            calls.update(per_thread.get(tid, Counter()))
        out[role] = {name: n / requests for name, n in calls.most_common()}
        out[f"{role}_total"] = sum(calls.values()) / requests
    return out


def run(keys: list[str], seconds: float) -> dict[str, Any]:
    chosen = [d for d in DAEMONS if d.key in keys and not d.outgoing and d.metric == "rps"]
    rows: dict[str, Any] = {}
    with Testbed() as bed, tempfile.TemporaryDirectory(prefix="joyride-syscalls-") as tmp:
        tools.prepare_load_generator(bed.peer)
        work = Path(tmp)
        svc = attach(bed, PORTS)
        try:
            for d in chosen:
                rows[d.key] = {}
                for stack in ("kernel", "joyride"):
                    ep = start_server(bed, d, stack, work, work / f"{d.key}-{stack}.log")
                    try:
                        rows[d.key][stack] = traced_run(bed, d, stack, ep.pids, svc, seconds)
                    finally:
                        terminate(ep.procs, 5.0)
                    print(f"{d.key:10} {stack:7} " + _brief(rows[d.key][stack]), flush=True)
        finally:
            detach(bed)
    return rows


def _brief(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"error: {row['error']}"
    return "  ".join(f"{role} {row[f'{role}_total']:.2f}/req"
                     for role in ("application", "service") if f"{role}_total" in row)


def table(rows: dict[str, Any]) -> str:
    lines = ["| workload | kernel: application | Joyride: application | Joyride: service |",
             "|---|---|---|---|"]
    for key, by_stack in rows.items():
        cells = []
        for stack, role in (("kernel", "application"), ("joyride", "application"),
                            ("joyride", "service")):
            row = by_stack.get(stack, {})
            if role not in row:
                cells.append("–")
                continue
            top = ", ".join(f"{name} {n:.2f}" for name, n in list(row[role].items())[:6]
                            if n >= 0.01)
            cells.append(f"**{row[f'{role}_total']:.2f}** ({top})")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=DEFAULT_WORKLOADS, help="comma-separated workload keys")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--json", default="results/syscalls.json")
    ap.add_argument("--markdown", default="results/syscalls.md")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces, XDP, perf)", file=sys.stderr)
        return 2
    started = time.time()
    rows = run(args.only.split(","), args.seconds)
    print(table(rows))
    write_report({"seconds": args.seconds, "joyride": JOYRIDE, "rows": rows}, started,
                 args.json, table(rows), args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
