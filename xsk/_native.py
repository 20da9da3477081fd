"""The compiled ``xsk._xsk`` module (cffi, API mode), with a clear error when unbuilt.

The import is dynamic because the extension has no type stubs: callers see ``Any``.
"""

from __future__ import annotations

import importlib
from typing import Any

from xsk.errors import XskUnsupported

BUILD_HINT = "build it with `python cffi_build/xsk_build.py` or `pip install -e .`"

try:
    _mod = importlib.import_module("xsk._xsk")
except ImportError as exc:  # pragma: no cover - only without a build
    raise XskUnsupported(f"the xsk C extension is not built: {BUILD_HINT}") from exc

ffi: Any = _mod.ffi
lib: Any = _mod.lib
