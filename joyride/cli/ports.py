"""``joyride ports IFACE add|del|list [PORTS]``: change accelerated ports while attached."""

from __future__ import annotations

import argparse
from typing import Any

from joyride.errors import JoyrideError
from joyride.steer.ports import PortSet


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "ports", help="add or remove accelerated ports at run time (no reattach)")
    parser.add_argument("ifname", metavar="IFACE")
    parser.add_argument("action", choices=("add", "del", "list"))
    parser.add_argument("ports", nargs="?", default=None, metavar="PORTS",
                        help="e.g. 8080,9000-9010")
    parser.add_argument("--udp", action="store_true", help="UDP ports instead of TCP")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from joyride.service import client

    client.require_root("changing ports")
    proto = "udp" if args.udp else "tcp"
    if args.action == "list":
        state = client.ask(args.ifname, {"op": "status"})["state"]
        print(state["udp_ports" if args.udp else "ports"] or "(none)")
        return 0
    if args.ports is None:
        raise JoyrideError(f"`joyride ports {args.ifname} {args.action}` needs PORTS, "
                           "e.g. 8080,9000-9010")
    spec = str(PortSet.parse(args.ports))  # refuse bad specs before talking to anyone
    reply = client.ask(args.ifname, {"op": "ports", "action": args.action, "ports": spec,
                                     "proto": proto})
    now = reply["udp_ports" if args.udp else "ports"] or "(none)"
    print(f"{args.ifname}: {proto} ports now {now}")
    return 0
