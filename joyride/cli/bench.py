"""``joyride bench [--quick] [--json FILE]``: Joyride against the kernel, side by side.

Builds fresh veth test beds (one per MTU), runs the same clients against the same
servers on the kernel and on Joyride (service mode through ``joyride run``, embedded
mode through ``joyride.embed``), alternating, and writes the JSON results, a markdown
table and a PNG plot. Everything it creates is removed at the end, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from joyride.errors import JoyrideError, PrivilegeError


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "bench", help="benchmark Joyride against the kernel on a veth test bed",
        description="Side-by-side benchmarks: RR latency, throughput, transactions/s, "
                    "new connections/s, CPU and memory, kernel vs Joyride.")
    parser.add_argument("--quick", action="store_true",
                        help="3 repetitions of 1 s per point (a few minutes)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="results JSON (default: results/bench.json)")
    parser.add_argument("--out", type=Path, default=Path("results"), metavar="DIR",
                        help="folder for bench.json, bench.md and bench.png")
    parser.add_argument("--repetitions", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="per measured point")
    parser.add_argument("--modes", default="service,embedded",
                        help="Joyride modes to measure (comma-separated)")
    parser.add_argument("--mtus", default="1500,3498", help="MTUs (throughput at each)")
    parser.add_argument("--workloads", default=None, metavar="PREFIXES",
                        help="only workloads whose key starts with one of these "
                             "(comma-separated: rr_64B, throughput_1flow, wrk_, new_conn...)")
    parser.add_argument("--no-xsk", action="store_true",
                        help="skip the raw AF_XDP packet-rate measurement")
    parser.set_defaults(func=run)


def _sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # unwind through every finally: beds, servers, service


def run(args: argparse.Namespace) -> int:
    from joyride.bench import plot, results, runner
    from joyride.bench.progress import Progress

    if os.geteuid() != 0:
        raise PrivilegeError("benchmarks build network namespaces and attach XDP: run as root")
    cfg = runner.BenchConfig.quick_run() if args.quick else runner.BenchConfig()
    if args.repetitions is not None:
        cfg.repetitions = args.repetitions
    if args.seconds is not None:
        cfg.seconds = args.seconds
    cfg.modes = tuple(m for m in args.modes.split(",") if m)
    cfg.mtus = tuple(int(m) for m in args.mtus.split(",") if m)
    cfg.xsk = not args.no_xsk
    if args.workloads:
        cfg.only = tuple(p for p in args.workloads.split(",") if p)
    unknown = set(cfg.modes) - {"service", "embedded"}
    if unknown:
        raise JoyrideError(f"unknown mode(s) {', '.join(sorted(unknown))}: "
                           "choose from service, embedded")
    cfg.__post_init__()
    signal.signal(signal.SIGTERM, _sigterm)
    raw = runner.run(cfg, Progress(1))
    doc = results.build(raw)
    json_path = args.json or args.out / "bench.json"
    results.save(doc, json_path)
    table = results.markdown(doc)
    md_path = json_path.with_suffix(".md")
    md_path.write_text(table)
    png = json_path.with_suffix(".png")
    why = plot.render(doc, png)
    print(table)
    print(f"results: {json_path}, {md_path}" + (f", {png}" if why is None else
                                                 f" (no plot: {why})"), file=sys.stderr)
    return 0
