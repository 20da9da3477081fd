"""``joyride detach IFACE``: stop the service, or clean up after a crashed one."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "detach", help="stop steering IFACE (also removes what a crashed service left)")
    parser.add_argument("ifname", metavar="IFACE")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from joyride.service import client

    for line in client.detach(args.ifname):
        print(line)
    return 0
