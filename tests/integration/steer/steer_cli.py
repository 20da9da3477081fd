"""Running the ``joyride`` CLI inside a test-bed namespace, as a user would; bed helpers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from joyride.testbed import Node, Testbed

JOYRIDE = str(Path(sys.executable).with_name("joyride"))


def run_text(node: Node, *argv: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run any command in ``node``'s namespace; decoded output, never raises on failure."""
    proc = node.run(*argv, check=False, timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(),
                                       proc.stderr.decode())


def cli(node: Node, *args: str, check: bool = True,
        timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``joyride ARGS`` in ``node``'s namespace; raise on failure if ``check``."""
    out = run_text(node, JOYRIDE, *args, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"joyride {' '.join(args)} -> {out.returncode}: {out.stderr}")
    return out


def status(node: Node, ifname: str) -> dict[str, Any]:
    out = cli(node, "status", ifname, "--json", check=False)
    [entry] = json.loads(out.stdout)
    return dict(entry)


def stats(node: Node, ifname: str) -> dict[str, Any]:
    return dict(json.loads(cli(node, "stats", ifname, "--json").stdout))


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    """The single ``joyride: ...`` line of a failed command (asserts there is just one)."""
    assert out.returncode != 0, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("joyride: "), out.stderr
    assert "Traceback" not in out.stderr
    return lines[0]


def wait_for(predicate: Any, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def pin_neighbours(bed: Testbed) -> None:
    """Static ARP entries both ways: no ARP chatter to pollute exact counter checks."""
    for here, there in ((bed.joy, bed.peer), (bed.peer, bed.joy)):
        here.run("ip", "neigh", "replace", there.ip, "lladdr", there.mac, "nud", "permanent",
                 "dev", here.ifname)
