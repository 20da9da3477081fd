"""``joyride run``'s environment and the isolation helpers (no privileges)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from joyride.cli import run
from joyride.errors import JoyrideError
from joyride.service import apps, protocol


def test_environment_adds_the_shim_and_options(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setenv("JOYRIDE_RUN_DIR", str(tmp_path))
    lib = tmp_path / "libjoyride_preload.so"
    lib.write_bytes(b"")
    monkeypatch.setattr(run, "preload_library", lambda: lib)
    env = run.environment("eth9", True, {"LD_PRELOAD": "/other.so", "PATH": "/bin"})
    assert env["LD_PRELOAD"] == f"{lib} /other.so"
    assert env["JOYRIDE_SOCKET"].endswith("/eth9/app.sock")
    assert env["JOYRIDE_OUTGOING"] == "1"
    plain = run.environment(None, False, {})
    assert "JOYRIDE_SOCKET" not in plain and "JOYRIDE_OUTGOING" not in plain


def test_environment_picks_the_live_service_not_a_dead_ones_leftovers(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A SIGKILLed service leaves its directory (and app.sock file); only the one whose
    liveness lock is held counts, so no "several services" error."""
    from joyride.claim.statedir import StateDir

    monkeypatch.setenv("JOYRIDE_RUN_DIR", str(tmp_path))
    lib = tmp_path / "libjoyride_preload.so"
    lib.write_bytes(b"")
    monkeypatch.setattr(run, "preload_library", lambda: lib)
    live, dead = StateDir("live0"), StateDir("dead0")
    for state_dir in (live, dead):
        state_dir.path.mkdir(parents=True)
        state_dir.app_path.touch()
    assert live.acquire()  # this process is the live service
    try:
        env = run.environment(None, False, {})
        assert env["JOYRIDE_SOCKET"] == str(live.app_path)
    finally:
        live.release()


def test_run_without_a_command_is_a_one_line_error() -> None:
    import argparse

    with pytest.raises(JoyrideError, match="nothing to run"):
        run.run(argparse.Namespace(argv=["--"], iface=None, outgoing=False))


def test_group_and_privilege_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    assert apps.group_id("") is None
    assert apps.group_id("4242") == 4242
    with pytest.raises(ValueError):
        apps.group_id("no-such-group-joyride")
    me = apps.Credentials(os.getpid(), os.getuid(), os.getgid())
    assert apps.may_connect(apps.Credentials(1, 0, 0), None)  # root
    assert apps.may_connect(apps.Credentials(os.getpid(), 4243, 4242), 4242)  # primary gid
    assert apps.may_connect(apps.Credentials(os.getpid(), 4243, 4243), None)  # no --group
    assert not apps.may_connect(apps.Credentials(os.getpid(), 4243, 4243), 4242)
    monkeypatch.setattr(apps, "unprivileged_port_start", lambda: 1024)
    assert apps.may_bind(me, 8080)
    gone = apps.Credentials(2**22 + 1, 1000, 1000)  # no such pid: denied, not raised
    assert not apps.may_bind(gone, 80)


def test_listening_names_sees_our_abstract_listener() -> None:
    name = protocol.listener_name(bytes(4), 47999, os.getpid(), 12345)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(protocol.abstract(name))
        names = apps.listening_names()
        assert names is not None and name not in names  # bound is not listening
        s.listen(1)
        names = apps.listening_names()
        assert names is not None and name in names


def test_listening_names_unreadable_is_none_not_empty(monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    """An unreadable /proc/net/unix must not read as "no listener left": the sweep would
    drop every port."""
    def unreadable(self: object) -> str:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(apps.Path, "read_text", unreadable)
    assert apps.listening_names() is None
