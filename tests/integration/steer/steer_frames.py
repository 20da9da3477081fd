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
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP = 1, 6, 17


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
