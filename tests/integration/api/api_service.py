"""Service mode for the API tests: ``joyride attach`` on a bed, detached in ``finally``.

The attach/detach/CLI helpers are the service tests' own (``service_helpers``), loaded
from their file so there is one place that knows how to drive the CLI on a bed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from joyride.testbed import Testbed

PORTS = "8080-8089"


def _service_helpers() -> ModuleType:
    name = "service_helpers"
    if name in sys.modules:  # the service tests ran first in this session
        return sys.modules[name]
    path = Path(__file__).resolve().parent.parent / "service" / "service_helpers.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


helpers = _service_helpers()


@contextlib.contextmanager
def service(bed: Testbed, ports: str = PORTS) -> Iterator[Testbed]:
    """The network service attached to ``bed.joy`` for ``ports``; always detached."""
    with helpers.attached(bed, "--ports", ports):
        yield bed
