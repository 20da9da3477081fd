"""Sweeping state directories of vanished network namespaces, without privileges: the
liveness set is given, the files are real."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from joyride.service import orphans


def make(root: Path, inode: int, *files: str) -> Path:
    directory = root / f"net{inode}" / "veth0"
    directory.mkdir(parents=True)
    for name in files:
        (directory / name).write_text("x")
    return directory.parent


def test_only_dead_unlocked_namespaces_are_removed(tmp_path: Path) -> None:
    dead = make(tmp_path, 4026530001, "supervisor.lock", "supervisor.pid")
    dead_state = make(tmp_path, 4026530002, "lock", "state.json", "service.log")
    alive = make(tmp_path, 4026530003, "lock", "state.json")
    held = make(tmp_path, 4026530004, "lock", "state.json")
    unrelated = tmp_path / "notes"
    unrelated.mkdir()
    link = tmp_path / "net4026530005"
    link.symlink_to(unrelated)
    fd = os.open(held / "veth0" / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a live service holds its lock: never removed
        removed = orphans.sweep(tmp_path, live={4026530003})
        again = orphans.sweep(tmp_path, live={4026530003})
    finally:
        os.close(fd)
    assert sorted(removed) == sorted([dead, dead_state])
    assert not dead.exists() and not dead_state.exists()
    assert alive.exists() and held.exists() and unrelated.exists() and link.exists()
    assert again == []  # idempotent
    assert orphans.sweep(tmp_path, live={4026530003}) == [held]  # its service died


def test_missing_root_and_empty_root_are_fine(tmp_path: Path) -> None:
    assert orphans.sweep(tmp_path / "absent", live=set()) == []
    assert orphans.sweep(tmp_path, live=set()) == []


def test_without_root_nothing_is_removed(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    dead = make(tmp_path, 4026530009, "state.json")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(orphans.IncompleteScan):
        orphans.live_netns_inodes()
    assert orphans.sweep(tmp_path) == []
    assert dead.exists()


def test_bind_mounts_count_as_references(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "29 1 0:26 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "612 29 0:4 net:[4026532177] /run/netns/jr-a rw shared:300 - nsfs nsfs rw\n"
        "613 29 0:4 mnt:[4026532178] /run/x rw shared:301 - nsfs nsfs rw\n"
        "garbage\n")
    assert orphans._mounted(mountinfo) == {4026532177}
