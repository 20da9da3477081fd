"""State directories of a network namespace that was deleted are removed by the next
``joyride status`` / ``detach`` / ``attach`` / ``testbed sweep``; a live namespace's
are kept."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from service_helpers import JOYRIDE

from joyride.claim.statedir import RUN_DIR_ENV, StateDir, netns_inode
from joyride.service import orphans
from joyride.testbed import Testbed

pytestmark = pytest.mark.integration


def leave_state(bed: Testbed, root: Path) -> tuple[Path, int]:
    """What a SIGKILLed supervisor and service leave: lock/pid files, state.json."""
    with bed.joy.inside():
        state_dir = StateDir(bed.joy.ifname, root)
        inode = netns_inode()
    state_dir.path.mkdir(parents=True)
    for name in ("supervisor.lock", "supervisor.pid", "lock", "state.json"):
        (state_dir.path / name).write_text("{}")
    return state_dir.path.parent, inode


@pytest.mark.parametrize("command", [["status"], ["testbed", "sweep"]])
def test_vanished_namespace_state_is_swept(tmp_path: Path, command: list[str]) -> None:
    env = dict(os.environ, **{RUN_DIR_ENV: str(tmp_path)})
    with Testbed() as bed:
        gone, inode = leave_state(bed, tmp_path)
        assert inode in orphans.live_netns_inodes()  # the bed's bind mount holds it
        subprocess.run([JOYRIDE, *command], env=env, check=True, capture_output=True,
                       timeout=60)
        assert gone.exists()  # its namespace is alive: kept
    assert inode not in orphans.live_netns_inodes()
    out = subprocess.run([JOYRIDE, *command], env=env, check=True, capture_output=True,
                         timeout=60)
    assert not gone.exists(), out.stdout.decode() + out.stderr.decode()
    assert list(tmp_path.iterdir()) == []
