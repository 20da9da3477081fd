"""Helpers for service tests: the ``joyride`` CLI inside a bed namespace, attach/detach."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from joyride.claim.statedir import StateDir
from joyride.testbed import Node, Testbed

JOYRIDE = str(Path(sys.executable).with_name("joyride"))
REPO = Path(__file__).resolve().parents[3]

# One control request as the calling user, straight to the control socket (past the
# CLI's own checks: the service must authorize it); prints the reply or the error.
# argv: control socket path, request as JSON.
ASK = """
import json, sys
from pathlib import Path
from joyride.service import control
try:
    print(json.dumps(control.request(Path(sys.argv[1]), json.loads(sys.argv[2]))))
except (control.ControlError, OSError) as exc:
    print("error:", exc)
"""


def cli(node: Node, *args: str, check: bool = True,
        timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    proc = node.run(JOYRIDE, *args, check=False, timeout=timeout)
    out = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(),
                                      proc.stderr.decode())
    if check and out.returncode != 0:
        raise AssertionError(f"joyride {' '.join(args)} -> {out.returncode}: {out.stderr}")
    return out


def stats(node: Node) -> dict[str, Any]:
    return dict(json.loads(cli(node, "stats", node.ifname, "--json").stdout))


def segments_in(service_stats: dict[str, Any]) -> int:
    """TCP segments the service received: in Python (the engine) and in C (the data
    plane's predicted ones; its declined ones reach the engine and count there)."""
    datapath = service_stats["datapath"]
    plane = datapath.get("dataplane") or {}
    return int(datapath["engine"].get("rx_segments", 0)) + int(plane.get("rx_fast", 0))


def service_pid(bed: Testbed) -> int | None:
    """The running service's pid (``joyride status``), or None when none runs."""
    out = cli(bed.joy, "status", bed.joy.ifname, "--json", check=False)
    try:
        [entry] = json.loads(out.stdout)
    except ValueError:
        return None
    return int(entry["service"]["pid"]) if entry["state"] == "running" else None


def app_path(node: Node) -> Path:
    with node.inside():
        return StateDir(node.ifname).app_path


@contextlib.contextmanager
def attached(bed: Testbed, *args: str) -> Iterator[Testbed]:
    """``joyride attach`` on the bed's Joyride side, always detached afterwards."""
    try:
        cli(bed.joy, "attach", bed.joy.ifname, *args)
        yield bed
    finally:
        cli(bed.joy, "detach", bed.joy.ifname, check=False)


def wait_for(predicate: Callable[[], object], timeout: float = 10.0,
             what: str = "condition") -> None:
    """Poll ``predicate``; an AssertionError from it (a CLI call failing while a service
    starts) counts as not yet."""
    deadline = time.monotonic() + timeout

    def holds() -> bool:
        try:
            return bool(predicate())
        except AssertionError:
            return False

    while not holds():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def wait_port(node: Node, ip: str, port: int, timeout: float = 15.0) -> None:
    """Until a TCP connect from ``node`` to ip:port succeeds."""
    import socket

    def ok() -> bool:
        with node.inside():
            sock = socket.socket()
        sock.settimeout(1.0)
        try:
            sock.connect((ip, port))
            return True
        except OSError:
            return False
        finally:
            sock.close()

    wait_for(ok, timeout, f"{ip}:{port} to accept connections")


def wait_listening(node: Node, port: int, timeout: float = 15.0) -> None:
    """Until the service lists a listener on ``port`` (``joyride ss -l``), without a
    connection to it: a probe that connects and closes makes a server such as iperf3
    count a failed test and build its listener again, and a client that comes in that
    window is refused or reset."""

    def listed() -> bool:
        rows = json.loads(cli(node, "ss", node.ifname, "--json", "-l").stdout)
        return any(str(r["local"]).endswith(f":{port}") for r in rows)

    wait_for(listed, timeout, f"a listener on port {port}")


def ask_as(node: Node, uid: int, gid: int, request: dict[str, object]) -> str:
    """A control request as ``uid``: the reply (JSON) or ``error: ...``."""
    with node.inside():
        path = StateDir(node.ifname).control_path
    out = node.run("setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "env",
                   f"PYTHONPATH={REPO}", "/usr/bin/python3", "-c", ASK, str(path),
                   json.dumps(request), timeout=30)
    return out.stdout.decode().strip()


@contextlib.contextmanager
def served_connection(bed: Testbed, port: int, timeout: float = 30.0
                      ) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A kernel client in the peer's namespace connected to a Joyride listener of this
    process on ``port``: (Joyride's end, the peer's end); all closed afterwards."""
    from joyride.service import appclient

    with bed.joy.inside():
        lsock = appclient.listen(port, path=app_path(bed.joy))
    with lsock:
        with bed.peer.inside():
            peer = socket.create_connection((bed.joy.ip, port), timeout=timeout)
        with peer:
            lsock.settimeout(timeout)
            joy, _ = lsock.accept()
            joy.settimeout(timeout)
            with joy:
                yield joy, peer
