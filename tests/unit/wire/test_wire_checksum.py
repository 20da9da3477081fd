"""The internet checksum against a word-by-word RFC 1071 reference, in both the compiled
and the pure-Python implementations."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from joyride.wire import checksum
from joyride.wire._native import lib
from joyride.wire.checksum import internet_checksum, ones_sum, pseudo_header_sum


def reference_ones_sum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 §4.1, literally: add 16-bit big-endian words, fold carries back in."""
    if len(data) % 2:
        data += b"\x00"
    s = initial
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return s


IMPLS = [pytest.param(checksum._ones_sum_py, id="python")]
if lib is not None:
    IMPLS.append(pytest.param(checksum._ones_sum_c, id="c"))


def test_compiled_module_is_built() -> None:
    # The project builds joyride._wire at install; a missing build must fail loudly here.
    assert lib is not None
    assert ones_sum is checksum._ones_sum_c


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2000), initial=st.integers(0, 0xFFFF))
def test_matches_reference(impl: Callable[..., int], data: bytes, initial: int) -> None:
    assert impl(data, initial) == reference_ones_sum(data, initial)


@pytest.mark.parametrize("impl", IMPLS)
@given(data=st.binary(min_size=1, max_size=200), split=st.integers(0, 100))
def test_even_split_sums_compose(impl: Callable[..., int], data: bytes, split: int) -> None:
    cut = min(split * 2, len(data))  # ones' complement sums compose at even offsets
    assert impl(data[cut:], impl(data[:cut], 0)) == reference_ones_sum(data)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 31, 32, 33, 63, 64, 65, 1499, 1500, 9000])
def test_lengths_around_the_unrolled_loop(impl: Callable[..., int], n: int) -> None:
    for fill in (0x00, 0xFF, 0xA5):
        data = bytes([fill]) * n
        assert impl(data, 0) == reference_ones_sum(data)
    data = bytes(range(256)) * (n // 256 + 1)
    assert impl(data[:n], 0) == reference_ones_sum(data[:n])


def test_rfc1071_and_wikipedia_examples() -> None:
    # RFC 1071 §3 numerical example: the sum of these words is ddf2.
    assert ones_sum(bytes.fromhex("0001f203f4f5f6f7"), 0) == 0xDDF2
    # The classic IPv4 header (Wikipedia "Internet checksum"): checksum b861.
    hdr = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert internet_checksum(hdr) == 0xB861
    filled = hdr[:10] + b"\xb8\x61" + hdr[12:]
    assert internet_checksum(filled) == 0


def test_verifying_a_filled_in_checksum_gives_zero() -> None:
    data = bytearray(bytes(range(100)))
    data[10:12] = b"\x00\x00"
    data[10:12] = internet_checksum(data).to_bytes(2, "big")
    assert internet_checksum(data) == 0


@given(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4), st.integers(0, 0xFFFF))
def test_pseudo_header_sum(src: bytes, dst: bytes, length: int) -> None:
    pseudo = src + dst + bytes((0, 6)) + length.to_bytes(2, "big")
    assert pseudo_header_sum(src, dst, 6, length) == reference_ones_sum(pseudo)
