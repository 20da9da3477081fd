"""Embedded mode runs on either data plane (``joyride.embed`` module doc): the C one,
through the in-process network service, and the Python one (``JOYRIDE_DATAPLANE``)."""

from __future__ import annotations

import pytest

from joyride.dataplane import plane as dataplane


@pytest.fixture(params=["c", "python"])
def plane(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The data plane ``embed`` picks in this test (the C one only where it is built)."""
    choice = str(request.param)
    if choice == "c" and not dataplane.available():
        pytest.skip("the C data plane is not built here")
    monkeypatch.setenv(dataplane.ENV, choice)
    return choice
