"""cffi out-of-line API-mode build of ``joyride.dataplane._dataplane`` (the C data plane).

The C sources live beside the package they serve: ``joyride/dataplane/dataplane.h``
(the contract, which doubles as the cdef) and ``dataplane.c``. The frame parser and
builder are ``cffi_build/wire.c``, compiled into this module too (one source, so one
rule; a private copy of the code, so the per-frame calls are direct and inlinable).

The GIL is released around every call (cffi's default): ``dp_run`` sleeps in
``epoll_wait``. ``JOYRIDE_SANITIZE=1`` builds with AddressSanitizer and
UndefinedBehaviorSanitizer (the sanitizer test job; run Python with the ASan runtime
preloaded). Build in place with ``.venv/bin/python cffi_build/dataplane_build.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent / "joyride" / "dataplane"
sys.path.insert(0, str(HERE))  # buildtools, also when setuptools execs this file

from buildtools import build_in_place, cdef_from_header  # noqa: E402

HEADER = (PACKAGE / "dataplane.h").read_text() + (PACKAGE / "capture.h").read_text()
SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
sanitize = os.environ.get("JOYRIDE_SANITIZE") == "1"

ffi = FFI()
ffi.cdef(cdef_from_header(HEADER))
ffi.set_source(
    "joyride.dataplane._dataplane",
    '#include "wire.c"\n#include "isn.c"\n#include "capture.c"\n#include "dataplane.c"\n'
    '#include "chanapp.c"\n#include "hub.c"\n#include "workers.c"\n',
    include_dirs=[str(HERE), str(PACKAGE)],
    depends=[str(PACKAGE / "dataplane.h"), str(PACKAGE / "dataplane.c"), str(PACKAGE / "isn.c"),
             str(PACKAGE / "capture.h"), str(PACKAGE / "capture.c"),
             str(HERE / "wire.c"), str(HERE / "wire.h"), str(PACKAGE / "channels.c"),
             str(PACKAGE / "sessions.c"), str(HERE / "jr_protocol.h"),
             str(PACKAGE / "chanapp.c"), str(PACKAGE / "hub.c"), str(HERE / "chan.h"),
             str(HERE / "chan_claim.h"), str(PACKAGE / "workers.c")],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra",
                        *(SANITIZE if sanitize else [])],
    extra_link_args=SANITIZE[:1] if sanitize else [],
    libraries=["m", "pthread"],
)

if __name__ == "__main__":
    print(build_in_place(ffi))
