"""The whole frame in one call each way: Ethernet → IPv4 → TCP.

``parse_frame`` parses one frame in Python: the reference that the engine's parser of
untrusted bytes (``joyride.wire.batch.BatchParser``, in C) is tested against, and the
parser of tests and tools. It raises only ``ParseError`` subclasses, whose ``reason``
is the drop-counter key. Checksum
verification is an explicit setting (``verify_checksums``), never silently skipped:
turn it off only where the NIC has already verified the sums.
"""

from __future__ import annotations

from dataclasses import dataclass

from joyride.wire.errors import Reason, SanityError
from joyride.wire.ethernet import (
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    EthernetHeader,
    emit_ethernet_into,
    parse_ethernet,
    require_ipv4,
)
from joyride.wire.ipv4 import IPPROTO_TCP, Ipv4Header, emit_ipv4_into, parse_ipv4
from joyride.wire.ipv6 import Ipv6Header, emit_ipv6_into, parse_ipv6
from joyride.wire.tcp import TcpSegment, emit_tcp_into, parse_tcp_ex


@dataclass(frozen=True, slots=True)
class Frame:
    eth: EthernetHeader
    ip: Ipv4Header | Ipv6Header
    tcp: TcpSegment
    # Header-prediction candidate: ACK (+PSH) only, options only NOP/EOL/timestamps.
    plain: bool = False


def parse_frame(frame: bytes | bytearray | memoryview, *, verify_checksums: bool = True,
                ipv6: bool = False) -> Frame:
    """Parse and validate a whole frame in one pass (checks in the order of ``wire.c``).
    ``ipv6``: read IPv6 frames too (``BatchParser``'s setting of the same name); without
    it an IPv6 frame is refused as any other type is."""
    eth, l3 = parse_ethernet(frame)
    ip: Ipv4Header | Ipv6Header
    if ipv6 and eth.ethertype == ETHERTYPE_IPV6:
        ip, l4 = parse_ipv6(l3)
    else:
        require_ipv4(eth)
        ip, l4 = parse_ipv4(l3, verify_checksum=verify_checksums)
    if ip.proto != IPPROTO_TCP:
        raise SanityError(Reason.IP_NOT_TCP, f"protocol {ip.proto}")
    seg, plain = parse_tcp_ex(l4, ip.src, ip.dst, verify_checksum=verify_checksums)
    return Frame(eth, ip, seg, plain)


def frame_len(eth: EthernetHeader, ip: Ipv4Header | Ipv6Header, seg: TcpSegment) -> int:
    return eth.header_len + ip.header_len + seg.header_len + len(seg.payload)


def build_frame_into(
    buf: bytearray | memoryview,
    offset: int,
    eth: EthernetHeader,
    ip: Ipv4Header | Ipv6Header,
    seg: TcpSegment,
) -> int:
    """Write the whole frame at ``buf[offset:]``, checksums filled in; returns its
    length. The Ethernet type must name the IP header's family, the protocol TCP."""
    family = ETHERTYPE_IPV4 if isinstance(ip, Ipv4Header) else ETHERTYPE_IPV6
    if eth.ethertype != family or ip.proto != IPPROTO_TCP:
        raise ValueError("build_frame writes IPv4/TCP or IPv6/TCP frames, typed to match")
    n = frame_len(eth, ip, seg)
    if len(buf) - offset < n:
        raise ValueError(f"buffer too small: need {n} bytes at offset {offset}")
    at = offset + emit_ethernet_into(buf, offset, eth)
    l4 = at + ip.header_len
    tcp_len = emit_tcp_into(buf, l4, seg, ip.src, ip.dst)
    if isinstance(ip, Ipv4Header):
        emit_ipv4_into(buf, at, ip, tcp_len)
    else:
        emit_ipv6_into(buf, at, ip, tcp_len)
    return n


def build_frame(eth: EthernetHeader, ip: Ipv4Header | Ipv6Header, seg: TcpSegment) -> bytes:
    """The frame's bytes: Ethernet (+tag) + IPv4 or IPv6 + TCP, checksums filled in."""
    buf = bytearray(frame_len(eth, ip, seg))
    build_frame_into(buf, 0, eth, ip, seg)
    return bytes(buf)


def tcp_flow_of(frame: bytes | bytearray | memoryview) -> tuple[bytes, int, bytes, int] | None:
    """(source address, source port, destination address, destination port) of an
    Ethernet frame carrying TCP over IPv4 or IPv6 (one 802.1Q tag allowed), or None.
    Only the fixed headers are read, nothing is checked: for routing frames the stack
    built itself (``joyride.dataplane.workers``), never for trusting received ones.
    IPv6 extension headers are not walked (the stack sends none)."""
    mv = memoryview(frame)
    off = 12
    if len(mv) >= 18 and mv[12:14] == b"\x81\x00":
        off = 16
    if len(mv) < off + 2:
        return None
    ethertype = int.from_bytes(mv[off:off + 2], "big")
    ip = off + 2
    if ethertype == ETHERTYPE_IPV4 and len(mv) >= ip + 20 and mv[ip + 9] == IPPROTO_TCP:
        tcp = ip + (mv[ip] & 0xF) * 4
        src, dst = bytes(mv[ip + 12:ip + 16]), bytes(mv[ip + 16:ip + 20])
    elif ethertype == ETHERTYPE_IPV6 and len(mv) >= ip + 40 and mv[ip + 6] == IPPROTO_TCP:
        tcp = ip + 40
        src, dst = bytes(mv[ip + 8:ip + 24]), bytes(mv[ip + 24:ip + 40])
    else:
        return None
    if len(mv) < tcp + 4:
        return None
    return (src, int.from_bytes(mv[tcp:tcp + 2], "big"), dst,
            int.from_bytes(mv[tcp + 2:tcp + 4], "big"))
