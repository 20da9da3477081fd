"""cffi out-of-line API-mode build of ``joyride._wire`` (checksum, batch parse/build).

The C sources are ``wire.h`` and ``wire.c`` beside this script; the header doubles as the
cdef after its preprocessor lines are dropped. Build in place during development with
``.venv/bin/python cffi_build/wire_build.py``; ``pip install`` builds it through setup.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
HEADER = (HERE / "wire.h").read_text()
SOURCE = (HERE / "wire.c").read_text()
# Identifies the sources a module was built from, so a stale build is detectable
# (joyride.wire._native.SOURCE_HASH compares it with the files on disk).
SOURCE_HASH = hashlib.sha256((HEADER + SOURCE).encode()).hexdigest()[:16]


def _cdef_from_header(text: str) -> str:
    """The header minus comments and preprocessor lines, which cffi's cdef rejects."""
    out: list[str] = []
    in_comment = False
    for line in text.splitlines():
        stripped = line.strip()
        if in_comment:
            if "*/" in stripped:
                in_comment = False
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


ffi = FFI()
ffi.cdef(_cdef_from_header(HEADER) + "\nconst char *wire_source_hash(void);")
# The .c file is compiled as the module's own source so that every primitive can be
# inlined into the batch loops; include_dirs lets it find wire.h.
ffi.set_source(
    "joyride._wire",
    SOURCE + f'\nconst char *wire_source_hash(void) {{ return "{SOURCE_HASH}"; }}\n',
    include_dirs=[str(HERE)],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    # Drop the module next to the package (repo root as tmpdir). The compile runs in a
    # scratch directory and the result is copied, because setuptools reads the
    # pyproject.toml of its working directory and an older setuptools may reject it.
    import shutil
    import tempfile

    # The file is named as `pip install` names it (the abi3 suffix setuptools gives cffi
    # modules), and an older in-place build under the interpreter-specific suffix is
    # removed: the import system prefers that suffix, so a stale copy would shadow any
    # later pip build.
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as scratch:
        built = Path(ffi.compile(tmpdir=scratch))
        dest_dir = root / built.relative_to(scratch).parent
        for stale in dest_dir.glob("_wire.cpython-*.so"):
            stale.unlink()
        shutil.copy2(built, dest_dir / "_wire.abi3.so")
