"""Ethernet II frames with at most one IEEE 802.1Q VLAN tag.

A double-tagged (802.1ad) frame, or one whose inner type is another tag, is reported as
"not IPv4" (``require_ipv4``; a parser that reads IPv6 too checks that type first): the
stack serves IPv4 and IPv6, and the XDP program passes every other type to the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from joyride.wire.errors import IntegrityError, Reason, SanityError

ETH_HLEN: Final = 14
VLAN_HLEN: Final = 4
ETHERTYPE_IPV4: Final = 0x0800
ETHERTYPE_IPV6: Final = 0x86DD
ETHERTYPE_VLAN: Final = 0x8100


@dataclass(frozen=True, slots=True)
class EthernetHeader:
    dst: bytes  # 6 bytes
    src: bytes  # 6 bytes
    ethertype: int = ETHERTYPE_IPV4  # the type of the payload (inside the tag, if any)
    vlan_tci: int | None = None  # 802.1Q tag control information (PCP, DEI, VID)

    @property
    def header_len(self) -> int:
        return ETH_HLEN + (VLAN_HLEN if self.vlan_tci is not None else 0)


def parse_ethernet(data: bytes | bytearray | memoryview) -> tuple[EthernetHeader, memoryview]:
    """Split a frame into its header and payload; the payload is a view, not a copy.

    Raises ``IntegrityError`` (eth_truncated) only: the ethertype is for the caller to
    judge, since Ethernet itself carries anything.
    """
    mv = memoryview(data)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")  # e.g. a view of a numpy or array.array buffer of wider items
    if len(mv) < ETH_HLEN:
        raise IntegrityError(Reason.ETH_TRUNCATED, f"{len(mv)} bytes")
    ethertype = int.from_bytes(mv[12:14], "big")
    if ethertype != ETHERTYPE_VLAN:
        return EthernetHeader(bytes(mv[0:6]), bytes(mv[6:12]), ethertype), mv[ETH_HLEN:]
    if len(mv) < ETH_HLEN + VLAN_HLEN:
        raise IntegrityError(Reason.ETH_TRUNCATED, f"{len(mv)} bytes with a VLAN tag")
    hdr = EthernetHeader(
        bytes(mv[0:6]),
        bytes(mv[6:12]),
        int.from_bytes(mv[16:18], "big"),
        int.from_bytes(mv[14:16], "big"),
    )
    return hdr, mv[ETH_HLEN + VLAN_HLEN :]


def require_ipv4(hdr: EthernetHeader) -> None:
    """Sanity: an IPv4 frame (ARP, nested tags and, where the caller does not read IPv6,
    IPv6 go to the kernel)."""
    if hdr.ethertype != ETHERTYPE_IPV4:
        raise SanityError(Reason.ETH_NOT_IPV4, f"ethertype {hdr.ethertype:#06x}")


def emit_ethernet_into(buf: bytearray | memoryview, offset: int, hdr: EthernetHeader) -> int:
    """Write the header at ``buf[offset:]``; returns its length."""
    if len(hdr.dst) != 6 or len(hdr.src) != 6:
        raise ValueError("MAC addresses are 6 bytes")
    buf[offset : offset + 6] = hdr.dst
    buf[offset + 6 : offset + 12] = hdr.src
    if hdr.vlan_tci is None:
        if hdr.ethertype == ETHERTYPE_VLAN:
            raise ValueError("ethertype 0x8100 without a tag would parse as a tag")
        buf[offset + 12 : offset + 14] = hdr.ethertype.to_bytes(2, "big")
        return ETH_HLEN
    buf[offset + 12 : offset + 14] = ETHERTYPE_VLAN.to_bytes(2, "big")
    buf[offset + 14 : offset + 16] = hdr.vlan_tci.to_bytes(2, "big")
    buf[offset + 16 : offset + 18] = hdr.ethertype.to_bytes(2, "big")
    return ETH_HLEN + VLAN_HLEN


def emit_ethernet(hdr: EthernetHeader, payload: bytes | bytearray | memoryview = b"") -> bytes:
    buf = bytearray(hdr.header_len + len(payload))
    n = emit_ethernet_into(buf, 0, hdr)
    buf[n:] = payload
    return bytes(buf)
