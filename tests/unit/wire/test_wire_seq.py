"""Property tests for the wrapping ``Seq`` type across 2**32 wraparound (RFC 9293 §3.4)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from joyride.wire.seq import HALF, MOD, Seq

u32 = st.integers(0, MOD - 1)
# Distances that comparisons can order: strictly inside half the sequence space.
dist = st.integers(-(HALF - 1), HALF - 1)


@given(u32, st.integers(-(2**40), 2**40))
def test_add_wraps_modulo_2_32(a: int, n: int) -> None:
    assert int(Seq(a) + n) == (a + n) % MOD
    assert int(n + Seq(a)) == (a + n) % MOD
    assert int(Seq(a) - n) == (a - n) % MOD


@given(u32, dist)
def test_difference_is_signed_distance(a: int, d: int) -> None:
    s = Seq(a)
    assert (s + d) - s == d
    assert s - (s + d) == -d
    assert (s + d).diff(s) == d


@given(u32, u32)
def test_difference_range(a: int, b: int) -> None:
    d = Seq(a) - Seq(b)
    assert -HALF <= d < HALF
    assert Seq(b) + d == Seq(a)


@given(u32, dist)
def test_ordering_follows_distance(a: int, d: int) -> None:
    s, t = Seq(a), Seq(a) + d
    assert (s < t) == (d > 0)
    assert (s <= t) == (d >= 0)
    assert (s > t) == (d < 0)
    assert (s >= t) == (d <= 0)
    assert (s == t) == (d == 0)
    assert Seq.max(s, t) == (t if d >= 0 else s)
    assert Seq.min(s, t) == (s if d >= 0 else t)


def test_ordering_across_the_wrap() -> None:
    top = Seq(MOD - 1)
    assert top < Seq(0)
    assert top + 1 == Seq(0)
    assert Seq(0) - top == 1
    assert Seq(5) - Seq(MOD - 5) == 10


@given(u32, u32, st.integers(0, MOD))
def test_in_window(start: int, off: int, size: int) -> None:
    # start <= x < start + size modulo 2**32, the RFC 9293 §3.4 acceptability shape.
    x = Seq(start + off)
    assert x.in_window(Seq(start), size) == (off < size)


@given(u32)
def test_value_hash_and_immutability(a: int) -> None:
    s = Seq(a + MOD)
    assert int(s) == a
    assert hash(s) == hash(Seq(a))
    assert s != a  # a Seq never equals a plain int: no silent mixing
    try:
        s.value = 3
    except AttributeError:
        pass
    else:
        raise AssertionError("Seq must be immutable")
