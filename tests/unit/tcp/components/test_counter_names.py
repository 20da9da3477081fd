"""Every TIME-WAIT counter the code increments is listed (and explained) in
joyride.tcp.counters, so dashboards and tests have one place to look."""

from __future__ import annotations

import re
from pathlib import Path

import joyride
from joyride.tcp.counters import TIME_WAIT_COUNTERS


def test_time_wait_counters_are_listed() -> None:
    root = Path(joyride.__file__).parent
    used = {
        name
        for path in root.rglob("*.py")
        if path.name != "counters.py"  # the list itself
        for name in re.findall(r'"(tw_[a-z_]+)"', path.read_text())
    }
    assert used, "no TIME-WAIT counter found: the pattern is stale"
    assert used == set(TIME_WAIT_COUNTERS)
