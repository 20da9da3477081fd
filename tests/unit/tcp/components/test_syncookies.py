"""SYN cookies (RFC 4987 §3.6, Linux layout)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from joyride.tcp.syncookies import (
    MSS_TABLE,
    SynCookies,
    decode_ts_options,
    embed_ts_options,
    encode_ts_options,
)
from joyride.wire.seq import Seq

L = bytes([192, 168, 1, 1])
R = bytes([192, 168, 1, 2])


def test_round_trip_returns_encoded_mss() -> None:
    sc = SynCookies(b"secret-key-0123456789")
    cookie, mss = sc.make(L, 80, R, 5555, Seq(1000), 1460, now=10.0)
    assert mss == 1460
    assert sc.check(L, 80, R, 5555, Seq(1000), cookie, now=10.0) == 1460


@pytest.mark.parametrize(
    ("offered", "encoded"),
    [(1460, 1460), (1459, 1440), (9000, 8960), (536, 536), (1000, 536), (20, 64)],
)
def test_mss_rounded_down_to_table(offered: int, encoded: int) -> None:
    sc = SynCookies(b"k")
    cookie, mss = sc.make(L, 80, R, 5555, Seq(7), offered, now=0.0)
    assert mss == encoded
    assert sc.check(L, 80, R, 5555, Seq(7), cookie, now=0.0) == encoded


def test_valid_in_own_and_next_period_then_expires() -> None:
    # RFC 4987 §3.6: the counter t bounds a cookie's life; ours: two 64-s periods.
    sc = SynCookies(b"k")
    cookie, _ = sc.make(L, 80, R, 5555, Seq(1), 1460, now=64.0 * 10 + 1)
    assert sc.check(L, 80, R, 5555, Seq(1), cookie, now=64.0 * 10 + 63.9) == 1460
    assert sc.check(L, 80, R, 5555, Seq(1), cookie, now=64.0 * 11 + 63.9) == 1460
    assert sc.check(L, 80, R, 5555, Seq(1), cookie, now=64.0 * 12) is None
    # A cookie from the future (clock step) is not accepted either.
    assert sc.check(L, 80, R, 5555, Seq(1), cookie, now=64.0 * 9) is None


def test_valid_across_counter_wrap() -> None:
    # Only 8 counter bits live in the cookie; 255 -> 256 must still be "next period".
    sc = SynCookies(b"k")
    cookie, _ = sc.make(L, 80, R, 5555, Seq(1), 1460, now=64.0 * 255)
    assert sc.check(L, 80, R, 5555, Seq(1), cookie, now=64.0 * 256) == 1460


def test_wrong_tuple_isn_or_key_rejected() -> None:
    sc = SynCookies(b"k")
    cookie, _ = sc.make(L, 80, R, 5555, Seq(1), 1460, now=0.0)
    assert sc.check(L, 80, R, 5556, Seq(1), cookie, now=0.0) is None
    assert sc.check(L, 81, R, 5555, Seq(1), cookie, now=0.0) is None
    assert sc.check(R, 80, L, 5555, Seq(1), cookie, now=0.0) is None
    assert sc.check(L, 80, R, 5555, Seq(2), cookie, now=0.0) is None
    assert SynCookies(b"other").check(L, 80, R, 5555, Seq(1), cookie, now=0.0) is None


def test_forgeries_rejected() -> None:
    # A blind attacker guesses the cookie: success chance is 8 / 2**24 per guess, so
    # 5000 consecutive values (and all bit flips of a real one) must all fail.
    sc = SynCookies(b"k")
    cookie, _ = sc.make(L, 80, R, 5555, Seq(1), 1460, now=0.0)
    accepted = sum(
        sc.check(L, 80, R, 5555, Seq(1), Seq(int(cookie) + d), now=0.0) is not None
        for d in range(1, 5001)
    )
    assert accepted == 0
    for bit in range(32):
        forged = Seq(int(cookie) ^ (1 << bit))
        assert sc.check(L, 80, R, 5555, Seq(1), forged, now=0.0) is None


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.integers(min_value=1, max_value=65535),
    st.integers(min_value=0, max_value=65535),
    st.floats(min_value=0, max_value=1e9, allow_nan=False),
)
def test_round_trip_property(isn: int, port: int, mss: int, now: float) -> None:
    sc = SynCookies(b"prop")
    cookie, enc = sc.make(L, port, R, 443, Seq(isn), mss, now)
    assert enc in MSS_TABLE
    assert enc <= max(mss, MSS_TABLE[0])
    assert sc.check(L, port, R, 443, Seq(isn), cookie, now) == enc


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=0, max_value=2**32 - 1))
def test_check_never_raises_on_arbitrary_input(isn: int, cookie: int) -> None:
    result = SynCookies(b"k").check(L, 1, R, 2, Seq(isn), Seq(cookie), 1234.0)
    assert result is None or result in MSS_TABLE


@pytest.mark.parametrize(
    ("wscale", "sack"),
    [(None, False), (None, True), (0, False), (7, True), (14, True)],
)
def test_ts_options_round_trip(wscale: int | None, sack: bool) -> None:
    bits = encode_ts_options(wscale, sack)
    assert 0 <= bits < 64
    assert decode_ts_options(bits) == (wscale, sack)
    assert decode_ts_options(0xABCDEF00 | bits) == (wscale, sack)


def test_ts_options_wscale_clamped_to_14() -> None:
    # RFC 7323 §2.3: shift counts above 14 are treated as 14.
    assert decode_ts_options(encode_ts_options(20, False)) == (14, False)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1),
       st.one_of(st.none(), st.integers(min_value=0, max_value=14)), st.booleans())
def test_embed_ts_options_never_moves_tsval_forward(
    tsval: int, wscale: int | None, sack: bool
) -> None:
    # RFC 7323 §5.4: TSval must not jump ahead of the clock.
    ts = embed_ts_options(tsval, wscale, sack)
    assert decode_ts_options(ts) == (wscale, sack)
    assert 0 <= Seq(tsval) - Seq(ts) < 128
