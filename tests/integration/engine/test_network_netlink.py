"""``KernelNetwork`` against the kernel: netlink from any thread, including one running
an asyncio loop (pyroute2 0.9's sync API alone fails there), always in the namespace
the object was created in."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from joyride.engine import KernelNetwork
from joyride.testbed import Testbed

pytestmark = pytest.mark.integration


def test_queries_from_a_running_loop_and_other_threads(testbed: Testbed) -> None:
    bed = testbed
    with bed.joy.inside():
        network = KernelNetwork(bed.joy.ifname)
    try:
        joy_ip, peer_ip = bed.joy.ip_bytes, bed.peer.ip_bytes
        # This thread is back in the root namespace: the answers must still be the
        # test bed's (the worker thread stays where the object was created).
        assert network.local_addresses() == frozenset({joy_ip})
        assert network.mac == bytes.fromhex(bed.joy.mac.replace(":", ""))

        async def inside_loop() -> tuple[frozenset[bytes], bytes, bytes | None, int]:
            addrs = network.local_addresses()
            hop = network.next_hop(peer_ip)
            mac = None
            deadline = time.monotonic() + 5
            while mac is None and time.monotonic() < deadline:
                mac = network.neighbour(hop, time.monotonic())
                await asyncio.sleep(0.01)
            return addrs, hop, mac, network.route_oif(peer_ip)

        addrs, hop, mac, oif = asyncio.run(inside_loop())
        assert addrs == frozenset({joy_ip})
        assert hop == peer_ip  # on-link: the destination itself
        assert mac == bytes.fromhex(bed.peer.mac.replace(":", ""))
        assert oif == network.ifindex
        assert network.route_oif(socket.inet_aton("203.0.113.9")) in (0, network.ifindex)

        results: list[frozenset[bytes]] = []
        worker = threading.Thread(target=lambda: results.append(network.local_addresses()))
        worker.start()
        worker.join(10)
        assert results == [frozenset({joy_ip})]
    finally:
        network.close()
    assert not any(t.name.startswith("joyride-netlink") and t.is_alive()
                   for t in threading.enumerate() if t is not threading.current_thread())


def test_ipv6_addresses_routes_and_neighbours() -> None:
    """Issue 18: the interface's IPv6 address beside its IPv4 one, an on-link IPv6 peer
    as its own next hop, and its MAC learnt by the kernel's neighbour discovery (a
    managed entry, as for IPv4's ARP)."""
    with Testbed(ipv6=True) as bed:
        with bed.joy.inside():
            network = KernelNetwork(bed.joy.ifname)
        try:
            joy6, peer6 = bed.joy.ip6_bytes, bed.peer.ip6_bytes
            addrs = network.local_addresses()
            assert {bed.joy.ip_bytes, joy6} <= addrs
            assert all(len(a) in (4, 16) for a in addrs)  # its link-local one too
            assert network.next_hop(peer6) == peer6
            assert network.route_oif(peer6) == network.ifindex
            # The kernel's source selection (RFC 6724): the global address for a
            # global peer, the link-local one for a link-local peer.
            assert network.source_for(peer6) == joy6
            # The kernel adds the link-local address itself, shortly after IPv6 is
            # switched on (addrconf's work): wait for it, bounded.
            deadline = time.monotonic() + 5
            while not (link_local := [a for a in network.local_addresses()
                                      if a[:2] == b"\xfe\x80"]):
                assert time.monotonic() < deadline, "no link-local address came"
                time.sleep(0.02)
            assert network.source_for(bytes.fromhex("fe80" + "00" * 13 + "07")) == \
                link_local[0]
            assert network.source_for(bed.peer.ip_bytes) == bed.joy.ip_bytes
            mac = None
            deadline = time.monotonic() + 5
            while mac is None and time.monotonic() < deadline:
                mac = network.neighbour(peer6, time.monotonic())
                time.sleep(0.01)
            assert mac == bytes.fromhex(bed.peer.mac.replace(":", ""))
            out = bed.joy.run("ip", "-6", "neigh", "show", "dev", bed.joy.ifname).stdout
            assert f"{bed.peer.ip6} ".encode() in out and b"managed" in out
        finally:
            network.close()
        # close() removed its managed entry again.
        out = bed.joy.run("ip", "-6", "neigh", "show", "dev", bed.joy.ifname).stdout
        assert b"managed" not in out
