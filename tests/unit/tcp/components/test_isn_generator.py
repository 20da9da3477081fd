"""IsnGenerator against RFC 6528."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from joyride.tcp.isn import TICKS_PER_SECOND, IsnGenerator
from joyride.wire.seq import Seq

A = bytes([10, 0, 0, 1])
B = bytes([10, 0, 0, 2])


def test_isn_advances_with_4us_clock() -> None:
    # RFC 6528 §3 / RFC 9293 §3.4.1: M ticks every 4 µs; F is fixed per tuple.
    gen = IsnGenerator(b"k" * 16)
    i0 = gen.isn(A, 80, B, 40000, 100.0)
    i1 = gen.isn(A, 80, B, 40000, 100.001)
    i2 = gen.isn(A, 80, B, 40000, 101.0)
    assert i1 - i0 == 250
    assert i2 - i0 == TICKS_PER_SECOND
    assert i0 < i1 < i2


def test_isn_differs_per_four_tuple() -> None:
    # RFC 6528 §3: F() keyed on the connection-id makes ISNs differ across tuples.
    gen = IsnGenerator(b"k" * 16)
    base = gen.isn(A, 80, B, 40000, 5.0)
    variants = {
        gen.isn(B, 80, B, 40000, 5.0),
        gen.isn(A, 81, B, 40000, 5.0),
        gen.isn(A, 80, A, 40000, 5.0),
        gen.isn(A, 80, B, 40001, 5.0),
        gen.isn(B, 40000, A, 80, 5.0),
    }
    assert base not in variants and len(variants) == 5


def test_isn_depends_on_secret() -> None:
    # RFC 6528 §3: without the key, an attacker cannot predict F().
    assert IsnGenerator(b"a" * 16).isn(A, 1, B, 2, 0.0) != IsnGenerator(b"b" * 16).isn(
        A, 1, B, 2, 0.0
    )
    assert IsnGenerator().isn(A, 1, B, 2, 0.0) != IsnGenerator().isn(A, 1, B, 2, 0.0)


def test_same_secret_same_isn() -> None:
    assert IsnGenerator(b"s").isn(A, 1, B, 2, 3.0) == IsnGenerator(b"s").isn(A, 1, B, 2, 3.0)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
    st.floats(min_value=0.0, max_value=8000.0, allow_nan=False),
    st.integers(min_value=0, max_value=65535),
)
def test_isn_wraps_modulo_2_32(start: float, elapsed: float, port: int) -> None:
    # The 4-µs clock wraps every 2**32 / 250000 s (about 4.77 h); the ISN delta is the
    # tick count modulo 2**32, and Seq arithmetic sees it as "later" for < 2**31 ticks.
    gen = IsnGenerator(b"wrap")
    i0 = gen.isn(A, port, B, 443, start)
    i1 = gen.isn(A, port, B, 443, start + elapsed)
    ticks = int((start + elapsed) * TICKS_PER_SECOND) - int(start * TICKS_PER_SECOND)
    assert (int(i1) - int(i0)) % (1 << 32) == ticks % (1 << 32)
    assert isinstance(i1, Seq) and 0 <= int(i1) < 1 << 32
    if ticks < 1 << 31:
        assert i1 >= i0
