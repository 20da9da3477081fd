"""The mypyc-compiled modules (setup.py) and the guard against stale ones."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
from pathlib import Path

import pytest

from joyride import _compiled

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]  # .cpython-311-x86_64-linux-gnu.so


def test_every_compiled_module_is_the_one_imported() -> None:
    for name, path in _compiled.compiled_modules().items():
        module = importlib.import_module(name)
        assert _compiled.is_compiled(name), name
        assert Path(str(module.__file__)).resolve() == path.resolve()


def test_hot_modules_are_compiled_unless_built_pure() -> None:
    if os.environ.get("JOYRIDE_PURE_PYTHON") == "1":
        pytest.skip("built without mypyc (JOYRIDE_PURE_PYTHON=1)")
    if not _compiled.compiled_modules():
        pytest.skip("an interpreted copy of the sources (scripts/test.sh runs one)")
    for name in ("joyride.wire.seq", "joyride.tcp.connection", "joyride.engine.engine",
                 "joyride.service.datapath"):
        importlib.import_module(name)
        assert _compiled.is_compiled(name), name


def test_a_source_newer_than_its_compiled_module_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    package = tmp_path / "joyride"
    (package / "tcp").mkdir(parents=True)
    for stem, source_age, compiled_age in (("fresh", 20, 10), ("edited", 10, 20)):
        source = package / "tcp" / f"{stem}.py"
        built = package / "tcp" / f"{stem}{SUFFIX}"
        source.write_text("")
        built.write_bytes(b"")
        os.utime(source, (1e9 - source_age, 1e9 - source_age))
        os.utime(built, (1e9 - compiled_age, 1e9 - compiled_age))
    (package / "_wire.abi3.so").write_bytes(b"")  # a cffi module: no source, not ours
    monkeypatch.setattr(_compiled, "ROOT", package)
    assert set(_compiled.compiled_modules()) == {"joyride.tcp.fresh", "joyride.tcp.edited"}
    assert _compiled.stale_modules() == ["joyride.tcp.edited"]
    with pytest.warns(RuntimeWarning, match=r"joyride\.tcp\.edited changed after"):
        _compiled.warn_if_stale()
