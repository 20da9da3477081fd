"""Where the owner of an interface keeps its state: ``/run/joyride/net<inode>/<ifname>/``.

The owner is the network service, or a process that embeds Joyride (which has no
control or application socket); both claim the interface through ``joyride.claim``.

Interface names are only unique inside a network namespace, and the CLI runs inside
namespaces (``ip netns exec``), so the state of a service is keyed by both: the inode of
the caller's network namespace (``/proc/thread-self/ns/net``, the identity ``ip netns
identify`` uses) and the interface name.

The directory holds:

* ``lock``: the service holds an exclusive ``flock`` on it for its whole life. The
  kernel drops the lock when the process dies, however it dies, so "lock free" is the
  reliable test for "no live service" (pids are reused, state files outlive SIGKILL).
* ``state.json``: what the service set up (program id, ports, the reserved-ports value
  it found), written atomically, kept until a clean stop or a cleanup.
* ``control.sock``: the service's control socket (``joyride.service.control``).
* ``app.sock``: the application socket (``joyride.service.protocol``), mode 0660 and
  group ``--group`` when one is configured (the directory is then 0710 to that group).
* ``service.log``: the service's stderr when it runs in the background.
* ``supervisor.lock``/``supervisor.pid``: the supervisor's liveness lock and pid
  (``joyride.service.supervisor``), removed by the supervisor itself.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

RUN_DIR_ENV: Final = "JOYRIDE_RUN_DIR"
DEFAULT_RUN_DIR: Final = Path("/run/joyride")


def run_dir() -> Path:
    return Path(os.environ.get(RUN_DIR_ENV) or DEFAULT_RUN_DIR)


def lock_held(path: Path) -> bool:
    """Whether some process holds an flock on ``path`` (a liveness lock)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def netns_dir(root: Path | None = None) -> Path:
    return (root or run_dir()) / f"net{netns_inode()}"


@dataclass
class ServiceState:
    """What a running (or crashed) service set up; serialised as ``state.json``."""

    ifname: str
    ifindex: int
    netns_inode: int
    pid: int
    mode: str = ""
    ports: str = ""
    udp_ports: str = ""
    ephemeral: str = ""
    reserved_original: str = ""
    reserved: bool = False
    vlan: int = 0
    prog_id: int = 0
    map_ids: list[int] = field(default_factory=list)
    queues: list[int] = field(default_factory=list)
    started_at: float = 0.0
    user: str = ""  # the user the service dropped to after setup ("": root)
    notices: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ServiceState:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in known})


class StateDir:
    """The state directory of one (network namespace, interface) pair."""

    def __init__(self, ifname: str, root: Path | None = None) -> None:
        self.ifname = ifname
        self.path = netns_dir(root) / ifname
        self._lock_fd: int | None = None

    @classmethod
    def all_in_netns(cls, root: Path | None = None) -> list[StateDir]:
        base = netns_dir(root)
        if not base.is_dir():
            return []
        return [cls(p.name, root) for p in sorted(base.iterdir())
                if p.is_dir() and ((p / "state.json").exists() or (p / "lock").exists())]

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @property
    def control_path(self) -> Path:
        return self.path / "control.sock"

    @property
    def app_path(self) -> Path:
        return self.path / "app.sock"

    @property
    def supervisor_lock_path(self) -> Path:
        return self.path / "supervisor.lock"

    @property
    def supervisor_pid_path(self) -> Path:
        return self.path / "supervisor.pid"

    @property
    def log_path(self) -> Path:
        return self.path / "service.log"

    @property
    def lock_path(self) -> Path:
        return self.path / "lock"

    # -- liveness --------------------------------------------------------------------------

    def acquire(self) -> bool:
        """Take the service lock (for the service's lifetime); False if a live one has it."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        self._lock_fd = fd
        return True

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    def service_alive(self) -> bool:
        """True while a service holds the lock. Never takes the lock for long."""
        if not self.lock_path.exists():
            return False
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except PermissionError:
            # The lock is root's and the caller is an unprivileged application: the
            # application socket answers instead (a dead service's refuses connections,
            # which callers take as "no service").
            return self.app_path.exists()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return True
            raise
        finally:
            os.close(fd)  # also drops the lock if we got it
        return False

    # -- state file ------------------------------------------------------------------------

    def load(self) -> ServiceState | None:
        try:
            raw = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # a torn or foreign file: treat as no state
        if not isinstance(raw, dict):
            return None
        try:
            return ServiceState.from_json(raw)
        except TypeError:
            return None

    def save(self, state: ServiceState, *, in_place: bool = False) -> None:
        """Write ``state.json`` atomically (a new file renamed over the old), or, with
        ``in_place``, over the existing file: a service that dropped its privileges owns
        the file but may not write the directory (``privdrop``). One small write."""
        if in_place:
            self.state_file.write_text(json.dumps(state.to_json(), indent=2,
                                                  sort_keys=True) + "\n")
            return
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.state_file)  # atomic: readers see old or new, never half

    def supervisor_alive(self) -> bool:
        """Whether a supervisor holds ``supervisor.lock`` (its flock lives with it)."""
        return lock_held(self.supervisor_lock_path)

    def remove(self, *, keep_log: bool = False) -> None:
        """Remove the directory's files, then the directory once empty.

        The caller holds the lock (``acquire``) and has already undone everything the
        service did to the kernel: a service starting after the lock file is gone
        must find a clean kernel state.
        """
        files = [self.state_file, self.control_path, self.app_path, self.lock_path]
        if not keep_log:
            files.append(self.log_path)
        if not self.supervisor_alive():
            # A supervisor killed outright cannot remove its own files.
            files += [self.supervisor_lock_path, self.supervisor_pid_path]
        for path in files:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for directory in (self.path, self.path.parent):
            with contextlib.suppress(OSError):
                directory.rmdir()  # only succeeds once empty

    @contextlib.contextmanager
    def held(self) -> Iterator[bool]:
        got = self.acquire()
        try:
            yield got
        finally:
            if got:
                self.release()
