"""Hand-built frames for the steering tests, malformed ones included.

Deliberately independent of ``joyride.wire`` (which refuses to build broken headers):
every field is packed here with ``struct`` so a test can break exactly one of them.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

from joyride.wire.checksum import internet_checksum

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP = 1, 6, 17
# IPv6 next headers (RFC 8200 §4): hop-by-hop, routing, fragment, destination options.
IP6_HOPOPTS, IP6_ROUTING, IP6_FRAGMENT, IP6_DSTOPTS, IPPROTO_ICMPV6 = 0, 43, 44, 60, 58


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


@dataclass(frozen=True)
class Endpoints:
    """Addresses of the two ends: frames go from ``src`` to ``dst``."""

    src_mac: bytes
    dst_mac: bytes
    src_ip: bytes
    dst_ip: bytes

    def eth(self, ethertype: int, *, vlan: int | None = None,
            outer: int = ETH_P_8021Q) -> bytes:
        tag = struct.pack("!HH", outer, vlan) if vlan is not None else b""
        if vlan is not None:
            return self.dst_mac + self.src_mac + tag + struct.pack("!H", ethertype)
        return self.dst_mac + self.src_mac + struct.pack("!H", ethertype)

    def ipv4(self, proto: int, payload: bytes, *, ihl: int = 5, version: int = 4,
             tot_len: int | None = None, frag: int = 0, options: bytes = b"") -> bytes:
        length = 20 + len(options) + len(payload) if tot_len is None else tot_len
        head = struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, 0, length, 0x1234, frag,
                           64, proto, 0, self.src_ip, self.dst_ip) + options
        csum = internet_checksum(head)
        return head[:10] + struct.pack("!H", csum) + head[12:] + payload

    def tcp(self, dport: int, *, sport: int = 40000, doff: int = 5, flags: int = 0x02,
            payload: bytes = b"", options: bytes = b"") -> bytes:
        seg = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, doff << 4, flags, 65535, 0, 0)
        seg += options + payload
        pseudo = self.src_ip + self.dst_ip + struct.pack("!BBH", 0, IPPROTO_TCP, len(seg))
        csum = internet_checksum(pseudo + seg)
        return seg[:16] + struct.pack("!H", csum) + seg[18:]

    def ipv6(self, next_header: int, payload: bytes, *, plen: int | None = None,
             version: int = 6) -> bytes:
        """An IPv6 header (``src_ip``/``dst_ip`` 16 bytes each) before ``payload``
        (extension headers included: ``ext``)."""
        length = len(payload) if plen is None else plen
        return struct.pack("!IHBB16s16s", version << 28, length, next_header, 64,
                           self.src_ip, self.dst_ip) + payload

    @staticmethod
    def ext(next_header: int, *, units: int = 0, segments_left: int = 0) -> bytes:
        """An extension header of 8 * (units + 1) bytes (hop-by-hop, destination options
        or routing: Segments Left is the fourth byte) naming ``next_header``."""
        body = bytearray(8 * (units + 1))
        body[0], body[1], body[3] = next_header, units, segments_left
        if units == 0 and segments_left == 0:
            body[2:8] = b"\x01\x04\x00\x00\x00\x00"  # PadN over the option space
        return bytes(body)

    def udp(self, dport: int, *, sport: int = 40000, payload: bytes = b"x",
            length: int | None = None) -> bytes:
        ulen = 8 + len(payload) if length is None else length
        return struct.pack("!HHHH", sport, dport, ulen, 0) + payload

    # -- whole frames ------------------------------------------------------------------

    def tcp_frame(self, dport: int, *, vlan: int | None = None, **ip: Any) -> bytes:
        return self.eth(ETH_P_IP, vlan=vlan) + self.ipv4(IPPROTO_TCP, self.tcp(dport), **ip)

    def udp_frame(self, dport: int) -> bytes:
        return self.eth(ETH_P_IP) + self.ipv4(IPPROTO_UDP, self.udp(dport))

    def ip_frame(self, proto: int, l4: bytes, **ip: Any) -> bytes:
        return self.eth(ETH_P_IP) + self.ipv4(proto, l4, **ip)


def send_raw(ifname: str, frames: list[bytes]) -> None:
    """Send frames as-is from the calling thread's namespace (AF_PACKET, no checks)."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((ifname, 0))
        for frame in frames:
            sock.send(frame)
