"""Helpers for running Debian-packaged daemons under ``joyride run`` in tests: scratch
directories their unprivileged users can enter, a throw-away login user, process trees
read from /proc, and stopping a daemon by its pid (both packaged-daemon test files)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def must_exist(*paths: str) -> None:
    """Fail (not skip) when a packaged program is missing: scripts/setup.sh installs it."""
    missing = [p for p in paths if not os.access(p, os.X_OK)]
    if missing:
        raise AssertionError(f"{', '.join(missing)} missing: run scripts/setup.sh "
                             "(APT_PACKAGES)")


@contextlib.contextmanager
def public_dir(prefix: str) -> Iterator[Path]:
    """A scratch directory (mode 0755) that daemons' own users can enter: pytest's
    tmp_path sits under a directory only root may enter. Removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # state, ppid, ...


def parent(pid: int) -> int:
    """The parent pid of a live process (``ProcessLookupError`` once it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        raise ProcessLookupError(pid)
    return int(fields[1])


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def uids(pid: int) -> tuple[int, int] | None:
    """(real, effective) uid of a live process, or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                real, effective = line.split()[1:3]
                return int(real), int(effective)
    except OSError:
        pass
    return None


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM,
         timeout: float = 20.0) -> None:
    """Stop a daemon by its pid (``ip netns exec``, ``joyride run`` and ``setpriv`` all
    exec, so the Popen's pid is the daemon's); SIGKILL it and what it forked if it does
    not exit in time."""
    if proc.poll() is not None:
        return
    below = descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        for pid in [proc.pid, *below]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(10)


def wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    """Wait until none of ``pids`` is alive; those still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if uids(p) is not None]
    return alive


def _sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)


@contextlib.contextmanager
def login_user(home: Path) -> Iterator[str]:
    """A throw-away user with a home directory at ``home``, no password (key login only)
    and its own group; deleted afterwards (its home with it)."""
    name = f"jrb{secrets.token_hex(4)}"
    made = _sh("useradd", "--home-dir", str(home), "--create-home", "--shell", "/bin/sh",
               "--user-group", name)
    if made.returncode != 0:
        raise AssertionError(f"useradd {name}: {made.stderr}")
    try:
        # No password at all ('*': no password matches; the account is not locked).
        unlocked = _sh("usermod", "-p", "*", name)
        if unlocked.returncode != 0:
            raise AssertionError(f"usermod {name}: {unlocked.stderr}")
        yield name
    finally:
        gone = _sh("userdel", name)
        shutil.rmtree(home, ignore_errors=True)
        if gone.returncode != 0:
            raise AssertionError(f"userdel {name}: {gone.stderr}")
