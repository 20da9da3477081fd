"""cffi out-of-line API-mode build of ``joyride.tcp._tcpfast`` (TCP header prediction).

The C sources are ``tcpfast.h`` / ``tcpfast.c`` beside this script; they read the
``struct wire_parsed`` records of ``joyride._wire`` (``wire.h``). Build in place during
development with ``.venv/bin/python cffi_build/tcpfast_build.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # buildtools, also when setuptools execs this file

from buildtools import HOLD_GIL, build_in_place, cdef_from_header  # noqa: E402

HEADER = (HERE / "tcpfast.h").read_text()
SOURCE = (HERE / "tcpfast.c").read_text()




ffi = FFI()
ffi.cdef(cdef_from_header(HEADER))
ffi.set_source(
    "joyride.tcp._tcpfast",
    SOURCE + HOLD_GIL,
    include_dirs=[str(HERE)],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    print(build_in_place(ffi))
