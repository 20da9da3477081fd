"""cffi out-of-line API-mode build of ``joyride.tcp._tcpfast`` (TCP header prediction).

The C sources are ``tcpfast.h`` / ``tcpfast.c`` beside this script; they read the
``struct wire_parsed`` records of ``joyride._wire`` (``wire.h``). Build in place during
development with ``.venv/bin/python cffi_build/tcpfast_build.py``.
"""

from __future__ import annotations

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
HEADER = (HERE / "tcpfast.h").read_text()
SOURCE = (HERE / "tcpfast.c").read_text()


def _cdef_from_header(text: str) -> str:
    """The header without comments and preprocessor lines (cffi's cdef rejects them)."""
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


ffi = FFI()
ffi.cdef(_cdef_from_header(HEADER))
ffi.set_source(
    "joyride.tcp._tcpfast",
    SOURCE,
    include_dirs=[str(HERE)],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    # As wire_build.py: compile in a scratch directory and copy the module into the
    # tree under the abi3 name `pip install` gives it, removing any in-place build
    # under the interpreter-specific suffix (the import system prefers that suffix,
    # so a stale copy would shadow every later build).
    import shutil
    import tempfile

    root = HERE.parent
    with tempfile.TemporaryDirectory() as scratch:
        built = Path(ffi.compile(tmpdir=scratch))
        dest_dir = root / built.relative_to(scratch).parent
        for stale in dest_dir.glob("_tcpfast.cpython-*.so"):
            stale.unlink()
        shutil.copy2(built, dest_dir / "_tcpfast.abi3.so")
