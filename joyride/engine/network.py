"""Addresses, routes, MTU and neighbours: consulted from the kernel, never duplicated.

The kernel keeps doing what it does well (ARP, routing tables, address configuration);
the engine asks it over netlink (pyroute2) and caches the answers briefly. When the
kernel has no neighbour entry for a next hop, the engine adds a *managed* entry
(``NTF_EXT_MANAGED``, Linux 5.16+): the kernel resolves it itself and keeps it fresh,
while the engine holds the frames for that next hop (bounded) until the MAC is known.

``StaticNetwork`` is the same interface over fixed tables, for tests without a kernel.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from joyride.engine.netlink import NetlinkWorker
from joyride.wire.addr import packed, text

NUD_VALID: Final = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80  # REACHABLE..PERMANENT|NOARP
NEIGHBOUR_TTL: Final = 1.0  # seconds a cached MAC is trusted before asking again
RESOLVE_RETRY: Final = 0.005  # seconds between netlink checks while a MAC is pending
NUD_NONE: Final = 0x00
NTF_EXT_MANAGED: Final = 0x01  # include/uapi/linux/neighbour.h, carried in NDA_FLAGS_EXT
IFA_F_DADFAILED: Final = 0x08  # include/uapi/linux/if_addr.h
IFA_F_TENTATIVE: Final = 0x40


class NetworkView(Protocol):
    ifname: str
    ifindex: int
    mac: bytes
    mtu: int

    def local_addresses(self) -> frozenset[bytes]: ...

    def next_hop(self, dst: bytes) -> bytes:
        """The address frames to ``dst`` go to first (a gateway, or dst itself)."""
        ...

    def source_for(self, dst: bytes) -> bytes | None:
        """The local address a connection to ``dst`` should come from (RFC 6724's
        choice, as the kernel's route lookup makes it), or None (no opinion)."""
        ...

    def neighbour(self, ip: bytes, now: float) -> bytes | None:
        """The MAC for an on-link ``ip``, or None (resolution has been requested)."""
        ...

    def close(self) -> None: ...


def mac_bytes(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


@dataclass
class StaticNetwork:
    """Fixed tables: ``neighbours`` maps IP -> MAC; missing entries never resolve."""

    ifname: str
    mac: bytes
    addresses: frozenset[bytes]
    neighbours: dict[bytes, bytes] = field(default_factory=dict)
    gateway: bytes | None = None
    mtu: int = 1500
    ifindex: int = 1
    prefix_len: int = 24  # IPv4's on-link prefix
    prefix6_len: int = 64  # IPv6's (RFC 4291 §2.5.4: interface identifiers are 64 bits)

    def local_addresses(self) -> frozenset[bytes]:
        return self.addresses

    def next_hop(self, dst: bytes) -> bytes:
        bits, plen = (32, self.prefix_len) if len(dst) == 4 else (128, self.prefix6_len)
        shift = bits - plen
        net = int.from_bytes(dst, "big") >> shift
        on_link = any(int.from_bytes(a, "big") >> shift == net
                      for a in self.addresses if len(a) == len(dst))
        return dst if on_link or self.gateway is None else self.gateway

    def source_for(self, dst: bytes) -> bytes | None:
        return None  # fixed tables: the engine's own rule

    def neighbour(self, ip: bytes, now: float) -> bytes | None:
        return self.neighbours.get(ip)

    def close(self) -> None:
        pass


class KernelNetwork:
    """The view of one interface from the network namespace this object is created in.

    Every netlink call runs on one ``NetlinkWorker`` thread started by the constructor
    (so in the constructor's namespace): it works from any thread, including one that
    runs an asyncio loop (see ``joyride.engine.netlink``).
    """

    def __init__(self, ifname: str) -> None:
        try:
            self.ifindex = socket.if_nametoindex(ifname)
        except OSError as exc:
            raise ValueError(f"no interface named {ifname!r} in this network namespace") from exc
        self.ifname = ifname
        self._worker = NetlinkWorker()
        try:
            self._ipr: Any = self._worker.call(_open_iproute)
            link = self._netlink(self._ipr.get_links, self.ifindex)[0]
        except BaseException:
            self._worker.close()
            raise
        self.mac = mac_bytes(link.get_attr("IFLA_ADDRESS"))
        self.mtu = int(link.get_attr("IFLA_MTU"))
        self._neigh: dict[bytes, tuple[bytes, float]] = {}  # ip -> (mac, expiry)
        self._pending: dict[bytes, float] = {}  # ip -> next netlink check
        self._managed: set[bytes] = set()
        self._hops: dict[bytes, tuple[bytes, bytes | None]] = {}  # dst -> (hop, source)
        # Set by a service that dropped its privileges: managed entries (a netlink
        # write, CAP_NET_ADMIN) are then asked of its privileged helper, which owns them.
        self.request_neighbour: Callable[[bytes], bool] | None = None

    def local_addresses(self) -> frozenset[bytes]:
        """The interface's addresses of both families; an IPv6 address still in
        duplicate address detection (tentative) or that failed it is not one yet."""
        out: set[bytes] = set()
        for family in (socket.AF_INET, socket.AF_INET6):
            for a in self._netlink(self._ipr.get_addr, family=family, index=self.ifindex):
                flags = a.get_attr("IFA_FLAGS") or a["flags"]
                if family == socket.AF_INET6 and flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED):
                    continue
                out.add(packed(a.get_attr("IFA_ADDRESS")))
        return frozenset(out)

    def next_hop(self, dst: bytes) -> bytes:
        return self._route(dst)[0]

    def source_for(self, dst: bytes) -> bytes | None:
        return self._route(dst)[1]

    def _route(self, dst: bytes) -> tuple[bytes, bytes | None]:
        """The kernel's route to ``dst``: its next hop (the gateway, or dst itself)
        and its preferred source (RTA_PREFSRC: RFC 6724's choice for IPv6), cached."""
        route = self._hops.get(dst)
        if route is None:
            routes = self._netlink(self._ipr.route, "get", dst=text(dst))
            gateway = routes[0].get_attr("RTA_GATEWAY") if routes else None
            source = routes[0].get_attr("RTA_PREFSRC") if routes else None
            route = (packed(gateway) if gateway else dst,
                     packed(source) if source else None)
            if len(self._hops) > 4096:  # bounded: a scan of many peers cannot grow it
                self._hops.clear()
            self._hops[dst] = route
        return route

    def neighbour(self, ip: bytes, now: float) -> bytes | None:
        cached = self._neigh.get(ip)
        if cached is not None and cached[1] > now:
            return cached[0]
        if ip in self._pending and self._pending[ip] > now:
            return None
        mac = self._lookup(ip)
        if mac is not None:
            self._pending.pop(ip, None)
            if len(self._neigh) > 4096:
                self._neigh.clear()
            self._neigh[ip] = (mac, now + NEIGHBOUR_TTL)
            return mac
        if ip not in self._managed:
            self._request(ip)
        self._pending[ip] = now + RESOLVE_RETRY
        return None

    def _lookup(self, ip: bytes) -> bytes | None:
        family = socket.AF_INET6 if len(ip) == 16 else socket.AF_INET
        entries = self._netlink(self._ipr.get_neighbours, family=family,
                                ifindex=self.ifindex)
        for entry in entries:
            dst = entry.get_attr("NDA_DST")
            if not dst or packed(dst) != ip or not entry["state"] & NUD_VALID:
                continue
            lladdr = entry.get_attr("NDA_LLADDR")
            if lladdr:
                return mac_bytes(lladdr)
        return None

    def _request(self, ip: bytes) -> None:
        """Ask the kernel to resolve ``ip`` and keep it resolved (a managed entry)."""
        self._managed.add(ip)
        if self.request_neighbour is not None:
            if not self.request_neighbour(ip):
                self._managed.discard(ip)
            return
        try:
            self._netlink(
                self._ipr.neigh, "replace", dst=text(ip), ifindex=self.ifindex,
                state=NUD_NONE, NDA_FLAGS_EXT=NTF_EXT_MANAGED,
            )
        except Exception:  # pyroute2 raises NetlinkError; an old kernel refuses the flag
            self._managed.discard(ip)

    def route_oif(self, dst: bytes) -> int:
        """The interface index the kernel routes ``dst`` through (0: no route)."""
        try:
            routes = self._netlink(self._ipr.route, "get", dst=text(dst))
        except Exception:  # pyroute2's NetlinkError: unreachable
            return 0
        return int(routes[0].get_attr("RTA_OIF") or 0) if routes else 0

    def close(self) -> None:
        if self.request_neighbour is not None:
            self._managed.clear()  # the helper that added them removes them
        for ip in self._managed:
            with contextlib.suppress(Exception):
                self._netlink(self._ipr.neigh, "del", dst=text(ip),
                              ifindex=self.ifindex)
        self._managed.clear()
        try:
            self._worker.call(self._ipr.close)
        finally:
            self._worker.close()

    def _netlink(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._worker.call(call, *args, **kwargs)


def _open_iproute() -> Any:
    from pyroute2 import IPRoute

    return IPRoute()
