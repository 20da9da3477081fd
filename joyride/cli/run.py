"""``joyride run [--iface IFACE] [--outgoing] -- CMD ARGS...``: an unmodified program
served by Joyride.

The program runs with the preload shim (``LD_PRELOAD``), which routes its sockets that
listen on an accelerated port (and, with ``--outgoing``, its outgoing IPv4 TCP
connections) to the interface's network service; everything else stays with the
kernel. Without a service the shim says so once and the program runs on the kernel.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from joyride.errors import EnvironmentProblem, JoyrideError

PRELOAD_PREFIX = "libjoyride_preload"  # + ".so" (dev build) or the ABI suffix (package)


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "run", help="run an unmodified program with its sockets served by Joyride",
        description="Run CMD with the Joyride preload shim: sockets listening on an "
                    "accelerated port are served by the interface's network service.")
    parser.add_argument("--iface", default=None,
                        help="interface whose service to use (default: the only attached "
                             "one in this network namespace)")
    parser.add_argument("--outgoing", action="store_true",
                        help="also carry the program's outgoing IPv4 TCP connections")
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS...")
    parser.set_defaults(func=run)


def preload_library() -> Path:
    """The shim shipped inside the package (built by the package build)."""
    import joyride

    here = Path(joyride.__file__).resolve().parent
    found = sorted(here.glob(f"{PRELOAD_PREFIX}*.so"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise EnvironmentProblem(f"the preload shim {here}/{PRELOAD_PREFIX}*.so is missing: "
                                 "reinstall Joyride (`pip install .` builds it from preload/)")
    return found[-1]  # the newest build


def environment(iface: str | None, outgoing: bool,
                base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment CMD runs in."""
    from joyride.service.state import StateDir

    env = dict(os.environ if base is None else base)
    lib = str(preload_library())
    existing = env.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = f"{lib} {existing}".strip() if lib not in existing else existing
    if iface is not None:
        env["JOYRIDE_SOCKET"] = str(StateDir(iface).app_path)
    else:
        found = [d for d in StateDir.all_in_netns() if d.app_path.exists()]
        if len(found) > 1:
            names = ", ".join(d.ifname for d in found)
            raise JoyrideError(f"several Joyride services here ({names}): choose one "
                               "with --iface")
        if found:
            env["JOYRIDE_SOCKET"] = str(found[0].app_path)
    if outgoing:
        env["JOYRIDE_OUTGOING"] = "1"
    return env


def run(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise JoyrideError("nothing to run: joyride run [--iface IFACE] -- CMD ARGS...")
    env = environment(args.iface, args.outgoing)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError as exc:
        raise JoyrideError(f"{argv[0]}: command not found") from exc
    except PermissionError as exc:
        raise JoyrideError(f"{argv[0]}: permission denied") from exc
    return 127  # not reached: exec replaced this process
