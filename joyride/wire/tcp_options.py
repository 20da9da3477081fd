"""TCP options (RFC 9293 §3.2): MSS, window scale, SACK-permitted, SACK, timestamps.

Parsing walks the option list once: EOL ends it, NOP is one byte, every other kind has
a length byte that must be at least 2 and fit in the header, and the kinds we know must
have their exact lengths (RFC 9293 §3.2 asks receivers to cope with illegal lengths; we
refuse the segment as an ``IntegrityError``). Unknown kinds are skipped by length. When
an option appears twice the last one wins, as in the compiled parser.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from joyride.wire.errors import IntegrityError, Reason
from joyride.wire.seq import Seq

EOL: Final = 0
NOP: Final = 1
MSS: Final = 2
WSCALE: Final = 3
SACK_PERMITTED: Final = 4
SACK: Final = 5
TIMESTAMPS: Final = 8

MAX_OPTIONS_LEN: Final = 40

_U32x2 = struct.Struct("!II")


@dataclass(frozen=True, slots=True)
class TcpOptions:
    mss: int | None = None
    wscale: int | None = None  # shift count as sent (receiver clamps to 14, RFC 7323 §2.3)
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[Seq, Seq], ...] = ()  # (left, right) edges, right exclusive
    timestamps: tuple[int, int] | None = None  # (TSval, TSecr)


NO_OPTIONS: Final = TcpOptions()


@dataclass(slots=True)
class _Found:
    """Mutable accumulator for one walk, and whether it saw anything but NOP/EOL/TS."""

    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[Seq, Seq], ...] = ()
    timestamps: tuple[int, int] | None = None
    only_ts: bool = True


def _bad(kind: int, at: int, olen: int | None = None) -> IntegrityError:
    what = f"option {kind} at {at}" + ("" if olen is None else f" length {olen}")
    return IntegrityError(Reason.TCP_BAD_OPTION_LENGTH, what)


def parse_options(opts: bytes | memoryview) -> tuple[TcpOptions, bool]:
    """Parse the option bytes of one header; returns the options and whether they were
    all NOP/EOL/timestamps (the header-prediction shape, RFC 7323 Appendix A)."""
    if not opts:
        return NO_OPTIONS, True
    f = _Found()
    end = len(opts)
    i = 0
    while i < end:
        kind = opts[i]
        if kind == EOL:
            break
        if kind == NOP:
            i += 1
            continue
        if i + 1 >= end:
            raise _bad(kind, i)
        olen = opts[i + 1]
        if olen < 2 or i + olen > end:
            raise _bad(kind, i, olen)
        if kind == MSS:
            if olen != 4:
                raise _bad(kind, i, olen)
            f.mss = (opts[i + 2] << 8) | opts[i + 3]
            f.only_ts = False
        elif kind == WSCALE:
            if olen != 3:
                raise _bad(kind, i, olen)
            f.wscale = opts[i + 2]
            f.only_ts = False
        elif kind == SACK_PERMITTED:
            if olen != 2:
                raise _bad(kind, i, olen)
            f.sack_permitted = True
            f.only_ts = False
        elif kind == SACK:
            # RFC 2018 §3: 2 + 8n bytes, n >= 1 (at most 4 fit in 40 bytes).
            if olen < 10 or (olen - 2) % 8:
                raise _bad(kind, i, olen)
            f.sack_blocks = tuple(
                (Seq(left), Seq(right))
                for left, right in _U32x2.iter_unpack(bytes(opts[i + 2 : i + olen]))
            )
            f.only_ts = False
        elif kind == TIMESTAMPS:
            if olen != 10:
                raise _bad(kind, i, olen)
            tsval, tsecr = _U32x2.unpack_from(opts, i + 2)
            f.timestamps = (tsval, tsecr)
        else:
            f.only_ts = False  # unknown kinds are skipped by their length
        i += olen
    return (
        TcpOptions(f.mss, f.wscale, f.sack_permitted, f.sack_blocks, f.timestamps),
        f.only_ts,
    )


def options_len(o: TcpOptions) -> int:
    """Bytes ``emit_options`` writes for ``o`` (a multiple of 4)."""
    n = 0
    if o.mss is not None:
        n += 4
    if o.timestamps is not None or o.sack_permitted:
        n += 12 if o.timestamps is not None else 4
    if o.wscale is not None:
        n += 4
    if o.sack_blocks:
        n += 4 + 8 * len(o.sack_blocks)
    return n


def emit_options(o: TcpOptions) -> bytes:
    """Encode in the layout Linux uses, 4-byte aligned with NOPs (RFC 7323 Appendix A):
    MSS, SACK-permitted + timestamps (or NOP NOP + either), NOP + window scale,
    NOP NOP + SACK blocks. Raises ``ValueError`` if the result exceeds 40 bytes."""
    out = bytearray()
    if o.mss is not None:
        out += bytes((MSS, 4)) + o.mss.to_bytes(2, "big")
    if o.timestamps is not None:
        out += bytes((SACK_PERMITTED, 2)) if o.sack_permitted else bytes((NOP, NOP))
        out += bytes((TIMESTAMPS, 10)) + _U32x2.pack(*o.timestamps)
    elif o.sack_permitted:
        out += bytes((NOP, NOP, SACK_PERMITTED, 2))
    if o.wscale is not None:
        out += bytes((NOP, WSCALE, 3, o.wscale))
    if o.sack_blocks:
        out += bytes((NOP, NOP, SACK, 2 + 8 * len(o.sack_blocks)))
        for left, right in o.sack_blocks:
            out += _U32x2.pack(int(left), int(right))
    if len(out) > MAX_OPTIONS_LEN:
        raise ValueError(f"TCP options need {len(out)} bytes, at most 40 fit")
    return bytes(out)
