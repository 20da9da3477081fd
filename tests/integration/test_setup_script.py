"""scripts/setup.sh: clear one-line errors for the ways a setup goes wrong."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from joyride.cli import main

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "scripts" / "setup.sh"


def test_setup_refuses_without_root() -> None:
    setpriv = shutil.which("setpriv")
    assert setpriv, "util-linux setpriv is part of Debian's base system"
    proc = subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "bash", str(SETUP)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "setup: error: needs root (apt packages, kernel headers, BPF): "
        "run 'sudo bash scripts/setup.sh'"
    ]


def test_setup_names_a_missing_apt_package() -> None:
    env = dict(os.environ, JOYRIDE_EXTRA_APT="joyride-no-such-package-xyz")
    proc = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode != 0
    assert ("setup: error: apt package 'joyride-no-such-package-xyz' is not available "
            "from this system's apt sources") in proc.stderr


def test_selfcheck_passes_on_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["selfcheck"]) == 0
    out = capsys.readouterr().out
    for capability in ("BPF load", "XDP attach", "AF_XDP socket"):
        assert f"[ok] {capability}:" in out
