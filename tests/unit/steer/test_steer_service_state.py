"""State directory: flock liveness, atomic state file, cleanup (no privileges needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from joyride.claim.statedir import RUN_DIR_ENV, ServiceState, StateDir, netns_dir


@pytest.fixture(autouse=True)
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path))
    return tmp_path


def test_directory_is_keyed_by_netns_inode_and_interface(run_dir: Path) -> None:
    inode = os.stat("/proc/thread-self/ns/net").st_ino
    assert StateDir("eth0").path == run_dir / f"net{inode}" / "eth0"
    assert netns_dir() == run_dir / f"net{inode}"


def test_lock_is_exclusive_and_is_the_liveness_test() -> None:
    owner, other = StateDir("eth0"), StateDir("eth0")
    assert not owner.service_alive()
    assert owner.acquire()
    try:
        assert other.service_alive()
        assert not other.acquire()  # a second service for the same interface
        assert StateDir("eth1").acquire()  # another interface is independent
    finally:
        owner.release()
    assert not other.service_alive()


def test_state_round_trips_and_survives_unknown_fields() -> None:
    sd = StateDir("eth0")
    state = ServiceState(ifname="eth0", ifindex=3, netns_inode=1, pid=42, ports="80,443",
                         map_ids=[1, 2], queues=[0, 1])
    sd.save(state)
    assert sd.load() == state
    sd.state_file.write_text(sd.state_file.read_text().replace('"pid"', '"future": 1, "pid"'))
    assert sd.load() == state


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", '{"ifname": "x"}'])
def test_torn_or_foreign_state_reads_as_none(content: str) -> None:
    sd = StateDir("eth0")
    sd.path.mkdir(parents=True)
    sd.state_file.write_text(content)
    assert sd.load() is None


def test_remove_clears_files_and_empty_directories(run_dir: Path) -> None:
    sd = StateDir("eth0")
    with sd.held() as got:
        assert got
        sd.save(ServiceState("eth0", 1, 1, 1))
        sd.log_path.write_text("log")
        assert [d.ifname for d in StateDir.all_in_netns()] == ["eth0"]
        sd.remove()
    assert not sd.path.exists() and not netns_dir().exists()
    assert StateDir.all_in_netns() == []
