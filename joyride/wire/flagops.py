"""Fast ``&`` and ``|`` for ``TcpFlags`` (see ``joyride.wire.tcp``).

IntFlag's own operators go through enum's generic constructor (``__call__``,
``_missing_``): about 1 µs each, and the TCP core tests flags several times per segment
(a sixth of the Python time of a short connection went there). ``install`` replaces
them by lookups in the table of every flags byte. This module stays interpreted (it is
not in setup.py's ``COMPILED``): a compiled function set on a class does not bind as a
method.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def install(cls: Any, by_byte: Sequence[Any]) -> None:
    def and_(self: int, other: int) -> Any:
        return by_byte[int(self) & int(other) & 0xFF]

    def or_(self: int, other: int) -> Any:
        return by_byte[(int(self) | int(other)) & 0xFF]

    for name, op in (("__and__", and_), ("__rand__", and_), ("__or__", or_),
                     ("__ror__", or_)):
        setattr(cls, name, op)
