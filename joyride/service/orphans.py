"""State directories whose network namespace is gone: ``/run/joyride/net<inode>/``.

A service's state lives under the inode of its network namespace (``state``). When
the namespace is deleted while files remain (a SIGKILLed supervisor's lock and pid, a
crashed service's ``state.json``), nothing inside it can clean up any more: no process
can enter a namespace that no longer exists, and everything the service changed in
the kernel (XDP program, reserved-ports sysctl, interfaces) died with the namespace.
Only the files are left, and only they need removing.

A namespace is alive while something references it. Every reference that can bring a
process back into it is looked for: a task inside it (``/proc/*/task/*/ns/net``), a
bind mount (``ip netns add`` under ``/run/netns``, or any other nsfs mount listed in
``/proc/self/mountinfo``), or an open descriptor (``/proc/*/fd/*`` naming
``net:[inode]``). The candidates are listed *before* the references are collected, so
a directory made by a process that enters a fresh namespace during the sweep is not a
candidate. Without root the scan cannot see other users' processes, so nothing is
removed. Root may still be refused a few (a sandbox's init, undumpable processes):
those are skipped, and a directory whose service or supervisor lock is held by a live
process is kept whatever the scan says.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Final

from joyride.claim.statedir import run_dir

log = logging.getLogger(__name__)

_NETNS_DIR: Final = re.compile(r"net(\d+)")
_NSFS_NET: Final = re.compile(r"net:\[(\d+)\]")
_LOCK_NAMES: Final = ("lock", "supervisor.lock")


class IncompleteScan(Exception):
    """Some process's namespaces could not be read: liveness cannot be proved."""


def live_netns_inodes(proc: Path = Path("/proc")) -> set[int]:
    """Inodes of every network namespace something still references.

    Raises ``IncompleteScan`` unless running as root (see the module notes)."""
    if os.geteuid() != 0:
        raise IncompleteScan("other users' processes (not root)")
    live: set[int] = set()
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        try:
            tids = os.listdir(proc / pid / "task")
        except OSError:
            continue  # exited meanwhile, or refused: skipped (see the module notes)
        # Threads may sit in other namespaces than their process (setns per thread).
        for tid in tids:
            with contextlib.suppress(OSError):
                live.add(os.stat(f"{proc}/{pid}/task/{tid}/ns/net").st_ino)
        live |= _fd_references(proc / pid / "fd")
    live |= _mounted(proc / "self" / "mountinfo")
    return live


def _fd_references(fd_dir: Path) -> set[int]:
    found: set[int] = set()
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(fd_dir / fd)
        except OSError:
            continue  # closed meanwhile
        match = _NSFS_NET.fullmatch(target)
        if match:
            found.add(int(match[1]))
    return found


def _mounted(mountinfo: Path) -> set[int]:
    """nsfs bind mounts (``ip netns add``): field 4 is ``net:[inode]``, fstype nsfs."""
    found: set[int] = set()
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError as exc:
        raise IncompleteScan(str(mountinfo)) from exc
    for line in lines:
        fields = line.split()
        if len(fields) < 5 or " - nsfs " not in line:
            continue
        match = _NSFS_NET.fullmatch(fields[3])
        if match:
            found.add(int(match[1]))
    return found


def _locked(directory: Path) -> bool:
    """Whether a live process holds a service or supervisor lock under ``directory``."""
    for lock in directory.glob("*/*"):
        if lock.name not in _LOCK_NAMES:
            continue
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return True
        finally:
            os.close(fd)
    return False


def sweep(root: Path | None = None, *, live: set[int] | None = None) -> list[Path]:
    """Remove ``net<inode>`` directories of namespaces that no longer exist; return them.

    ``live`` overrides the scan (tests). Never raises: a sweep is housekeeping done on
    the way to something else, so a failure is logged and the directory left."""
    base = root or run_dir()
    try:
        candidates = [p for p in base.iterdir()
                      if p.is_dir() and not p.is_symlink() and _NETNS_DIR.fullmatch(p.name)]
    except OSError:
        return []
    if not candidates:
        return []
    if live is None:
        try:
            live = live_netns_inodes()
        except IncompleteScan as exc:
            log.debug("not sweeping state directories: cannot inspect %s", exc)
            return []
    removed: list[Path] = []
    for directory in candidates:
        match = _NETNS_DIR.fullmatch(directory.name)
        assert match is not None
        if int(match[1]) in live or _locked(directory):
            continue
        try:
            shutil.rmtree(directory)
        except OSError as exc:
            log.warning("could not remove stale state %s: %s", directory, exc)
            continue
        removed.append(directory)
    if removed:
        log.info("removed state of vanished network namespaces: %s",
                 " ".join(p.name for p in removed))
    return removed
