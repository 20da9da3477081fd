"""The compiled ``joyride._wire`` module, or ``None`` when it has not been built.

Everything that can run without it (the Python parsers, the checksum fallback) checks
``lib is not None``; the batch API requires it and says how to build it. The import is
dynamic because the extension has no type stubs: callers see ``Any``.
"""

from __future__ import annotations

import importlib
from typing import Any

BUILD_HINT = "build it with `python cffi_build/wire_build.py` or `pip install -e .`"

ffi: Any = None
lib: Any = None
try:
    _mod = importlib.import_module("joyride._wire")
    ffi, lib = _mod.ffi, _mod.lib
except ImportError:
    pass
