"""Build hook: every ``cffi_build/*_build.py`` is an out-of-line API-mode cffi module,
and the preload shim (``preload/``) is a plain shared library shipped in the package.

The build scripts live outside the importable packages (as in pynacl and
argon2-cffi-bindings) so that importing ``joyride`` never imports cffi's compiler side.
Each script defines a module-level ``ffi`` (a ``cffi.FFI`` with ``set_source``).

The per-request modules (``COMPILED``: wire formats, the TCP core, the engine, the
embedded and service data paths) are also compiled with mypyc: the same type-annotated
sources, turned into C extension modules that Python imports in place of the ``.py``
files (about half the CPU per request of the interpreted build; see the README). Set
``JOYRIDE_PURE_PYTHON=1`` to build without them: everything then runs interpreted.
``joyride`` warns at import when a source is newer than its compiled module.

The shim is not a Python extension (no Python symbols): ``LD_PRELOAD`` loads it into
any program. setuptools names it ``joyride/libjoyride_preload<EXT_SUFFIX>``;
``joyride run`` finds it by that prefix. (cffi's ``cffi_modules`` hook takes over the
``build_ext`` command, so a custom command to rename it would be dropped.)
"""

import os
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent
BUILD_SCRIPTS = sorted((HERE / "cffi_build").glob("*_build.py"))
cffi_modules = [f"{p.relative_to(HERE)}:ffi" for p in BUILD_SCRIPTS]

PRELOAD = Extension(
    "joyride.libjoyride_preload",
    sources=["preload/joyride_preload.c"],
    include_dirs=["cffi_build"],  # chan.h, chan_claim.h: ring mode (preload/joyride_ring.c)
    depends=["preload/joyride_ring.c", "cffi_build/chan.h", "cffi_build/chan_claim.h"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-fvisibility=default"],
    libraries=["dl"],
)

# Per-segment and per-request code: the wire formats, sequence numbers, the TCP core,
# the engine loop, and the per-request glue of embedded mode (stack, driver, the
# asyncio transport's core) and of the service (its data path and pumps). Not here:
# classes that tests or users subclass (interpreted classes cannot inherit from
# compiled ones: IsnGenerator, MemoryNic); classes with a non-native base (compiled,
# JoyrideTransport(asyncio.Transport) is invisible to the cycle collector, and every
# closed connection's transport/protocol cycle leaked: its per-request half is the
# native StreamCore instead); xsk (its argument checks raise ValueError where compiled
# code raises TypeError first); and what is not per packet or per request.
COMPILED = [
    "joyride/wire/seq.py",
    "joyride/wire/ethernet.py",
    "joyride/wire/ipv4.py",
    "joyride/wire/ipv6.py",
    "joyride/wire/tcp_options.py",
    "joyride/wire/tcp.py",
    "joyride/wire/frame.py",
    "joyride/wire/batch.py",
    "joyride/tcp/state.py",
    "joyride/tcp/timers.py",
    "joyride/tcp/buffers.py",
    "joyride/tcp/rtt.py",
    "joyride/tcp/hystart.py",
    "joyride/tcp/congestion.py",
    "joyride/tcp/recovery.py",
    "joyride/tcp/scoreboard.py",
    "joyride/tcp/reassembly.py",
    "joyride/tcp/options.py",
    "joyride/tcp/pmtu.py",
    "joyride/tcp/syncookies.py",
    "joyride/tcp/timewait.py",
    "joyride/tcp/connection.py",
    "joyride/tcp/listener.py",
    "joyride/engine/engine.py",
    "joyride/engine/xsknic.py",
    "joyride/embed/stack.py",
    "joyride/embed/drivers.py",
    "joyride/aio/stream.py",
    "joyride/service/pump.py",
    "joyride/service/datapath.py",
    "joyride/service/sockets.py",
]


def compiled_modules() -> list[Extension]:
    if os.environ.get("JOYRIDE_PURE_PYTHON") == "1":
        # An earlier in-place (editable) compiled build left modules that Python
        # would import instead of the sources: remove exactly those.
        for source in map(Path, COMPILED):
            for built in (HERE / source.parent).glob(f"{source.stem}.cpython-*.so"):
                built.unlink()
        return []
    from mypyc.build import mypycify

    return list(mypycify(COMPILED, opt_level="3", group_name="joyride_native"))


setup(cffi_modules=cffi_modules, ext_modules=[PRELOAD, *compiled_modules()])
