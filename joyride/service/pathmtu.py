"""Path MTU reports for the data path (issue 18): raw ICMP sockets on the interface.

A router that cannot forward one of Joyride's segments (DF set, its next hop narrower)
answers with ICMP "fragmentation needed" (RFC 1191), or ICMPv6 "packet too big" (RFC
4443 §3.2). The steering program leaves ICMP to the kernel, and the kernel, which has no
socket for a Joyride connection, counts the message as an error and drops it without
touching its route cache. A raw socket gets a copy first: the service opens one per
family as root, before it drops privileges, bound to its interface and filtered in the
kernel to those messages, and the data path reads the reports from them
(``joyride.wire.icmp``) and gives each to its connection (``Datapath.path_too_big``).
Without them (no CAP_NET_RAW: an embedding process that already dropped root), the
black-hole detection of RFC 4821 §3 still finds a narrower path, after three timeouts
instead of one round trip.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from joyride.wire.icmp import (
    ICMP6_PACKET_TOO_BIG,
    ICMP_DEST_UNREACH,
    TooBig,
    parse_too_big4,
    parse_too_big6,
)

log = logging.getLogger(__name__)

SOL_RAW: Final = 255
ICMP_FILTER: Final = 1  # linux/icmp.h: a bit set blocks that ICMP type
ICMP6_FILTER: Final = 1  # linux/icmpv6.h (level IPPROTO_ICMPV6): 256 bits, set blocks
READS_PER_CALL: Final = 64  # bounded work per wake-up; the rest waits for the next
MAX_PACKET: Final = 2048  # an ICMP error quotes at most 576 (IPv4) or 1232 bytes


@dataclass
class ReportSocket:
    """A raw socket and the parser of what it reads."""

    sock: socket.socket
    parse: Callable[[bytes], TooBig | None]

    def close(self) -> None:
        self.sock.close()


def _filter6() -> bytes:
    """ICMP6_FILTER's block-everything-but-packet-too-big (RFC 3542 §3.2)."""
    words = [0xFFFFFFFF] * 8
    words[ICMP6_PACKET_TOO_BIG >> 5] &= ~(1 << (ICMP6_PACKET_TOO_BIG & 31)) & 0xFFFFFFFF
    return struct.pack("8I", *words)


def open_report_sockets(ifname: str) -> list[ReportSocket]:
    """Non-blocking raw sockets bound to ``ifname`` that receive only "fragmentation
    needed" (IPv4) and "packet too big" (IPv6); a family whose socket cannot be had
    is logged and left out."""
    out: list[ReportSocket] = []
    for family, proto, level, option, blocked, parse in (
        (socket.AF_INET, socket.IPPROTO_ICMP, SOL_RAW, ICMP_FILTER,
         struct.pack("I", 0xFFFFFFFF & ~(1 << ICMP_DEST_UNREACH)), parse_too_big4),
        (socket.AF_INET6, socket.IPPROTO_ICMPV6, socket.IPPROTO_ICMPV6, ICMP6_FILTER,
         _filter6(), parse_too_big6),
    ):
        name = "ICMP" if family == socket.AF_INET else "ICMPv6"
        try:
            sock = socket.socket(family, socket.SOCK_RAW, proto)
        except OSError as exc:
            log.info("no raw %s socket (%s): path MTU only by black-hole detection",
                     name, exc)
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            sock.setsockopt(level, option, blocked)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            log.info("raw %s socket not usable (%s): path MTU only by black-hole "
                     "detection", name, exc)
            continue
        out.append(ReportSocket(sock, parse))
    return out


def drain(source: ReportSocket, on_report: Callable[[TooBig], None],
          count: Callable[[str], None]) -> None:
    """Read what waits (at most ``READS_PER_CALL`` packets): each report goes to
    ``on_report``; anything else is counted by name and dropped."""
    for _ in range(READS_PER_CALL):
        try:
            packet = source.sock.recv(MAX_PACKET)
        except BlockingIOError:
            return
        except OSError:
            count("icmp_read_error")
            return
        report = source.parse(packet)
        if report is None:
            count("icmp_ignored")
            continue
        count("icmp_too_big")
        on_report(report)
