"""``joyride selfcheck``: can this machine run Joyride? One line per capability."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "selfcheck", help="check BPF load, XDP attach and AF_XDP on this machine"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from joyride.selfcheck import run_checks

    results = run_checks()
    for result in results:
        print(result.line(), flush=True)
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"joyride: {len(failed)} check(s) failed; this machine cannot run Joyride yet")
        return 1
    print("joyride: all checks passed")
    return 0
