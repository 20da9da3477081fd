"""IPv4 headers (RFC 791 §3.1): parse with every length checked, emit with the checksum.

Options are carried as raw bytes: the stack acts on none of them, but their lengths are
validated so that a malformed header is rejected rather than half-read. Fragments are
refused (the stack does not reassemble; peers using PMTUD and MSS never send them).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from joyride.wire.checksum import internet_checksum
from joyride.wire.errors import IntegrityError, Reason, SanityError

IPV4_HLEN: Final = 20
IPV4_MAX_HLEN: Final = 60
IPPROTO_TCP: Final = 6
_DF: Final = 0x4000
_MF: Final = 0x2000
_OFFSET_MASK: Final = 0x1FFF
# version/IHL, TOS, total length, ident, flags/fragment offset, TTL, protocol, checksum
_FIXED = struct.Struct("!BBHHHBBH4s4s")


@dataclass(frozen=True, slots=True)
class Ipv4Header:
    src: bytes  # 4 bytes, network order
    dst: bytes  # 4 bytes, network order
    proto: int = IPPROTO_TCP
    ttl: int = 64
    tos: int = 0  # DSCP and ECN, the whole second byte
    ident: int = 0
    dont_fragment: bool = True
    options: bytes = b""  # raw, a multiple of 4 bytes, at most 40

    @property
    def header_len(self) -> int:
        return IPV4_HLEN + len(self.options)


def _check_options(hdr: memoryview, ihl: int) -> None:
    """RFC 791 §3.1: EOL ends the list, NOP is one byte, others carry a length >= 2."""
    i = IPV4_HLEN
    while i < ihl:
        kind = hdr[i]
        if kind == 0:
            return
        if kind == 1:
            i += 1
            continue
        if i + 1 >= ihl or hdr[i + 1] < 2 or i + hdr[i + 1] > ihl:
            raise IntegrityError(Reason.IP_BAD_OPTION_LENGTH, f"option {kind} at {i}")
        i += hdr[i + 1]


def is_martian(addr: bytes | memoryview) -> bool:
    """RFC 1122 §3.2.1.3: 0/8, 127/8 and 224/3 (multicast, class E, broadcast) are never
    valid TCP endpoints on the wire (and RFC 1122 §4.2.3.10 forbids TCP to broadcast or
    multicast)."""
    first = addr[0]
    return first == 0 or first == 127 or first >= 224


def parse_ipv4(
    data: bytes | bytearray | memoryview, *, verify_checksum: bool = True
) -> tuple[Ipv4Header, memoryview]:
    """Parse one IPv4 header; returns it and a view of exactly the payload.

    Bytes after the total length (Ethernet padding) are ignored. The protocol is the
    caller's to judge; fragments and martian addresses are ``SanityError``.
    """
    mv = memoryview(data)
    if len(mv) < IPV4_HLEN:
        raise IntegrityError(Reason.IP_TRUNCATED, f"{len(mv)} bytes")
    vihl, tos, total, ident, frag, ttl, proto, _csum, src, dst = _FIXED.unpack_from(mv)
    if vihl >> 4 != 4:
        raise IntegrityError(Reason.IP_BAD_VERSION, f"version {vihl >> 4}")
    ihl = (vihl & 0x0F) * 4
    if ihl < IPV4_HLEN or ihl > len(mv):
        raise IntegrityError(Reason.IP_BAD_HEADER_LENGTH, f"{ihl} of {len(mv)} bytes")
    if total < ihl:
        raise IntegrityError(Reason.IP_BAD_TOTAL_LENGTH, f"total {total} < header {ihl}")
    if total > len(mv):
        raise IntegrityError(Reason.IP_TRUNCATED, f"total {total} > {len(mv)} bytes")
    if verify_checksum and internet_checksum(mv[:ihl]) != 0:
        raise IntegrityError(Reason.IP_BAD_CHECKSUM)
    if ihl > IPV4_HLEN:
        _check_options(mv, ihl)
    if frag & (_MF | _OFFSET_MASK):
        raise SanityError(Reason.IP_FRAGMENT, f"flags/offset {frag:#06x}")
    if is_martian(src):
        raise SanityError(Reason.IP_BAD_SRC_ADDR, src.hex())
    if is_martian(dst):
        raise SanityError(Reason.IP_BAD_DST_ADDR, dst.hex())
    hdr = Ipv4Header(
        src,
        dst,
        proto,
        ttl,
        tos,
        ident,
        bool(frag & _DF),
        bytes(mv[IPV4_HLEN:ihl]) if ihl > IPV4_HLEN else b"",
    )
    return hdr, mv[ihl:total]


def emit_ipv4_into(
    buf: bytearray | memoryview, offset: int, hdr: Ipv4Header, payload_len: int
) -> int:
    """Write the header (checksum filled in) at ``buf[offset:]``; returns its length."""
    hl = hdr.header_len
    if len(hdr.options) % 4 or hl > IPV4_MAX_HLEN:
        raise ValueError("IPv4 options must be a multiple of 4 bytes, at most 40")
    if len(hdr.src) != 4 or len(hdr.dst) != 4:
        raise ValueError("IPv4 addresses are 4 bytes")
    total = hl + payload_len
    if total > 0xFFFF:
        raise ValueError(f"IPv4 packet of {total} bytes exceeds 65535")
    h = bytearray(hl)
    h[0] = 0x40 | (hl // 4)
    h[1] = hdr.tos
    h[2:4] = total.to_bytes(2, "big")
    h[4:6] = hdr.ident.to_bytes(2, "big")
    h[6:8] = (_DF if hdr.dont_fragment else 0).to_bytes(2, "big")
    h[8] = hdr.ttl
    h[9] = hdr.proto
    h[12:16] = hdr.src
    h[16:20] = hdr.dst
    h[20:] = hdr.options
    h[10:12] = internet_checksum(h).to_bytes(2, "big")
    buf[offset : offset + hl] = h
    return hl


def emit_ipv4(hdr: Ipv4Header, payload: bytes | bytearray | memoryview = b"") -> bytes:
    buf = bytearray(hdr.header_len + len(payload))
    n = emit_ipv4_into(buf, 0, hdr, len(payload))
    buf[n:] = payload
    return bytes(buf)
