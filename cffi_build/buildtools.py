"""Shared by the cffi build scripts in this folder (not a build script itself).

``setup.py`` compiles every ``*_build.py`` at install time; during development each
script can also build its module in place (``python cffi_build/<name>_build.py``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


# Appended to the source of a module whose every function is short and never blocks
# (the wire formats, TCP header prediction). cffi releases the GIL around each C call
# (Py_BEGIN/END_ALLOW_THREADS in its generated wrappers, which follow this source);
# for a call of a microsecond or less, dropping and retaking the GIL (two mutex
# round trips and a condition signal) costs a sizeable share of the call, several
# times per request. Redefined to a plain block, the wrappers keep the GIL, as most
# C extensions do for short calls. Never for xsk: its waits and sendto must release it.
HOLD_GIL = """
#undef Py_BEGIN_ALLOW_THREADS
#undef Py_END_ALLOW_THREADS
#define Py_BEGIN_ALLOW_THREADS {
#define Py_END_ALLOW_THREADS }
"""


def cdef_from_header(text: str) -> str:
    """The header minus comments and preprocessor lines, which cffi's cdef rejects."""
    out: list[str] = []
    in_comment = False
    for line in text.splitlines():
        stripped = line.strip()
        if in_comment:
            in_comment = "*/" not in stripped
            continue
        if stripped.startswith("/*"):
            in_comment = "*/" not in stripped
            continue
        if stripped.startswith("#"):
            continue
        code = line.split("/*", 1)[0].rstrip()
        if code:
            out.append(code)
    return "\n".join(out)


def build_in_place(ffi: Any) -> Path:
    """Compile ``ffi``'s module and drop it next to its package, as ``pip`` names it.

    The compile runs in a scratch directory: distutils started inside the repository
    would parse its pyproject.toml, which is the install's business. The module gets
    the abi3 suffix that setuptools gives cffi modules, and a copy under the
    interpreter-specific suffix is removed: the import system prefers that suffix, so a
    stale one would shadow every later build. The file is replaced, not overwritten, as
    a running process may have the old one mapped.
    """
    with tempfile.TemporaryDirectory(prefix="joyride-cffi-") as scratch:
        built = Path(ffi.compile(tmpdir=scratch))
        rel = built.relative_to(scratch)
        module = rel.name.split(".", 1)[0]
        dest_dir = ROOT / rel.parent
        dest_dir.mkdir(parents=True, exist_ok=True)
        for stale in dest_dir.glob(f"{module}.cpython-*.so"):
            stale.unlink()
        target = dest_dir / f"{module}.abi3.so"
        staging = target.with_suffix(".tmp")
        shutil.copy2(built, staging)
        staging.replace(target)
    return target
