"""ICMP "fragmentation needed" reports (RFC 1191 §4; RFC 792) and ICMPv6 "packet too
big" (RFC 4443 §3.2): what a router sends back when a packet (with DF set, for IPv4)
does not fit its next hop, naming that hop's MTU and quoting the start of the packet it
dropped.

For IPv6 the input is the ICMPv6 message alone (a raw ICMPv6 socket delivers no IPv6
header, and the kernel has checked the message's checksum, which covers a
pseudo-header, before a raw ICMPv6 socket gets it: RFC 3542 §3.1); the quoted packet's
TCP header must follow its fixed header directly.

The input is a whole IPv4 packet as a raw ICMP socket reads it (the service keeps one:
the kernel, which has no socket for a Joyride connection, drops the report after the
raw socket's copy). Nothing in it is trusted: the ICMP checksum is checked (a raw
socket gets the message before the kernel's ICMP code looks at it), every length is
bounded, and of the quoted TCP header only its first 8 bytes are read (ports and
sequence number: all that RFC 792 promises a router returns). Anything else, or
anything malformed, is None: the caller counts it and goes on. Whether a report is
believed is its connection's decision (``TcpConnection.path_too_big``: RFC 5927 §4.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from joyride.wire.checksum import ones_sum

IPPROTO_ICMP: Final = 1
IPPROTO_TCP: Final = 6
ICMP_DEST_UNREACH: Final = 3  # RFC 792
ICMP_FRAG_NEEDED: Final = 4  # its code "fragmentation needed and DF set" (RFC 1191 §4)
IPV4_MIN_HLEN: Final = 20
IPV6_HLEN: Final = 40
ICMP6_PACKET_TOO_BIG: Final = 2  # RFC 4443 §3.2
QUOTED_TCP: Final = 8  # RFC 792: "the first 64 bits of the original datagram's data"


@dataclass(frozen=True, slots=True)
class TooBig:
    """A report about one of our segments, seen from our side of its connection."""

    mtu: int  # the next hop's MTU (0: an RFC 1191 §5 router that does not say)
    local_ip: bytes  # the quoted packet's source: ours
    remote_ip: bytes
    local_port: int
    remote_port: int
    seq: int  # the quoted segment's sequence number


def parse_too_big4(packet: bytes | bytearray | memoryview) -> TooBig | None:
    """The report an IPv4 ICMP "fragmentation needed" carries about a TCP segment, or
    None for any other packet and for any that is malformed."""
    p = memoryview(packet)
    if len(p) < IPV4_MIN_HLEN or p[0] >> 4 != 4 or p[9] != IPPROTO_ICMP:
        return None
    ihl = (p[0] & 0x0F) * 4
    total = int.from_bytes(p[2:4], "big")
    if ihl < IPV4_MIN_HLEN or total < ihl + 8 or total > len(p):
        return None
    icmp = p[ihl:total]
    if icmp[0] != ICMP_DEST_UNREACH or icmp[1] != ICMP_FRAG_NEEDED:
        return None
    if ones_sum(icmp, 0) != 0xFFFF:  # RFC 792: the ones' complement sum over the message
        return None
    mtu = int.from_bytes(icmp[6:8], "big")  # RFC 1191 §4: Next-Hop MTU, low 16 bits
    quoted = icmp[8:]
    if len(quoted) < IPV4_MIN_HLEN or quoted[0] >> 4 != 4 or quoted[9] != IPPROTO_TCP:
        return None
    qihl = (quoted[0] & 0x0F) * 4
    if qihl < IPV4_MIN_HLEN or len(quoted) < qihl + QUOTED_TCP:
        return None
    tcp = quoted[qihl:qihl + QUOTED_TCP]
    return TooBig(mtu=mtu, local_ip=bytes(quoted[12:16]), remote_ip=bytes(quoted[16:20]),
                  local_port=int.from_bytes(tcp[0:2], "big"),
                  remote_port=int.from_bytes(tcp[2:4], "big"),
                  seq=int.from_bytes(tcp[4:8], "big"))


def build_too_big4(router: bytes, mtu: int, dropped: bytes | bytearray | memoryview) -> bytes:
    """The packet a router at ``router`` sends about ``dropped`` (an IPv4 packet it could
    not forward): the quoted header and 8 bytes of its payload (tests; the format's
    round trip)."""
    d = memoryview(dropped)
    ihl = (d[0] & 0x0F) * 4
    body = bytearray(8) + bytes(d[:ihl + QUOTED_TCP])
    body[0], body[1] = ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED
    body[6:8] = mtu.to_bytes(2, "big")
    csum = ~ones_sum(body, 0) & 0xFFFF
    body[2:4] = csum.to_bytes(2, "big")
    total = IPV4_MIN_HLEN + len(body)
    header = bytearray(IPV4_MIN_HLEN)
    header[0], header[8], header[9] = 0x45, 64, IPPROTO_ICMP
    header[2:4] = total.to_bytes(2, "big")
    header[12:16], header[16:20] = router, bytes(d[12:16])
    hsum = ~ones_sum(header, 0) & 0xFFFF
    header[10:12] = hsum.to_bytes(2, "big")
    return bytes(header + body)


def parse_too_big6(message: bytes | bytearray | memoryview) -> TooBig | None:
    """The report an ICMPv6 "packet too big" carries about a TCP segment, or None for
    any other message and any that is malformed."""
    m = memoryview(message)
    if len(m) < 8 + IPV6_HLEN + QUOTED_TCP or m[0] != ICMP6_PACKET_TOO_BIG or m[1] != 0:
        return None
    mtu = int.from_bytes(m[4:8], "big")  # RFC 4443 §3.2: 32 bits
    quoted = m[8:]
    if quoted[0] >> 4 != 6 or quoted[6] != IPPROTO_TCP:
        return None
    tcp = quoted[IPV6_HLEN:IPV6_HLEN + QUOTED_TCP]
    return TooBig(mtu=mtu, local_ip=bytes(quoted[8:24]),
                  remote_ip=bytes(quoted[24:40]),
                  local_port=int.from_bytes(tcp[0:2], "big"),
                  remote_port=int.from_bytes(tcp[2:4], "big"),
                  seq=int.from_bytes(tcp[4:8], "big"))


def build_too_big6(mtu: int, dropped: bytes | bytearray | memoryview) -> bytes:
    """The ICMPv6 message a router sends about ``dropped`` (an IPv6 packet), as a raw
    ICMPv6 socket reads it: as much of the packet as fits the minimum MTU (tests)."""
    body = bytearray(8)
    body[0] = ICMP6_PACKET_TOO_BIG
    body[4:8] = mtu.to_bytes(4, "big")
    return bytes(body) + bytes(memoryview(dropped)[:1280 - IPV6_HLEN - 8])
