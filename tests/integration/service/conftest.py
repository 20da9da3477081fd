"""A bed with the network service attached, shared by a module's tests (BCC compiles
cost seconds); each test uses its own ports or cleans up what it listens on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from service_helpers import attached

from joyride.testbed import Testbed

PORTS = "80,5201,6379,8080-8099"


@pytest.fixture(scope="module")
def service_bed() -> Iterator[Testbed]:
    with Testbed() as bed, attached(bed, "--ports", PORTS):
        yield bed


@pytest.fixture(scope="session", autouse=True)
def preload_shim() -> None:
    """The shim built from the current source (an editable install has no build step)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "preload_build", Path(__file__).resolve().parents[3] / "preload" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build()
