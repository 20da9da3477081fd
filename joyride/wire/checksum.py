"""The internet checksum (RFC 1071) and the TCP pseudo-header sum (RFC 9293 §3.1).

``ones_sum`` is the folded 16-bit ones' complement sum, not inverted; a checksum field
holds its complement, and a received header verifies when the sum over it, checksum
included, is 0xFFFF (``internet_checksum(...) == 0``). The compiled ``joyride._wire``
does the work when it is built; the pure-Python fallback computes the same thing with
one big-integer reduction, since 2**16 ≡ 1 (mod 0xFFFF) makes the sum of the 16-bit
words congruent to the whole buffer read as one big-endian integer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from joyride.wire._native import ffi, lib

IPPROTO_TCP: Final = 6

Buffer = bytes | bytearray | memoryview


def _ones_sum_py(data: Buffer, initial: int = 0) -> int:
    x = int.from_bytes(data, "big")
    if len(data) & 1:
        x <<= 8  # the odd byte is the high byte of a zero-padded word
    total = x + initial
    if total == 0:
        return 0
    # End-around-carry addition of values that are not all zero never yields +0.
    return total % 0xFFFF or 0xFFFF


def _ones_sum_c(data: Buffer, initial: int = 0) -> int:
    return int(lib.wire_ones_sum(ffi.from_buffer(data), len(data), initial))


ones_sum: Callable[[Buffer, int], int]
ones_sum = _ones_sum_c if lib is not None else _ones_sum_py


def internet_checksum(data: Buffer, initial: int = 0) -> int:
    """The value to put in a checksum field covering ``data`` (plus ``initial``)."""
    return ~ones_sum(data, initial) & 0xFFFF


def pseudo_header_sum(src_ip: bytes, dst_ip: bytes, proto: int, length: int) -> int:
    """Folded ones' complement sum of the pseudo-header, for either family: IPv4's
    (RFC 9293 §3.1: addresses, zero, protocol, TCP length) or IPv6's (RFC 8200 §8.1:
    addresses, 32-bit upper-layer length, zeros, next header). Both are the 16-bit words
    of the two addresses plus the protocol plus the length, since a length below 2**16
    has no high word and the zero bytes add nothing."""
    if len(src_ip) not in (4, 16) or len(dst_ip) != len(src_ip):
        raise ValueError("addresses are 4 (IPv4) or 16 (IPv6) bytes, both the same")
    s = int(ones_sum(src_ip + dst_ip, 0)) + proto + length
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s
