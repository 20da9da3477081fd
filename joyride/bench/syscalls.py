"""System calls per request: the application's and the service's, the kernel's alongside.

``python -m joyride.bench.syscalls [--only redis_get,nginx_2w,connrate] [--seconds 3]``
(as root) builds the daemons benchmark's test bed (``joyride.bench.daemons``), and for
each workload runs the same server on the kernel and under ``joyride run``, drives it
with the same client, and counts the system calls of the server's processes and of the
service while it does. For the accelerated client (``redis_client_get``) the
application is the client, run under ``perf stat`` from its start (the counts then
include its start-up and ``joyride run``'s, a few thousand calls against hundreds of
thousands of requests). Issue 17 asks for these next to the kernel's.

The counting is the kernel's own (``perf stat`` on the system-call tracepoints of the
role's threads: ``raw_syscalls:sys_enter`` for the total, ``syscalls:sys_enter_NAME``
for the calls named in ``NAMES``, the rest as "other"): each counted call costs a
tracepoint hit and nothing is recorded, so the rates stay near the benchmark's. An
earlier version traced with ``perf trace -s``, which slowed the service so much (a
fifth of the rate) that ring-mode connections ran as streams, most likely by missing
their claim deadline (a traced ring-mode redis run of 2026-12-06 counted the service's
``sendmsg`` and ``readv`` at half a call per request each). It writes JSON and a
markdown table.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

from joyride.bench import tools
from joyride.bench.daemons import (
    DAEMONS,
    JOYRIDE,
    PORTS,
    Daemon,
    client_command,
    requests_made,
    start_server,
)
from joyride.bench.procstat import descendants, snapshot
from joyride.bench.results import write_report
from joyride.bench.servers import attach, detach
from joyride.processes import terminate
from joyride.testbed import Testbed

DEFAULT_WORKLOADS: Final = "redis_get,nginx_2w,connrate"
PERF_START: Final = 1.0  # seconds perf stat is given to attach before the client starts
TOTAL: Final = "raw_syscalls:sys_enter"
#: The calls counted by name (those a server or the service makes per request or per
#: connection); any other call counts in "other".
NAMES: Final = (
    "read", "write", "readv", "writev", "pread64", "recvfrom", "sendto", "recvmsg",
    "sendmsg", "recvmmsg", "sendmmsg", "sendfile64", "epoll_wait", "epoll_pwait",
    "epoll_pwait2", "epoll_ctl", "poll", "ppoll", "select", "pselect6", "futex", "fcntl",
    "ioctl", "accept", "accept4", "socket", "connect", "bind", "listen", "shutdown",
    "close", "openat", "newfstatat", "fstat", "statx", "lseek", "getsockname",
    "getpeername", "getsockopt", "setsockopt", "sched_yield", "nanosleep",
    "clock_nanosleep", "mmap", "munmap", "madvise", "brk", "getpid", "eventfd2",
)
TRACEFS: Final = (Path("/sys/kernel/tracing/events/syscalls"),
                  Path("/sys/kernel/debug/tracing/events/syscalls"))


def counted_names() -> list[str]:
    """The names of ``NAMES`` this kernel has a tracepoint for."""
    for root in TRACEFS:
        if root.is_dir():
            return [n for n in NAMES if (root / f"sys_enter_{n}").is_dir()]
    return []


def parse_stat(text: str) -> Counter[str]:
    """``perf stat -x,`` output: calls by name, with "other" for the total's rest."""
    total = 0
    calls: Counter[str] = Counter()
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) < 3 or not fields[0].strip().isdigit():
            continue
        count, event = int(fields[0]), fields[2].strip()
        if event == TOTAL:
            total = count
        elif event.startswith("syscalls:sys_enter_"):
            calls[event.removeprefix("syscalls:sys_enter_")] += count
    named = sum(calls.values())
    if total > named:
        calls["other"] = total - named
    return Counter({name: n for name, n in calls.items() if n})


def threads_of(pids: set[int]) -> set[int]:
    """Every thread id of these processes now."""
    tids: set[int] = set()
    for pid in pids:
        try:
            tids.update(int(t) for t in os.listdir(f"/proc/{pid}/task"))
        except FileNotFoundError:
            continue
    return tids


def perf_stat(names: list[str], out: Path) -> list[str]:
    """``perf stat`` counting the system calls (in total and by name) into out."""
    events = ",".join([TOTAL, *(f"syscalls:sys_enter_{n}" for n in names)])
    return ["perf", "stat", "-x,", "-o", str(out), "-e", events]


def start_counting(tids: set[int], names: list[str], out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*perf_stat(names, out), "-t", ",".join(str(t) for t in sorted(tids))],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_counting(perf: subprocess.Popen[bytes]) -> None:
    perf.send_signal(signal.SIGINT)
    try:
        perf.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        perf.kill()
        perf.communicate()


def traced_run(bed: Testbed, d: Daemon, stack: str, server_pids: list[int],
               service_pid: int | None, seconds: float) -> dict[str, Any]:
    """One client run with the application (the server tree, or for an outgoing workload
    the client) and the service counted: requests, and calls per request by role and by
    name."""
    roles: dict[str, set[int]] = {} if d.outgoing else {"application": threads_of(
        set(server_pids) | descendants(server_pids, snapshot()))}
    if stack == "joyride" and service_pid is not None:
        roles["service"] = threads_of({service_pid} | descendants([service_pid], snapshot()))
    names = counted_names()
    outs = {role: Path(tempfile.mkstemp(prefix=f"joyride-syscalls-{role}-")[1])
            for role in ("application", *roles)}
    perfs = [start_counting(tids, names, outs[role]) for role, tids in roles.items()]
    try:
        time.sleep(PERF_START)
        argv = client_command(bed, d, stack, seconds)
        if d.outgoing:
            argv = [*perf_stat(names, outs["application"]), "--", *argv]
        result = tools.run_client(argv, timeout=seconds * 10 + 60)
    finally:
        for perf in perfs:
            stop_counting(perf)
        texts = {role: path.read_text(errors="replace") for role, path in outs.items()}
        for path in outs.values():
            path.unlink()
    parsed = d.parse(result.stdout) if result.ok else None
    if parsed is None:
        return {"error": result.tail()}
    requests = requests_made(parsed, argv, result.wall_seconds)
    out: dict[str, Any] = {"requests": requests, "rps_counted": parsed["rps"]}
    for role in outs:
        calls = parse_stat(texts[role])
        out[role] = {name: n / requests for name, n in calls.most_common()}
        out[f"{role}_total"] = sum(calls.values()) / requests
    return out


def run(keys: list[str], seconds: float) -> dict[str, Any]:
    chosen = [d for d in DAEMONS if d.key in keys and d.metric == "rps"]
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
        client = any(d.key == key and d.outgoing for d in DAEMONS)
        lines.append(f"| {key}{' (the application: the client)' if client else ''} | "
                     + " | ".join(cells) + " |")
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
