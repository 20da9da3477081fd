"""cffi out-of-line API-mode build of ``xsk._xsk``: AF_XDP rings, UMEM frames, XDP loader.

Compiled directly against the kernel uapi headers (``<linux/if_xdp.h>``,
``<linux/bpf.h>``); no libxdp or libbpf. The C sources are ``xsk.h`` (the API, which
doubles as the cdef), ``xsk_ring.h``, ``xsk_internal.h`` (what the sources share beyond
the API) and three translation units compiled on their own, ``xsk.c``,
``xsk_tx_thread.c`` and ``xsk_bpf.c``, all beside this script. Build in place during
development with ``.venv/bin/python cffi_build/xsk_build.py``; ``pip install`` builds
it through setup.py. The benchmarks' reference loops are not in it
(``scripts/xsk_loops.c``, which ``scripts/bench_xsk.py`` compiles itself).
"""

from __future__ import annotations

import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # buildtools, also when setuptools execs this file

from buildtools import build_in_place, cdef_from_header  # noqa: E402

HEADER = (HERE / "xsk.h").read_text()
SOURCES = ("xsk.c", "xsk_tx_thread.c", "xsk_bpf.c")




# The kernel's own structs (xdp_desc, xdp_statistics) are declared to cffi with "..."
# so that it takes their layout from <linux/if_xdp.h> at compile time.
KERNEL_CDEF = """
struct xdp_desc { uint64_t addr; uint32_t len; uint32_t options; };
struct xdp_statistics {
    uint64_t rx_dropped; uint64_t rx_invalid_descs; uint64_t tx_invalid_descs;
    uint64_t rx_ring_full; uint64_t rx_fill_ring_empty_descs; uint64_t tx_ring_empty_descs;
};
#define XDP_SHARED_UMEM ...
#define XDP_COPY ...
#define XDP_ZEROCOPY ...
#define XDP_USE_NEED_WAKEUP ...
#define XDP_FLAGS_SKB_MODE ...
#define XDP_FLAGS_DRV_MODE ...
"""

ffi = FFI()
ffi.cdef(KERNEL_CDEF + cdef_from_header(HEADER))
ffi.set_source(
    "xsk._xsk",
    '#include <linux/if_link.h>\n#include "xsk.h"\n',
    sources=[str(HERE / name) for name in SOURCES],
    include_dirs=[str(HERE)],
    depends=[str(HERE / n) for n in ("xsk.h", "xsk_ring.h", "xsk_internal.h", *SOURCES)],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra"],
    libraries=["pthread"],
)

if __name__ == "__main__":
    print(build_in_place(ffi))
