"""Shared fixtures: the privilege gate for integration tests and the veth test bed."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import settings

from joyride.testbed import Testbed, sweep

# Property tests run the same examples every run (a CI that fails one run in three
# blocks everyone); HYPOTHESIS_PROFILE=explore searches afresh each time, for finding
# new counterexamples on purpose.
settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

IS_ROOT = os.geteuid() == 0
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration tests skip (with the reason) only where root is missing.

    In CI they must run: a CI job without root is a broken job, not a reason to skip.
    """
    if IS_ROOT:
        return
    if IN_CI:
        raise pytest.UsageError("CI must run as root: integration tests cannot be skipped")
    skip = pytest.mark.skip(reason="integration test: needs root and network namespaces")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


def pytest_sessionstart(session: pytest.Session) -> None:
    if IS_ROOT:
        # Namespaces left by crashed earlier runs (their pid is gone); live runs are kept.
        sweep()


@pytest.fixture
def make_testbed() -> Iterator[Callable[..., Testbed]]:
    """Factory: ``make_testbed(mtu=..., to_joy=Impairment(...))``; all beds torn down."""
    beds: list[Testbed] = []

    def make(**kwargs: Any) -> Testbed:
        bed = Testbed(**kwargs)
        beds.append(bed)
        bed.__enter__()
        return bed

    try:
        yield make
    finally:
        for bed in reversed(beds):
            bed.teardown()


@pytest.fixture
def testbed(make_testbed: Callable[..., Testbed]) -> Testbed:
    """A plain two-namespace bed: ``testbed.joy`` (Joyride side) and ``testbed.peer``."""
    return make_testbed()
