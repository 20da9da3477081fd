"""How many rx queues an interface has active: one AF_XDP socket serves each.

ethtool's channel counts (``ETHTOOL_GCHANNELS``) are what the driver uses now; a driver
without channel support has exactly the queues netlink reports (``IFLA_NUM_RX_QUEUES``).
Both work from inside a network namespace entered with setns, unlike ``/sys``.
"""

from __future__ import annotations

import ctypes
import fcntl
import socket
import struct
from typing import Any, Final

from pyroute2 import IPRoute

from joyride.engine.netlink import on_netlink_thread

SIOCETHTOOL: Final = 0x8946
ETHTOOL_GCHANNELS: Final = 0x0000003C
_IFNAMSIZ: Final = 16


def active_rx_queues(ifname: str) -> int:
    """Active rx queues of ``ifname`` (at least 1)."""
    count = _ethtool_channels(ifname)
    if count is None:
        count = _netlink_rx_queues(ifname)
    return max(1, count)


def _ethtool_channels(ifname: str) -> int | None:
    # struct ethtool_channels: cmd, max_rx, max_tx, max_other, max_combined,
    # rx_count, tx_count, other_count, combined_count (all __u32).
    request = struct.pack("9I", ETHTOOL_GCHANNELS, *([0] * 8))
    buf = ctypes.create_string_buffer(request, len(request))
    ifreq = struct.pack(f"{_IFNAMSIZ}sP", ifname.encode(), ctypes.addressof(buf))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
        except OSError:
            return None  # EOPNOTSUPP: no channel support in the driver
    fields = struct.unpack("9I", buf.raw)
    rx, combined = fields[5], fields[8]
    return rx + combined if rx + combined > 0 else None


def _netlink_rx_queues(ifname: str) -> int:
    # On a netlink worker: embed() may call this from a running event loop, where
    # pyroute2's synchronous API fails (see joyride.engine.netlink).
    links = on_netlink_thread(_links, ifname)
    if not links:
        return 1
    return int(links[0].get_attr("IFLA_NUM_RX_QUEUES") or 1)


def _links(ifname: str) -> list[Any]:
    with IPRoute() as ipr:
        return list(ipr.get_links(ifname=ifname))
