"""Which cffi modules release the GIL around their C calls (cffi_build/buildtools.py).

The wire formats and the TCP header prediction keep it: their calls are short and
never block, and releasing it cost a sizeable share of each. xsk must release it: a
thread driver waits in ``xsk_wait`` while application threads run Python.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest


def _imports_gil_release(module: str) -> bool:
    mod = importlib.import_module(module)
    if mod.__file__ is None:  # pragma: no cover - always an extension module here
        pytest.skip(f"{module} has no file")
    return b"PyEval_SaveThread" in Path(mod.__file__).read_bytes()


@pytest.mark.parametrize("module", ["joyride._wire"])
def test_short_call_modules_keep_the_gil(module: str) -> None:
    assert not _imports_gil_release(module)


def test_xsk_releases_the_gil() -> None:
    assert _imports_gil_release("xsk._xsk")
