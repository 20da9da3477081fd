"""PortSet: the one port-list syntax of the CLI, the state file and the kernel sysctl."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from joyride.steer.ports import PortSet, PortSpecError


def test_parse_single_list_and_ranges() -> None:
    ports = PortSet.parse("8080, 9000-9003,22")
    assert list(ports) == [22, 8080, 9000, 9001, 9002, 9003]
    assert str(ports) == "22,8080,9000-9003"


def test_format_merges_adjacent_and_overlapping_items() -> None:
    assert str(PortSet.parse("5-7,8,6-10,12")) == "5-10,12"


def test_empty_only_when_allowed() -> None:
    with pytest.raises(PortSpecError, match="empty port list"):
        PortSet.parse("")
    assert len(PortSet.parse("", allow_empty=True)) == 0
    assert str(PortSet()) == ""


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("0", "port 0"),
        ("65536", "beyond 65535"),
        ("1-70000", "beyond 65535"),
        ("80,", "empty item"),
        ("http", "not a port number"),
        ("-5", "not a port number"),
        ("5-", "not a port number"),
        ("10-5", "runs backwards"),
        ("+80", "not a port number"),
        ("8²", "not a port number"),
        ("1-2-3", "not a port number"),
    ],
)
def test_malformed_specs_are_refused_with_the_reason(spec: str, message: str) -> None:
    with pytest.raises(PortSpecError, match=message):
        PortSet.parse(spec)


def test_constructor_checks_range() -> None:
    with pytest.raises(PortSpecError):
        PortSet([0])
    with pytest.raises(PortSpecError):
        PortSet([65536])


def test_set_algebra() -> None:
    a, b = PortSet.parse("1-10"), PortSet.parse("5-15")
    assert str(a | b) == "1-15"
    assert str(a & b) == "5-10"
    assert str(a - b) == "1-4"
    assert not a.isdisjoint(b)
    assert PortSet.parse("1-3") == PortSet([3, 2, 1])
    assert hash(PortSet.parse("1-3")) == hash(PortSet([1, 2, 3]))
    assert 2 in a and 11 not in a


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(min_value=1, max_value=65535), max_size=60))
def test_format_then_parse_round_trips(ports: set[int]) -> None:
    text = str(PortSet(ports))
    assert set(PortSet.parse(text, allow_empty=True)) == ports
    # Canonical: ascending ranges, each at least one apart from the next.
    bounds = list(PortSet(ports).ranges())
    for (_, hi), (lo, _) in itertools.pairwise(bounds):
        assert lo > hi + 1
