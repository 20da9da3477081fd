"""cffi out-of-line API-mode build of ``joyride._wire`` (checksum, batch parse/build).

The C sources are ``wire.h`` and ``wire.c`` beside this script; the header doubles as the
cdef after its preprocessor lines are dropped. Build in place during development with
``.venv/bin/python cffi_build/wire_build.py``; ``pip install`` builds it through setup.py.
"""

from __future__ import annotations

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
HEADER = (HERE / "wire.h").read_text()
SOURCE = (HERE / "wire.c").read_text()


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
ffi.cdef(_cdef_from_header(HEADER))
# The .c file is compiled as the module's own source so that every primitive can be
# inlined into the batch loops; include_dirs lets it find wire.h.
ffi.set_source(
    "joyride._wire",
    SOURCE,
    include_dirs=[str(HERE)],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    # Drop the module next to the package (repo root as tmpdir). The compile runs in a
    # scratch directory and the result is copied, because setuptools reads the
    # pyproject.toml of its working directory and an older setuptools may reject it.
    import shutil
    import tempfile

    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as scratch:
        built = Path(ffi.compile(tmpdir=scratch))
        shutil.copy2(built, root / built.relative_to(scratch))
