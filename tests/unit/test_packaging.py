"""Every Python package in the tree is declared in pyproject.toml (wheels ship them)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_is_declared() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(config["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("joyride", "xsk")
        for init in (ROOT / top).rglob("__init__.py")
    }
    found |= {"joyride.bpf"}  # bpf/ is installed as joyride.bpf (package-dir mapping)
    assert found <= declared, f"add to [tool.setuptools] packages: {sorted(found - declared)}"
    assert declared <= found, f"declared but missing: {sorted(declared - found)}"
