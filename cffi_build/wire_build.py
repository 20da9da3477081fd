"""cffi out-of-line API-mode build of ``joyride._wire`` (checksum, batch parse/build).

The C sources are ``wire.h`` and ``wire.c`` beside this script; the header doubles as the
cdef after its preprocessor lines are dropped. Build in place during development with
``.venv/bin/python cffi_build/wire_build.py``; ``pip install`` builds it through setup.py.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # buildtools, also when setuptools execs this file

from buildtools import HOLD_GIL, build_in_place, cdef_from_header  # noqa: E402

HEADER = (HERE / "wire.h").read_text()
SOURCE = (HERE / "wire.c").read_text()
# Identifies the sources a module was built from, so a stale build is detectable
# (joyride.wire._native.SOURCE_HASH compares it with the files on disk).
SOURCE_HASH = hashlib.sha256((HEADER + SOURCE).encode()).hexdigest()[:16]




ffi = FFI()
ffi.cdef(cdef_from_header(HEADER) + "\nconst char *wire_source_hash(void);")
# The .c file is compiled as the module's own source so that every primitive can be
# inlined into the batch loops; include_dirs lets it find wire.h.
ffi.set_source(
    "joyride._wire",
    SOURCE + f'\nconst char *wire_source_hash(void) {{ return "{SOURCE_HASH}"; }}\n'
    + HOLD_GIL,
    include_dirs=[str(HERE)],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    print(build_in_place(ffi))
