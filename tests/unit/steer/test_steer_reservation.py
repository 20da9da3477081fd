"""Reserving the ephemeral range: add on attach, remove only Joyride's part on detach."""

from __future__ import annotations

from pathlib import Path

from joyride.steer.ports import PortSet
from joyride.steer.reservation import read_reserved, release, reserve


def _sysctl(tmp_path: Path, value: str) -> Path:
    path = tmp_path / "ip_local_reserved_ports"
    path.write_text(value + "\n")
    return path


def test_reserve_adds_and_release_restores(tmp_path: Path) -> None:
    path = _sysctl(tmp_path, "")
    eph = PortSet.parse("60000-60999")
    original = reserve(eph, path)
    assert str(original) == ""
    assert read_reserved(path) == eph
    assert release(eph, original, path)
    assert path.read_text() == "\n"


def test_release_keeps_previous_reservations_that_overlap(tmp_path: Path) -> None:
    path = _sysctl(tmp_path, "8000,60500-61500")
    eph = PortSet.parse("60000-60999")
    original = reserve(eph, path)
    assert str(read_reserved(path)) == "8000,60000-61500"
    release(eph, original, path)
    assert str(read_reserved(path)) == "8000,60500-61500"


def test_release_keeps_entries_added_meanwhile(tmp_path: Path) -> None:
    path = _sysctl(tmp_path, "")
    eph = PortSet.parse("60000-60009")
    original = reserve(eph, path)
    path.write_text(str(read_reserved(path) | PortSet([7000])))
    release(eph, original, path)
    assert str(read_reserved(path)) == "7000"


def test_release_touches_nothing_when_our_ports_are_gone(tmp_path: Path) -> None:
    # A stale state naming a namespace whose inode was reused: the new namespace does
    # not hold our reservation, and its own value must survive.
    path = _sysctl(tmp_path, "1234")
    assert not release(PortSet.parse("60000-60009"), PortSet(), path)
    assert path.read_text() == "1234\n"


def test_empty_ephemeral_range_is_a_no_op(tmp_path: Path) -> None:
    path = _sysctl(tmp_path, "1234")
    assert str(reserve(PortSet(), path)) == "1234"
    assert release(PortSet(), PortSet([1234]), path)
    assert path.read_text() == "1234\n"
