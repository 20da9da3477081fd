"""Parse errors and the table of drop reasons.

Two kinds of error, as in PyTCP:

* ``IntegrityError``: the bytes are unsafe to interpret (truncated, inconsistent
  lengths, bad checksum, malformed option lengths).
* ``SanityError``: the bytes parse cleanly but carry something we refuse
  (fragments, SYN+FIN, port 0, martian addresses, a protocol we do not serve).

Every error carries ``reason``, a short stable string the engine uses as a drop-counter
key. The numeric ``Reason`` codes are shared with the compiled batch parser
(``cffi_build/wire.h``, ``enum wire_reason``); a unit test keeps the two in step.
"""

from __future__ import annotations

import enum


class Reason(enum.IntEnum):
    """Why a frame was dropped; 0 means it was accepted. Codes match ``wire.h``."""

    OK = 0
    # Integrity: unsafe to parse.
    ETH_TRUNCATED = 1
    IP_TRUNCATED = 2
    IP_BAD_VERSION = 3
    IP_BAD_HEADER_LENGTH = 4
    IP_BAD_TOTAL_LENGTH = 5
    IP_BAD_CHECKSUM = 6
    IP_BAD_OPTION_LENGTH = 7
    TCP_TRUNCATED = 8
    TCP_BAD_HEADER_LENGTH = 9
    TCP_BAD_CHECKSUM = 10
    TCP_BAD_OPTION_LENGTH = 11
    IP6_BAD_EXTENSION = 12
    # Sanity: parsed, but not allowed.
    ETH_NOT_IPV4 = 32
    IP_FRAGMENT = 33
    IP_BAD_SRC_ADDR = 34
    IP_BAD_DST_ADDR = 35
    IP_NOT_TCP = 36
    TCP_ZERO_PORT = 37
    TCP_SYN_FIN = 38
    IP6_OPTION = 39
    IP6_ROUTING = 40
    IP6_HEADER_CHAIN = 41
    IP6_JUMBOGRAM = 42

    @property
    def key(self) -> str:
        """The counter key, e.g. ``"tcp_bad_checksum"``."""
        return self.name.lower()

    @property
    def is_integrity(self) -> bool:
        return 0 < self.value < _SANITY_BASE


# Codes at or above this value are sanity errors (mirrors WIRE_SANITY_BASE in wire.h).
_SANITY_BASE = 32


class ParseError(Exception):
    """Base of both kinds; ``reason`` is the drop-counter key (a plain ``str``)."""

    reason: str
    code: Reason | None

    def __init__(self, reason: Reason | str, detail: str = "") -> None:
        if isinstance(reason, Reason):
            code: Reason | None = reason
            key = reason.key
        else:
            key = reason
            code = Reason.__members__.get(reason.upper())
        super().__init__(f"{key}: {detail}" if detail else key)
        self.reason = key
        self.code = code


class IntegrityError(ParseError):
    """The bytes are unsafe to parse (truncated, bad lengths, bad checksum)."""


class SanityError(ParseError):
    """The bytes parsed but are not allowed (fragments, SYN+FIN, port 0, ...)."""


def error_for(code: Reason, detail: str = "") -> ParseError:
    """The exception matching a non-OK ``Reason`` (used for C batch results too)."""
    if code is Reason.OK:
        raise ValueError("Reason.OK is not an error")
    cls = IntegrityError if code.is_integrity else SanityError
    return cls(code, detail)
