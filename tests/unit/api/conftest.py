"""Fixtures for the API unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_memory import stack_pair

from joyride.embed.stack import Stack


@pytest.fixture
def stacks() -> Iterator[tuple[Stack, Stack]]:
    a, b = stack_pair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()
