"""``joyride testbed sweep``: remove namespaces left behind by crashed runs."""

from __future__ import annotations

import argparse
from typing import Any

from joyride.errors import PrivilegeError


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "testbed", help="manage veth test beds (network namespaces made by Joyride)"
    )
    tsub = parser.add_subparsers(dest="testbed_command", required=True, metavar="ACTION")
    sweep = tsub.add_parser("sweep", help="remove test beds whose creating process is gone")
    sweep.add_argument("--all", action="store_true",
                       help="also remove beds of processes that are still running")
    sweep.set_defaults(func=run_sweep)
    lst = tsub.add_parser("list", help="list the test-bed namespaces that exist")
    lst.set_defaults(func=run_list)


def run_sweep(args: argparse.Namespace) -> int:
    import os

    from joyride.testbed import sweep

    if os.geteuid() != 0:
        raise PrivilegeError("removing network namespaces needs root: run it as root")
    from joyride.service import orphans

    removed = sweep(include_live=args.all)
    print(f"removed {len(removed)} test-bed namespace(s)" + (f": {' '.join(removed)}"
                                                              if removed else ""))
    # After the namespaces: the Joyride state kept for them is now orphaned.
    stale = orphans.sweep()
    if stale:
        print(f"removed {len(stale)} state director{'y' if len(stale) == 1 else 'ies'} of "
              f"vanished network namespaces: {' '.join(p.name for p in stale)}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from joyride.testbed import list_namespaces
    from joyride.testbed.bed import NS_PATTERN

    for name in list_namespaces():
        if NS_PATTERN.match(name):
            print(name)
    return 0
