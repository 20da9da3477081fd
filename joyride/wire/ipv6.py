"""IPv6 headers (RFC 8200 §3): parse with the extension headers walked and every length
checked, emit without extension headers.

What a receiver must walk (RFC 8200 §4) and what this parser decides:

* Hop-by-Hop Options (only directly after the fixed header, §4.3) and Destination
  Options (§4.6): their options are walked (Pad1, PadN, type-length-value). An option
  type this stack does not know is skipped when its two high-order bits are 00 and
  refused otherwise (§4.2: discard; the kernel, not this stack, sends ICMPv6).
* Routing (§4.4): with Segments Left 0 it is ignored, as the RFC says; with Segments
  Left above 0 the packet is not yet at its final destination and is refused.
* Fragment (§4.5): a real fragment (offset or M flag set) is refused, as for IPv4 (this
  stack does not reassemble; PMTUD and the MSS keep peers from fragmenting TCP). An
  atomic fragment (offset 0, M 0) is read as an unfragmented packet (RFC 6946 §4).
* No Next Header (59), ESP, AH and anything else end the walk; only TCP is accepted.
* At most ``MAX_EXTENSION_HEADERS`` headers and ``MAX_HEADER_CHAIN`` bytes of headers
  (the fixed one included) are walked, so a chain of padding cannot make the parser
  spend without bound (RFC 8504 §5.3 lets a node limit both); the C parser keeps the
  chain's length in one byte of its record.

Jumbograms (RFC 2675, a payload length of 0 with a Jumbo Payload option) are refused:
no link this stack drives carries them. Addresses that never source or receive a TCP
segment on the wire are refused as martians (``is_martian6``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from joyride.wire.errors import IntegrityError, Reason, SanityError

IPV6_HLEN: Final = 40
IPPROTO_TCP: Final = 6
NEXT_HOP_BY_HOP: Final = 0
NEXT_ROUTING: Final = 43
NEXT_FRAGMENT: Final = 44
NEXT_DEST_OPTIONS: Final = 60
MAX_EXTENSION_HEADERS: Final = 8
MAX_HEADER_CHAIN: Final = 255
_OPTIONS_HEADERS: Final = frozenset({NEXT_HOP_BY_HOP, NEXT_DEST_OPTIONS})
_EXTENSION_HEADERS: Final = _OPTIONS_HEADERS | {NEXT_ROUTING, NEXT_FRAGMENT}  # walked
# version/traffic class/flow label, payload length, next header, hop limit, src, dst
_FIXED = struct.Struct("!IHBB16s16s")


@dataclass(frozen=True, slots=True)
class Ipv6Header:
    src: bytes  # 16 bytes, network order
    dst: bytes  # 16 bytes, network order
    proto: int = IPPROTO_TCP  # the upper-layer protocol (after any extension headers)
    hop_limit: int = 64
    traffic_class: int = 0  # DSCP and ECN
    flow_label: int = 0  # 20 bits

    @property
    def header_len(self) -> int:
        """Bytes ``emit_ipv6_into`` writes (it writes no extension header)."""
        return IPV6_HLEN


def is_martian6(addr: bytes | memoryview) -> bool:
    """Addresses that are never a TCP endpoint on the wire: unspecified and loopback
    (RFC 4291 §2.5.2, §2.5.3: never sent off a node), multicast ff00::/8 (TCP is
    unicast, RFC 9293 §3.9.1), and IPv4-mapped ::ffff:0:0/96 (RFC 4291 §2.5.5.2: a
    socket-API notation, not a wire address; Linux drops it too)."""
    a = bytes(addr)
    if a[0] == 0xFF:
        return True
    if a[:10] != bytes(10):
        return False
    if a[10:12] == b"\xff\xff":
        return True
    return a[10:12] == b"\x00\x00" and a[12:] in (bytes(4), b"\x00\x00\x00\x01")


def _walk_options(ext: memoryview, kind: int) -> None:
    """RFC 8200 §4.2: Pad1 is one byte, every other option carries a length; an unknown
    type whose action bits are not 00 means "discard the packet"."""
    i = 2
    while i < len(ext):
        opt = ext[i]
        if opt == 0:  # Pad1
            i += 1
            continue
        if i + 1 >= len(ext) or i + 2 + ext[i + 1] > len(ext):
            raise IntegrityError(Reason.IP6_BAD_EXTENSION, f"option {opt} of header {kind}")
        if opt != 1 and opt >> 6 != 0:  # PadN (1) and skippable unknowns pass
            raise SanityError(Reason.IP6_OPTION, f"option {opt:#04x} of header {kind}")
        i += 2 + ext[i + 1]


def _walk_extensions(mv: memoryview, first: int) -> tuple[int, int]:
    """Walk the extension headers after the fixed header; returns the upper-layer
    protocol and the offset (from the IPv6 header) of its first byte."""
    nxt, at = first, IPV6_HLEN
    for _ in range(MAX_EXTENSION_HEADERS):
        if nxt not in _EXTENSION_HEADERS:
            return nxt, at
        if nxt == NEXT_HOP_BY_HOP and at != IPV6_HLEN:
            # RFC 8200 §4.1: only immediately after the IPv6 header.
            raise IntegrityError(Reason.IP6_BAD_EXTENSION, "hop-by-hop options not first")
        # Every header but the fragment header gives its length in 8-octet units, not
        # counting the first 8 (§4.3-§4.6); the fragment header is 8 bytes (§4.5).
        if at + 2 > len(mv):
            raise IntegrityError(Reason.IP6_BAD_EXTENSION, f"truncated header {nxt}")
        length = 8 if nxt == NEXT_FRAGMENT else (mv[at + 1] + 1) * 8
        if at + length > len(mv):
            raise IntegrityError(Reason.IP6_BAD_EXTENSION, f"header {nxt} of {length} bytes")
        ext = mv[at : at + length]
        if nxt in _OPTIONS_HEADERS:
            _walk_options(ext, nxt)
        elif nxt == NEXT_ROUTING and ext[3] != 0:  # Segments Left (§4.4)
            raise SanityError(Reason.IP6_ROUTING, f"{ext[3]} segments left")
        elif nxt == NEXT_FRAGMENT and int.from_bytes(ext[2:4], "big") & 0xFFF9:
            # Offset or M set: a real fragment. Offset 0 and M 0 is an atomic fragment,
            # read as the unfragmented packet it is (RFC 6946 §4).
            raise SanityError(Reason.IP_FRAGMENT, f"offset/flags {bytes(ext[2:4]).hex()}")
        nxt, at = ext[0], at + length
        if at > MAX_HEADER_CHAIN:
            raise SanityError(Reason.IP6_HEADER_CHAIN, f"{at} bytes of headers")
    if nxt in _EXTENSION_HEADERS:
        raise SanityError(Reason.IP6_HEADER_CHAIN, f"more than {MAX_EXTENSION_HEADERS}")
    return nxt, at


def parse_ipv6(data: bytes | bytearray | memoryview) -> tuple[Ipv6Header, memoryview]:
    """Parse one IPv6 header and its extension headers; returns the header (``proto``:
    the upper-layer protocol) and a view of exactly the upper-layer bytes.

    Bytes after the payload length (Ethernet padding) are ignored. The protocol is the
    caller's to judge; fragments, routing still to do and martians are ``SanityError``.
    IPv6 has no header checksum (RFC 8200 §3): the upper layer's covers the addresses.
    """
    mv = memoryview(data)
    if len(mv) < IPV6_HLEN:
        raise IntegrityError(Reason.IP_TRUNCATED, f"{len(mv)} bytes")
    vtf, payload_len, first, hop_limit, src, dst = _FIXED.unpack_from(mv)
    if vtf >> 28 != 6:
        raise IntegrityError(Reason.IP_BAD_VERSION, f"version {vtf >> 28}")
    total = IPV6_HLEN + payload_len
    if total > len(mv):
        raise IntegrityError(Reason.IP_TRUNCATED, f"payload {payload_len} > {len(mv) - 40}")
    if payload_len == 0 and first == NEXT_HOP_BY_HOP:
        raise SanityError(Reason.IP6_JUMBOGRAM)  # RFC 2675 §2
    mv = mv[:total]
    proto, at = _walk_extensions(mv, first)
    if is_martian6(src):
        raise SanityError(Reason.IP_BAD_SRC_ADDR, src.hex())
    if is_martian6(dst):
        raise SanityError(Reason.IP_BAD_DST_ADDR, dst.hex())
    hdr = Ipv6Header(src, dst, proto, hop_limit, (vtf >> 20) & 0xFF, vtf & 0xFFFFF)
    return hdr, mv[at:]


def emit_ipv6_into(
    buf: bytearray | memoryview, offset: int, hdr: Ipv6Header, payload_len: int
) -> int:
    """Write the fixed header at ``buf[offset:]``; returns its length (40)."""
    if len(hdr.src) != 16 or len(hdr.dst) != 16:
        raise ValueError("IPv6 addresses are 16 bytes")
    if payload_len > 0xFFFF:
        raise ValueError(f"IPv6 payload of {payload_len} bytes needs a jumbogram")
    if not 0 <= hdr.flow_label <= 0xFFFFF or not 0 <= hdr.traffic_class <= 0xFF:
        raise ValueError("flow label is 20 bits, traffic class 8")
    vtf = (6 << 28) | (hdr.traffic_class << 20) | hdr.flow_label
    _FIXED.pack_into(buf, offset, vtf, payload_len, hdr.proto, hdr.hop_limit, hdr.src,
                     hdr.dst)
    return IPV6_HLEN


def emit_ipv6(hdr: Ipv6Header, payload: bytes | bytearray | memoryview = b"") -> bytes:
    buf = bytearray(IPV6_HLEN + len(payload))
    emit_ipv6_into(buf, 0, hdr, len(payload))
    buf[IPV6_HLEN:] = payload
    return bytes(buf)
