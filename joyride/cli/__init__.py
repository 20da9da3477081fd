"""The ``joyride`` command line.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds an
``argparse`` parser whose ``func`` default takes the parsed arguments and returns an exit
code. Errors meant for the user are raised as ``UserError`` and printed as one line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import import_module

from joyride.errors import JoyrideError

# Modules under joyride.cli that contribute subcommands, in help order.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "attach", "detach", "status", "stats", "ss", "metrics", "capture", "ports", "selfcheck",
    "testbed", "run", "demo", "bench",
)

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="joyride",
        description="Hybrid kernel-bypass TCP/IP stack: XDP steering + AF_XDP + user-space TCP.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        import_module(f"joyride.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # A trailing expression (joyride capture's FILTER) may follow options, as tcpdump's
    # does; argparse gives the words after the options back unparsed.
    if extra and (not hasattr(args, "trailing") or any(w.startswith("-") for w in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.trailing = [*args.trailing, *extra]
    handler: Handler = args.func
    try:
        return handler(args)
    except JoyrideError as exc:
        print(f"joyride: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("joyride: interrupted", file=sys.stderr)
        return 130
