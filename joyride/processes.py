"""Processes Joyride started or watches: liveness by pid, and ending them by pid.

One place for both, shared by the test bed, the service client and the benchmarks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable
from typing import Any


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie (exited, not yet reaped) counts as gone: it holds
    no resources any more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False  # gone between the two looks


def terminate(procs: Iterable[subprocess.Popen[Any]], timeout: float) -> None:
    """SIGTERM every process still running, then wait for each; SIGKILL one that does
    not exit within ``timeout``. Signalling all first lets them stop in parallel."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout)
