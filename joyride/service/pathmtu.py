"""Path MTU reports for the data path (issue 18): a raw ICMP socket on the interface.

A router that cannot forward one of Joyride's segments (DF set, its next hop narrower)
answers with ICMP "fragmentation needed" (RFC 1191). The steering program leaves ICMP
to the kernel, and the kernel, which has no socket for a Joyride connection, counts the
message as an error and drops it without touching its route cache. A raw ICMP socket
gets a copy first: the service opens one as root, before it drops privileges, bound to
its interface and filtered in the kernel to destination-unreachable messages, and the
data path reads the reports from it (``joyride.wire.icmp``) and gives each to its
connection (``Datapath.path_too_big``). Without it (no CAP_NET_RAW: an embedding
process that already dropped root), the black-hole detection of RFC 4821 §3 still finds
a narrower path, after three timeouts instead of one round trip.

IPv6's "packet too big" (ICMPv6 type 2) waits for IPv6 steering (issue 18).
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable
from typing import Final

from joyride.wire.icmp import ICMP_DEST_UNREACH, TooBig, parse_too_big4

log = logging.getLogger(__name__)

SOL_RAW: Final = 255
ICMP_FILTER: Final = 1  # linux/icmp.h: a bit set blocks that ICMP type
READS_PER_CALL: Final = 64  # bounded work per wake-up; the rest waits for the next
MAX_PACKET: Final = 2048  # an ICMP error quotes at most 576 bytes (RFC 1812 §4.3.2.3)


def open_icmp_socket(ifname: str) -> socket.socket | None:
    """A non-blocking raw ICMP socket bound to ``ifname`` that receives only
    destination-unreachable messages, or None (logged) when it cannot be had."""
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except OSError as exc:
        log.info("no raw ICMP socket (%s): path MTU only by black-hole detection", exc)
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        blocked = 0xFFFFFFFF & ~(1 << ICMP_DEST_UNREACH)
        sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", blocked))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        log.info("raw ICMP socket not usable (%s): path MTU only by black-hole "
                 "detection", exc)
        return None
    return sock


def drain(sock: socket.socket, on_report: Callable[[TooBig], None],
          count: Callable[[str], None]) -> None:
    """Read what waits (at most ``READS_PER_CALL`` packets): each "fragmentation
    needed" goes to ``on_report``; anything else is counted by name and dropped."""
    for _ in range(READS_PER_CALL):
        try:
            packet = sock.recv(MAX_PACKET)
        except BlockingIOError:
            return
        except OSError:
            count("icmp_read_error")
            return
        report = parse_too_big4(packet)
        if report is None:
            count("icmp_ignored")
            continue
        count("icmp_too_big")
        on_report(report)
