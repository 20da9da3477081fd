"""TCP sequence numbers: 32-bit values compared modulo 2**32 (RFC 9293 §3.4).

``Seq`` is the one wrapping type used everywhere a sequence or acknowledgment number
appears. Differences between two ``Seq`` are plain signed ``int`` in [-2**31, 2**31),
so "how far ahead is b of a" is ``b - a`` and window checks read like the RFC.
"""

from __future__ import annotations

import types
from typing import Final, overload

MOD: Final = 1 << 32
MASK: Final = MOD - 1
HALF: Final = 1 << 31


class Seq:
    """An immutable sequence number modulo 2**32."""

    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        # Compiled (mypyc), a Final attribute is a direct store that __setattr__ does
        # not see; interpreted, _interpreted_init below takes this method's place.
        self.value: Final = value & MASK

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Seq is immutable")

    def __add__(self, n: int) -> Seq:
        return Seq(self.value + n)

    def __radd__(self, n: int) -> Seq:
        return Seq(self.value + n)

    @overload
    def __sub__(self, other: Seq) -> int: ...
    @overload
    def __sub__(self, other: int) -> Seq: ...
    def __sub__(self, other: Seq | int) -> int | Seq:
        """``Seq - Seq`` is the signed distance; ``Seq - int`` steps backwards."""
        if isinstance(other, Seq):
            return ((self.value - other.value + HALF) & MASK) - HALF
        return Seq(self.value - other)

    def diff(self, other: Seq) -> int:
        """Signed distance ``self - other`` in [-2**31, 2**31)."""
        return ((self.value - other.value + HALF) & MASK) - HALF

    # The comparisons inline ``diff``: they run several times per segment.
    def __lt__(self, other: Seq) -> bool:
        return ((self.value - other.value + HALF) & MASK) < HALF

    def __le__(self, other: Seq) -> bool:
        return ((self.value - other.value + HALF) & MASK) <= HALF

    def __gt__(self, other: Seq) -> bool:
        return ((self.value - other.value + HALF) & MASK) > HALF

    def __ge__(self, other: Seq) -> bool:
        return ((self.value - other.value + HALF) & MASK) >= HALF

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Seq) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __int__(self) -> int:
        return self.value

    def __index__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"Seq({self.value})"

    def in_window(self, start: Seq, size: int) -> bool:
        """``start <= self < start + size`` modulo 2**32 (an empty window holds nothing)."""
        return 0 <= ((self.value - start.value) & MASK) < size

    @staticmethod
    def max(a: Seq, b: Seq) -> Seq:
        return a if ((a.value - b.value + HALF) & MASK) >= HALF else b

    @staticmethod
    def min(a: Seq, b: Seq) -> Seq:
        return a if ((a.value - b.value + HALF) & MASK) <= HALF else b


if isinstance(vars(Seq)["__init__"], types.FunctionType):
    # Interpreted: the store in __init__ would meet __setattr__, so write through the
    # slot's own setter instead (mypyc refuses ``Seq.value`` at compile time, hence
    # getattr).
    _set_value = getattr(Seq, "value").__set__  # noqa: B009

    def _interpreted_init(self: Seq, value: int) -> None:
        _set_value(self, value & MASK)

    setattr(Seq, "__init__", _interpreted_init)  # noqa: B010
