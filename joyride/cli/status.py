"""``joyride status [IFACE] [--json]``: what is attached in this network namespace."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

NOT_RUNNING_EXIT = 3  # like `systemctl status` for an inactive unit


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "status", help="show attached interfaces (services, programs, ports)")
    parser.add_argument("ifname", metavar="IFACE", nargs="?", default=None)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from joyride.service import client

    client.require_root("reading Joyride's state")
    statuses = client.status(args.ifname)
    if args.json:
        print(json.dumps([s.to_json() for s in statuses], indent=2, sort_keys=True))
    elif not statuses:
        print("nothing attached in this network namespace")
    for st in statuses if not args.json else []:
        print(_line(st))
    if args.ifname and statuses and statuses[0].state != "running":
        return NOT_RUNNING_EXIT
    return 0


def _line(st: Any) -> str:
    svc, prog = st.service, st.program
    if st.state == "running":
        up = time.time() - float(svc.get("started_at") or time.time())
        return (f"{st.ifname}: running (pid {svc['pid']}, {svc['mode']} XDP, program id "
                f"{svc['prog_id']}, up {up:.0f} s): tcp ports {svc['ports'] or '(none)'}"
                + (f", udp ports {svc['udp_ports']}" if svc.get("udp_ports") else "")
                + f", ephemeral {svc['ephemeral'] or 'none'}, rx queues "
                  f"{','.join(map(str, svc['queues'])) or 'none'}")
    if st.state == "dead":
        return (f"{st.ifname}: service died (pid {svc['pid']}); steering falls through to "
                f"the kernel; `joyride detach {st.ifname}` cleans up")
    if st.state == "stale-program":
        return (f"{st.ifname}: a Joyride program (id {prog['id']}) is attached with no "
                f"service; `joyride detach {st.ifname}` removes it")
    extra = f" (XDP program {prog['name']!r} id {prog['id']} attached)" if prog else ""
    return f"{st.ifname}: not attached{extra}"
