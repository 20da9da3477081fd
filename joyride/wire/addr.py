"""IP addresses in the fixed 16-byte form the C data plane keys flows by (``struct
dp_tcb``, ``struct wire_template``): an IPv6 address as it is, an IPv4 address in the
first 4 bytes with the other 12 zero, and the family beside it (a flag, so that an
IPv4 address never matches an IPv6 one that starts with the same bytes)."""

from __future__ import annotations

import socket
from typing import Final

WIDE: Final = 16


def widen(ip: bytes) -> bytes:
    """``ip`` (4 or 16 bytes) in the 16-byte form."""
    if len(ip) == WIDE:
        return ip
    if len(ip) != 4:
        raise ValueError(f"an IP address is 4 or 16 bytes, not {len(ip)}")
    return ip + bytes(WIDE - 4)


def narrow(wide: bytes, ipv6: bool) -> bytes:
    """The address ``widen`` made ``wide`` from, given its family."""
    return bytes(wide[:WIDE]) if ipv6 else bytes(wide[:4])


def text(ip: bytes) -> str:
    """``ip`` (4 or 16 bytes) as netlink and people write it: dotted or RFC 5952."""
    return socket.inet_ntop(socket.AF_INET6 if len(ip) == WIDE else socket.AF_INET, ip)


def written_ipv6(address: str | None) -> bool:
    """Is ``address`` (as people write it) an IPv6 one? Only IPv6 is written with ':'."""
    return address is not None and ":" in address


def packed(address: str) -> bytes:
    """The bytes of a written address of either family (4 or 16)."""
    return socket.inet_pton(socket.AF_INET6 if written_ipv6(address) else socket.AF_INET,
                            address)
