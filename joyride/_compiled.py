"""Which of joyride's modules run compiled (mypyc, see setup.py), and a guard against
stale ones.

Python imports a compiled module in place of its ``.py`` file. A source edited after
the build is then silently not what runs, so importing ``joyride`` warns when a
source is newer than its compiled module (rebuild: ``pip install -e .``, which
``scripts/setup.sh`` runs).
"""

from __future__ import annotations

import importlib.machinery
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent
_SUFFIXES = tuple(s for s in importlib.machinery.EXTENSION_SUFFIXES if s != ".abi3.so"
                  and s != ".so")


def _compiled_files() -> list[tuple[str, Path, Path]]:
    """(module name, compiled file, source) for the package's mypyc-compiled modules
    (the cffi extensions are named ``_*.abi3.so`` and have no ``.py`` source)."""
    found = []
    for suffix in _SUFFIXES:
        for path in ROOT.rglob(f"*{suffix}"):
            source = path.with_name(path.name[: -len(suffix)] + ".py")
            if source.exists():
                parts = source.relative_to(ROOT.parent).with_suffix("").parts
                found.append((".".join(parts), path, source))
    return found


def compiled_modules() -> dict[str, Path]:
    """Module name -> compiled file, for the package's mypyc-compiled modules."""
    return {name: path for name, path, _ in _compiled_files()}


def is_compiled(module: str) -> bool:
    """Whether ``module`` (imported) runs from a compiled file."""
    mod = sys.modules.get(module)
    return mod is not None and not str(getattr(mod, "__file__", "")).endswith(".py")


def stale_modules() -> list[str]:
    """Compiled modules whose source changed after they were built."""
    return sorted(
        name for name, path, source in _compiled_files()
        if source.stat().st_mtime > path.stat().st_mtime
    )


def warn_if_stale() -> None:
    stale = stale_modules()
    if stale:
        warnings.warn(
            f"joyride: {', '.join(stale)} changed after being compiled, and the compiled "
            "version is what runs: rebuild with `pip install -e .` (or `bash "
            "scripts/setup.sh`), or build without compiling (JOYRIDE_PURE_PYTHON=1)",
            RuntimeWarning, stacklevel=3,
        )
