"""Which service an application talks to (``appclient.app_path``) when a namespace holds
more than one state directory."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from joyride.claim.statedir import RUN_DIR_ENV, StateDir
from joyride.service import appclient


def state_dir(name: str, *, alive: bool) -> tuple[StateDir, int | None]:
    """A state directory with its application socket's name; its lock held (as a live
    service holds it) when ``alive``. Returns the held descriptor, if any."""
    sd = StateDir(name)
    sd.path.mkdir(parents=True)
    sd.app_path.touch()
    sd.lock_path.touch()
    if not alive:
        return sd, None
    fd = os.open(sd.lock_path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return sd, fd


def test_a_dead_services_directory_does_not_hide_the_live_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A service killed without undoing its claim (SIGKILL) leaves its directory; a
    later namespace with the same inode then held two, and every application there was
    told "no single Joyride service" and fell back to the kernel."""
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path))
    monkeypatch.delenv(appclient.SOCKET_ENV, raising=False)
    state_dir("jrdead", alive=False)
    live, fd = state_dir("jrlive", alive=True)
    try:
        assert appclient.app_path() == live.app_path
    finally:
        assert fd is not None
        os.close(fd)
    # Neither alive: no service, said so.
    with pytest.raises(FileNotFoundError, match="no single Joyride service"):
        appclient.app_path()


def test_two_live_services_still_need_the_interface(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path))
    monkeypatch.delenv(appclient.SOCKET_ENV, raising=False)
    fds = [state_dir(name, alive=True)[1] for name in ("jra", "jrb")]
    try:
        with pytest.raises(FileNotFoundError, match="give the interface"):
            appclient.app_path()
        assert appclient.app_path("jrb") == StateDir("jrb").app_path
    finally:
        for fd in fds:
            assert fd is not None
            os.close(fd)
