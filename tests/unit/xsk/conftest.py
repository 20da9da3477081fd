"""Make ``import xsk`` find the source package.

The venv's editable install was generated before ``xsk/__init__.py`` existed and maps
``xsk`` as a namespace package; until ``pip install -e .`` is re-run, tests import it
from the source tree instead (the same files either way).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
if getattr(sys.modules.get("xsk"), "__file__", "") is None:
    del sys.modules["xsk"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
