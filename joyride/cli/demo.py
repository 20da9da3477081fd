"""``joyride demo [--quick]``: nginx on the kernel and on Joyride, side by side.

Builds a veth test bed, attaches Joyride with one accelerated port, drives the same
traffic at the same nginx on the kernel and under ``joyride run``, prints a table and
the steering counters, and removes everything it made — on Ctrl-C and SIGTERM too.
"""

from __future__ import annotations

import argparse
import os
import signal
from typing import Any

from joyride.errors import JoyrideError, PrivilegeError


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "demo", help="show Joyride and the kernel serving the same HTTP server, side by side",
        description="Build a test bed, run nginx on the kernel and under Joyride, drive "
                    "traffic at both, print a comparison table, clean up.")
    parser.add_argument("--quick", action="store_true", help="one short round (~30 s)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="alternating rounds per side (default 3, medians reported)")
    parser.add_argument("--seconds", type=float, default=None, help="per measured phase")
    parser.set_defaults(func=run)


def _sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # unwind through every finally: bed, service, servers


def run(args: argparse.Namespace) -> int:
    from joyride import demo
    from joyride.bench import modes
    from joyride.bench.progress import Progress

    if os.geteuid() != 0:
        raise PrivilegeError("the demo builds network namespaces and attaches XDP: run as "
                             "root (.venv/bin/joyride demo, as root)")
    why = modes.service_mode()
    if why is not None:
        raise JoyrideError(f"service mode: {why}; the demo needs `joyride run`")
    cfg = demo.DemoConfig.quick() if args.quick else demo.DemoConfig()
    if args.rounds is not None:
        if args.rounds < 1:
            raise JoyrideError("--rounds must be at least 1")
        cfg.rounds = args.rounds
    if args.seconds is not None:
        if args.seconds <= 0:
            raise JoyrideError("--seconds must be positive")
        cfg.seconds = args.seconds
    signal.signal(signal.SIGTERM, _sigterm)
    progress = Progress(1)
    try:
        demo.run(cfg, progress=progress)
    except KeyboardInterrupt:
        progress.close()
        print("joyride demo: interrupted; test bed, service and servers removed")
        return 130
    return 0
