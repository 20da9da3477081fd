"""Build hook: every ``cffi_build/*_build.py`` is an out-of-line API-mode cffi module.

The build scripts live outside the importable packages (as in pynacl and
argon2-cffi-bindings) so that importing ``joyride`` never imports cffi's compiler side.
Each script defines a module-level ``ffi`` (a ``cffi.FFI`` with ``set_source``).
"""

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
BUILD_SCRIPTS = sorted((HERE / "cffi_build").glob("*_build.py"))
cffi_modules = [f"{p.relative_to(HERE)}:ffi" for p in BUILD_SCRIPTS]

setup(cffi_modules=cffi_modules)
