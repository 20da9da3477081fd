"""Build hook: every ``cffi_build/*_build.py`` is an out-of-line API-mode cffi module,
and the preload shim (``preload/``) is a plain shared library shipped in the package.

The build scripts live outside the importable packages (as in pynacl and
argon2-cffi-bindings) so that importing ``joyride`` never imports cffi's compiler side.
Each script defines a module-level ``ffi`` (a ``cffi.FFI`` with ``set_source``).

The shim is not a Python extension (no Python symbols): ``LD_PRELOAD`` loads it into
any program. setuptools names it ``joyride/libjoyride_preload<EXT_SUFFIX>``;
``joyride run`` finds it by that prefix. (cffi's ``cffi_modules`` hook takes over the
``build_ext`` command, so a custom command to rename it would be dropped.)
"""

from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent
BUILD_SCRIPTS = sorted((HERE / "cffi_build").glob("*_build.py"))
cffi_modules = [f"{p.relative_to(HERE)}:ffi" for p in BUILD_SCRIPTS]

PRELOAD = Extension(
    "joyride.libjoyride_preload",
    sources=["preload/joyride_preload.c"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-fvisibility=default"],
    libraries=["dl"],
)


setup(cffi_modules=cffi_modules, ext_modules=[PRELOAD])
