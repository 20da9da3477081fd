"""Build the preload shim in place for development (the package build uses setup.py).

``python preload/build.py`` writes ``joyride/libjoyride_preload.so`` with the flags
setup.py uses; ``joyride run`` picks the newest ``libjoyride_preload*.so`` it finds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "preload" / "joyride_preload.c"
# What SOURCE includes: a change to any of them rebuilds the shim.
INCLUDED = (ROOT / "preload" / "joyride_ring.c", ROOT / "cffi_build" / "chan.h",
            ROOT / "cffi_build" / "chan_claim.h", ROOT / "cffi_build" / "jr_protocol.h")
TARGET = ROOT / "joyride" / "libjoyride_preload.so"


def build(force: bool = False) -> Path:
    newest = max(p.stat().st_mtime for p in (SOURCE, *INCLUDED))
    if not force and TARGET.exists() and TARGET.stat().st_mtime >= newest:
        return TARGET
    tmp = TARGET.with_suffix(".so.tmp")
    subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
                    f"-I{ROOT / 'cffi_build'}", "-o", str(tmp), str(SOURCE), "-ldl"],
                   check=True)
    tmp.replace(TARGET)  # atomic: a running program keeps its mapped copy
    return TARGET


if __name__ == "__main__":
    print(build(force="--force" in sys.argv[1:]))
