"""GSO super-segments as a segmenting device sees them (the reference for ``wire_build_gso``).

The C data plane sends a run of data segments as one frame behind a virtio-net header
(``struct wire_vnet_hdr``, linux/virtio_net.h): TCP's checksum left partial, and the
payload to be cut into ``gso_size`` pieces. ``segment`` does what Linux's software GSO
(``tcp_gso_segment``, ``inet_gso_segment``) and a TSO device do with it: every piece gets
the frame's headers with its sequence number advanced, the IPv4 ID counting on from the
frame's, FIN and PSH only on the last piece, and full checksums. The in-memory bed of
the data plane (``joyride.dataplane.membed``) delivers GSO frames to its peer this way.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from typing import Final

from joyride.wire.frame import build_frame, parse_frame
from joyride.wire.ipv4 import Ipv4Header
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpFlags

VNET_HEADER: Final = struct.Struct("<BBHHHH")  # little-endian on the hosts we run on
NEEDS_CSUM: Final = 1
GSO_NONE: Final = 0
GSO_TCPV4: Final = 1
GSO_TCPV6: Final = 4
_LAST_ONLY: Final = TcpFlags.FIN | TcpFlags.PSH


@dataclass(frozen=True, slots=True)
class VnetHeader:
    flags: int
    gso_type: int
    hdr_len: int
    gso_size: int
    csum_start: int
    csum_offset: int

    @classmethod
    def unpack(cls, data: bytes) -> VnetHeader:
        return cls(*VNET_HEADER.unpack_from(data))


def segment(datagram: bytes) -> list[bytes]:
    """The frames a device sends for one GSO datagram (virtio-net header, then the frame).
    Raises ValueError for a header this stack never writes."""
    vnet = VnetHeader.unpack(datagram)
    frame = datagram[VNET_HEADER.size:]
    if vnet.flags != NEEDS_CSUM or vnet.csum_offset != 16:
        raise ValueError(f"unexpected virtio-net header {vnet}")
    parsed = parse_frame(frame, verify_checksums=False, ipv6=True)
    if vnet.gso_type == GSO_NONE:
        return [build_frame(parsed.eth, parsed.ip, parsed.tcp)]
    if vnet.gso_type not in (GSO_TCPV4, GSO_TCPV6) or vnet.gso_size == 0:
        raise ValueError(f"unexpected virtio-net header {vnet}")
    tcp, size = parsed.tcp, vnet.gso_size
    pieces = [tcp.payload[i:i + size] for i in range(0, len(tcp.payload), size)]
    out = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        ip = parsed.ip
        if isinstance(ip, Ipv4Header):
            ip = dataclasses.replace(ip, ident=(ip.ident + i) & 0xFFFF)
        flags = tcp.flags if last else TcpFlags(tcp.flags & ~_LAST_ONLY)
        one = dataclasses.replace(tcp, seq=Seq(int(tcp.seq) + i * size), flags=flags,
                                  payload=piece)
        out.append(build_frame(parsed.eth, ip, one))
    return out


__all__ = ["GSO_NONE", "GSO_TCPV4", "GSO_TCPV6", "NEEDS_CSUM", "VNET_HEADER", "VnetHeader",
           "segment"]
