"""``joyride attach IFACE --ports 8080,9000-9010``: start the network service for IFACE."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from joyride.errors import JoyrideError
from joyride.steer.ports import PortSet


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "attach", help="steer ports of an interface into Joyride (starts its network service)",
        description="Attach the XDP steering program to IFACE, open one AF_XDP socket per "
                    "rx queue and serve the given ports; every other packet stays with "
                    "the kernel. Returns once the service is ready.")
    parser.add_argument("ifname", metavar="IFACE", help="network interface (in this netns)")
    parser.add_argument("--ports", required=True,
                        help="TCP ports to accelerate, e.g. 8080,9000-9010")
    parser.add_argument("--udp-ports", default="",
                        help="UDP ports to steer (for a future UDP engine), same syntax")
    parser.add_argument("--ephemeral", default=None, metavar="PORTS|none",
                        help="local port range for Joyride's own outgoing connections, "
                             "reserved in the kernel while attached (default 60000-60999)")
    parser.add_argument("--mode", choices=("auto", "native", "skb"), default="auto",
                        help="XDP mode; auto tries native, then falls back to skb")
    parser.add_argument("--vlan", type=int, default=0, metavar="VID",
                        help="steer frames of this 802.1Q VLAN instead of untagged ones")
    parser.add_argument("--group", default="", metavar="GROUP",
                        help="group (name or gid) whose members may use Joyride from "
                             "applications (default: root only)")
    parser.add_argument("--user", default=None, metavar="USER",
                        help="after setup the service drops to this unprivileged user, "
                             "with no capabilities and a seccomp filter (default: the "
                             "system user 'joyride' when it exists, as scripts/setup.sh "
                             "creates it; 'root' keeps root; with --foreground only when "
                             "given: the supervisor then runs in the foreground, as "
                             "packaging/joyride@.service does)")
    parser.add_argument("--workers", default="auto", metavar="N|auto",
                        help="data-plane workers, each a thread serving its share of the "
                             "rx queues and their connections (default auto: one per "
                             "queue, up to half the CPUs)")
    parser.add_argument("--force", action="store_true",
                        help="replace an XDP program that Joyride did not attach")
    parser.add_argument("--foreground", action="store_true",
                        help="run until interrupted, without daemonizing: the service "
                             "in this process (as root), or with --user its supervisor")
    parser.set_defaults(func=run)


def _config(args: argparse.Namespace) -> Any:
    from joyride.service.service import DEFAULT_EPHEMERAL, ServiceConfig

    if args.ephemeral is None:
        ephemeral = DEFAULT_EPHEMERAL
    elif args.ephemeral.strip().lower() == "none":
        ephemeral = PortSet()
    else:
        ephemeral = PortSet.parse(args.ephemeral)
    workers = _workers(args.workers)
    if not 0 <= args.vlan <= 4094:
        raise JoyrideError(f"--vlan {args.vlan}: a VLAN id is 1..4094 (0 = untagged)")
    return ServiceConfig(
        ifname=args.ifname, ports=PortSet.parse(args.ports),
        udp_ports=PortSet.parse(args.udp_ports, allow_empty=True), ephemeral=ephemeral,
        mode=args.mode, force=args.force, vlan=args.vlan, group=args.group,
        user=_user(args), workers=workers)


def _workers(text: str) -> int:
    """``--workers``: a count (1..1024) or ``auto`` (0: one per queue, capped by CPUs)."""
    if text.strip().lower() == "auto":
        return 0
    try:
        count = int(text)
    except ValueError:
        count = -1
    if not 1 <= count <= 1024:
        raise JoyrideError(f"--workers {text}: expected a count of 1..1024 or 'auto'")
    return count


def _user(args: argparse.Namespace) -> str:
    """The user the service drops to ("" keeps root): see ``joyride.claim.privdrop``."""
    import pwd

    from joyride.claim.privdrop import DEFAULT_USER

    if args.user is None:
        if args.foreground:
            return ""  # the service in this process, as root (--user runs a supervisor)
        try:
            pwd.getpwnam(DEFAULT_USER)
        except KeyError:
            return ""
        return DEFAULT_USER
    if args.user in ("", "root", "0"):
        return ""
    return str(args.user)


def _describe(state: Any, pid: int) -> str:
    queues = ",".join(str(q) for q in state.queues) or "none"
    return (f"attached to {state.ifname} ({state.mode} XDP): tcp ports {state.ports}"
            + (f", udp ports {state.udp_ports}" if state.udp_ports else "")
            + f", ephemeral {state.ephemeral or 'none'}, rx queues {queues}; "
              f"service pid {pid}, program id {state.prog_id}")


def run(args: argparse.Namespace) -> int:
    from joyride.service import launch

    cfg = _config(args)
    if args.foreground:
        launch.precheck(cfg)

        def ready(state: Any) -> None:
            _print_notices(state.notices)
            print(_describe(state, state.pid) + " (foreground; Ctrl-C to detach)", flush=True)

        if cfg.user:  # the service drops privileges: its supervisor runs here
            return launch.run_supervised(cfg, on_ready=ready)
        return launch.run_service(cfg, on_ready=ready)
    started = launch.start_background(cfg)
    _print_notices(started.state.notices)
    print(_describe(started.state, started.pid))
    return 0


def _print_notices(notices: list[str]) -> None:
    for notice in notices:
        print(f"joyride: notice: {notice}", file=sys.stderr)
