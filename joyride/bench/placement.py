"""Where the tasks ran, window by window, against the rate each window made.

``python -m joyride.bench.placement [redis_get] --runs 3`` builds a test bed, starts a
redis workload's server on the kernel's TCP or under ``joyride run`` (``--stack``), and
runs redis-benchmark against it. Every ``--sample-ms`` it reads the CPU that each task
last ran on (``/proc/<pid>/stat``, field 39) for the three tasks that matter: the
network service's data-plane thread, the server and the client. redis-benchmark prints
its rate four times a second; each line is stamped as it arrives, so the rate of each
window sits beside where the tasks were while it was made.

On a machine with two CPUs, Joyride runs three busy tasks where the kernel runs two, and
the scheduler places them afresh every few hundred milliseconds. This says which
placement each window had and what it was worth, which is the spread of redis GET's
samples in the daemons benchmark (docs/dataplane.md, "Three tasks on two CPUs:
placement, measured"). ``--follow`` repeats the experiment of pinning the service's
threads to the CPU its application last ran on, every that many seconds; it was
measured and not kept.

It prints a line per window and a summary per placement, and writes JSON
(``--json``). Sampling costs a few ``/proc`` reads every 10 ms, on whichever CPU is free.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from joyride.bench import daemons, tools
from joyride.bench.procstat import descendants, read_pid_stat, snapshot
from joyride.bench.results import save
from joyride.bench.servers import attach, detach
from joyride.processes import terminate
from joyride.testbed import Testbed

WORKLOADS: Final = ("redis_get", "redis_set", "redis_get_p16")
PROGRESS: Final = re.compile(r"(GET|SET): rps=([0-9.]+)")
SETTLED: Final = 0.6  # a window has a placement when this share of its samples agree
TASKS: Final = ("service", "server", "client")


def placement_of(where: Mapping[str, int], tasks: Sequence[str]) -> str:
    """Which tasks share a CPU at one instant: "client | service+server" ("?" when a
    task was not found)."""
    if any(t not in where for t in tasks):
        return "?"
    groups: dict[int, list[str]] = {}
    for t in tasks:
        groups.setdefault(where[t], []).append(t)
    return " | ".join(sorted("+".join(g) for g in groups.values()))


@dataclass
class Window:
    start: float  # seconds since the client started
    rate: float | None = None  # requests a second, from the client's progress lines
    seen: Counter[str] = field(default_factory=Counter)  # samples per placement

    def placement(self) -> str:
        """The placement of at least ``SETTLED`` of the window's samples, or "moving"
        when the tasks changed places within it."""
        if not self.seen:
            return "?"
        best, n = self.seen.most_common(1)[0]
        return best if n >= SETTLED * sum(self.seen.values()) else "moving"


def progress_rates(text: str) -> list[float]:
    """The rates in redis-benchmark's progress output (lines ended by carriage
    returns, the last one the summary)."""
    return [float(m.group(2)) for m in PROGRESS.finditer(text)]


def stamped_progress(stream: IO[bytes], t0: float, out: list[tuple[float, float]]) -> None:
    """Read the client's output until it ends; append (seconds since ``t0``, rate) for
    each progress line as it arrives."""
    line = bytearray()
    while chunk := stream.read1(4096):  # type: ignore[attr-defined]
        for byte in chunk:
            if byte in (0x0D, 0x0A):
                for rate in progress_rates(line.decode(errors="replace")):
                    out.append((time.monotonic() - t0, rate))
                line.clear()
            else:
                line.append(byte)


def windows_of(samples: Sequence[tuple[float, str]],
               rates: Sequence[tuple[float, float]], width: float) -> list[Window]:
    """Group placement samples and rate lines into windows ``width`` seconds long. A
    rate line covers the time before it, so it belongs to the window it ends in."""
    found: dict[int, Window] = {}
    for at, placed in samples:
        w = found.setdefault(int(at // width), Window(int(at // width) * width))
        w.seen[placed] += 1
    per: dict[int, list[float]] = {}
    for at, rate in rates:
        per.setdefault(int(at // width), []).append(rate)
    for index, values in per.items():
        if index in found:
            found[index].rate = statistics.fmean(values)
    return [found[i] for i in sorted(found) if found[i].rate is not None]


def summary(windows: Sequence[Window]) -> list[dict[str, Any]]:
    """Per placement: its share of the windows and their median rate."""
    by: dict[str, list[float]] = {}
    for w in windows:
        by.setdefault(w.placement(), []).append(w.rate or 0.0)
    total = max(1, len(windows))
    return sorted(({"placement": k, "windows": len(v), "share": len(v) / total,
                    "median_rate": statistics.median(v)} for k, v in by.items()),
                  key=lambda row: -row["windows"])


class Follower:
    """The experiment not kept: every ``period`` seconds, pin the service's threads to
    the CPU the application last ran on."""

    def __init__(self, service: int, app: int, period: float) -> None:
        self.service, self.app, self.period = service, app, period
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="placement-follow",
                                       daemon=True)

    def _pin(self, cpus: set[int]) -> None:
        for tid in os.listdir(f"/proc/{self.service}/task"):
            try:
                os.sched_setaffinity(int(tid), cpus)
            except OSError:
                continue  # the thread ended

    def _run(self) -> None:
        pinned = -1
        while not self.stop.wait(self.period):
            st = read_pid_stat(self.app)
            if st is not None and st.cpu != pinned:
                pinned = st.cpu
                self._pin({pinned})
        self._pin(os.sched_getaffinity(0))


def sample_placement(pids: Mapping[str, int], client: subprocess.Popen[bytes],
                     period: float) -> list[tuple[float, str]]:
    t0 = time.monotonic()
    out: list[tuple[float, str]] = []
    while client.poll() is None:
        where = {}
        for task, pid in pids.items():
            st = read_pid_stat(pid)
            if st is not None and st.cpu >= 0:
                where[task] = st.cpu
        out.append((time.monotonic() - t0, placement_of(where, [t for t in TASKS if t in pids])))
        time.sleep(period)
    return out


def one_run(bed: Testbed, d: daemons.Daemon, stack: str, pids: dict[str, int],
            seconds: float, period: float, width: float) -> list[Window]:
    argv = daemons.client_command(bed, d, stack, seconds)
    argv = [a for a in argv if a != "--csv"]  # progress lines, not only the summary
    client = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    rates: list[tuple[float, float]] = []
    assert client.stdout is not None
    reader = threading.Thread(target=stamped_progress, args=(client.stdout, t0, rates),
                              daemon=True)
    reader.start()
    try:
        # `ip netns exec` replaces itself with the client: its pid is redis-benchmark's.
        samples = sample_placement({**pids, "client": client.pid}, client, period)
    finally:
        terminate([client], 5.0)
        reader.join(5.0)
    return windows_of(samples, rates, width)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workload", nargs="?", default="redis_get", choices=WORKLOADS)
    ap.add_argument("--stack", choices=("joyride", "kernel"), default="joyride")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each run")
    ap.add_argument("--window", type=float, default=0.5, help="window, seconds")
    ap.add_argument("--sample-ms", type=float, default=10.0)
    ap.add_argument("--follow", type=float, default=0.0, metavar="SECONDS",
                    help="pin the service to its application's CPU this often (the "
                         "experiment measured and not kept)")
    ap.add_argument("--json", default="results/placement.json")
    args = ap.parse_args(argv)
    d = next(x for x in daemons.DAEMONS if x.key == args.workload)
    started = time.time()
    runs: list[list[Window]] = []
    with Testbed() as bed, tempfile.TemporaryDirectory(prefix="joyride-placement-") as tmp:
        work = Path(tmp)
        tools.prepare_load_generator(bed.peer)
        svc = attach(bed, daemons.PORTS)
        follower: Follower | None = None
        try:
            ep = daemons.start_server(bed, d, args.stack, work, work / "server.log")
            try:
                tree = descendants(ep.pids, snapshot())
                server = next(p for p in sorted(tree)
                              if (st := read_pid_stat(p)) and st.comm == "redis-server")
                pids = {"server": server} | ({"service": svc} if args.stack == "joyride"
                                             else {})
                if args.follow > 0 and args.stack == "joyride":
                    follower = Follower(svc, server, args.follow)
                    follower.thread.start()
                for run in range(args.runs):
                    windows = one_run(bed, d, args.stack, pids, args.seconds,
                                      args.sample_ms / 1000, args.window)
                    runs.append(windows)
                    print(f"run {run}")
                    for w in windows:
                        print(f"  {w.start:5.1f} s  {(w.rate or 0) / 1000:6.1f}k/s  "
                              f"{w.placement()}")
            finally:
                if follower is not None:
                    follower.stop.set()
                    follower.thread.join(5.0)
                terminate(ep.procs, 5.0)
        finally:
            detach(bed)
    rows = summary([w for ws in runs for w in ws])
    print(f"\n{d.title}, {args.stack}"
          + (f", the service following redis every {args.follow:g} s" if follower else ""))
    for row in rows:
        print(f"  {row['placement']:28} {row['share']:5.0%} of windows, median "
              f"{row['median_rate'] / 1000:.1f}k/s")
    save({"measured_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
          "kernel": os.uname().release, "workload": d.key, "stack": args.stack,
          "follow_s": args.follow, "window_s": args.window, "summary": rows,
          "runs": [[{"start": w.start, "rate": w.rate, "placement": w.placement()}
                    for w in ws] for ws in runs]}, Path(args.json))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
