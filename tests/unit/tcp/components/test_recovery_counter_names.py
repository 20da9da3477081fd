"""Every loss-recovery counter of issue 15 the code increments is listed (and
explained) in joyride.tcp.counters.RECOVERY_COUNTERS."""

from __future__ import annotations

import re
from pathlib import Path

import joyride
from joyride.tcp.counters import RECOVERY_COUNTERS


def test_recovery_counters_are_listed() -> None:
    root = Path(joyride.__file__).parent / "tcp"
    used = {
        name
        for path in root.glob("*.py")
        if path.name != "counters.py"
        for name in re.findall(
            r'counters\["((?:dsack|spurious|undo|rack|tlp)_[a-z_]+)"\]', path.read_text()
        )
    }
    assert used == set(RECOVERY_COUNTERS)
