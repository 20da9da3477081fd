"""``python -m joyride.service.supervisor --config JSON [--ready-fd N]``: keep a service up.

``joyride attach`` starts this (in a new session) instead of the service itself; it
runs the service as its child and restarts it when it dies abnormally (a signal, a
non-zero exit), with exponential backoff and a bound on restarts per minute so a
service that cannot start does not spin. A clean exit (``joyride detach`` asks the
service to shut down, status 0) ends the supervisor too; SIGTERM/SIGINT/SIGHUP are
forwarded to the service, which stops cleanly, and then the supervisor exits.

A crash loses the TCP connections of that service (the applications read EOF or
ECONNRESET, never hang: the kernel closes the service's socket ends); while no
service runs the steering program's XSKMAP is empty, so every frame reaches the
kernel (fail-open). Applications' listeners survive: the restarted service re-adopts
them (``Datapath.adopt_listeners``). A production host can use systemd instead
(``packaging/joyride@.service``), which provides the same restart policy.

Liveness: the supervisor holds ``supervisor.lock`` (flock) in the state directory for
its life and writes its pid to ``supervisor.pid``; ``joyride detach`` stops it first.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections import deque
from typing import Final

from joyride.service.launch import config_from_json
from joyride.service.state import StateDir

log = logging.getLogger("joyride.supervisor")

BACKOFF_FIRST: Final = 0.2  # seconds before the first restart
BACKOFF_MAX: Final = 5.0
MAX_RESTARTS: Final = 10  # within RESTART_WINDOW; more means it cannot run: give up
RESTART_WINDOW: Final = 60.0
READY_TIMEOUT: Final = 120.0


class Supervisor:
    def __init__(self, config_json: str, ready_fd: int | None) -> None:
        self.config_json = config_json
        self.ready_fd = ready_fd
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.restarts: deque[float] = deque()

    def _signal(self, signum: int, _frame: object) -> None:
        self.stopping = True
        child = self.child
        if child is not None and child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)

    def _spawn(self) -> tuple[subprocess.Popen[bytes], bytes]:
        """Start the service; return it and its readiness line (b"" if it died)."""
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        child = subprocess.Popen(
            [sys.executable, "-m", "joyride.service", "--config", self.config_json,
             "--ready-fd", str(write_fd)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, pass_fds=(write_fd,),
            close_fds=True)
        self.child = child
        os.close(write_fd)
        line = bytearray()
        deadline = time.monotonic() + READY_TIMEOUT
        try:
            while not line.endswith(b"\n") and time.monotonic() < deadline:
                ready, _, _ = select.select([read_fd], [], [], 1.0)
                if not ready:
                    if child.poll() is not None:
                        break
                    continue
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    break
                line += chunk
        finally:
            os.close(read_fd)
        return child, bytes(line)

    def _report(self, line: bytes) -> None:
        if self.ready_fd is None:
            return
        with contextlib.suppress(OSError):
            if line:
                os.write(self.ready_fd, line)
        with contextlib.suppress(OSError):
            os.close(self.ready_fd)
        self.ready_fd = None

    def run(self) -> int:
        first = True
        backoff = BACKOFF_FIRST
        while True:
            started = time.monotonic()
            child, line = self._spawn()
            if first:
                self._report(line)  # the CLI reads the service's own verdict
                first = False
                if not line or b'"ok":true' not in line.replace(b" ", b""):
                    return child.wait()  # it never served: nothing to keep up
            code = child.wait()
            self.child = None
            if self.stopping or code == 0:
                return 0
            how = (f"signal {signal.Signals(-code).name}" if code < 0
                   else f"exit status {code}")
            now = time.monotonic()
            if now - started > RESTART_WINDOW:
                backoff = BACKOFF_FIRST  # it ran a good while: start the backoff over
            self.restarts.append(now)
            while self.restarts and now - self.restarts[0] > RESTART_WINDOW:
                self.restarts.popleft()
            if len(self.restarts) > MAX_RESTARTS:
                log.error("the service died (%s) %d times within %g s: giving up", how,
                          len(self.restarts), RESTART_WINDOW)
                return 1
            log.warning("the service died (%s); restarting in %.1f s", how, backoff)
            deadline = time.monotonic() + backoff
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.stopping:
                return 0
            backoff = min(backoff * 2, BACKOFF_MAX)


def alive(state_dir: StateDir) -> int | None:
    """The pid of a live supervisor for this state directory, else None."""
    if not state_dir.supervisor_alive():
        return None
    try:
        return int(state_dir.supervisor_pid_path.read_text())
    except (OSError, ValueError):
        return None


def stop(state_dir: StateDir, timeout: float) -> int | None:
    """SIGTERM a live supervisor (its service stops cleanly) and wait; its pid or None."""
    pid = alive(state_dir)
    if pid is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(state_dir) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    return pid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m joyride.service.supervisor")
    parser.add_argument("--config", required=True)
    parser.add_argument("--ready-fd", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s joyride-supervisor[%(process)d] %(levelname)s "
                               "%(message)s")
    cfg = config_from_json(args.config)
    state_dir = StateDir(cfg.ifname)
    state_dir.path.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock_fd = os.open(state_dir.supervisor_lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                      0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        log.error("another supervisor runs for %s", cfg.ifname)
        return 1
    state_dir.supervisor_pid_path.write_text(f"{os.getpid()}\n")
    supervisor = Supervisor(args.config, args.ready_fd)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, supervisor._signal)
    try:
        return supervisor.run()
    finally:
        for path in (state_dir.supervisor_pid_path, state_dir.supervisor_lock_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        os.close(lock_fd)
        if not state_dir.service_alive() and state_dir.load() is None:
            state_dir.remove()


if __name__ == "__main__":
    sys.exit(main())
