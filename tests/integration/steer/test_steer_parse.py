"""The XDP parser on crafted frames, run by BPF_PROG_TEST_RUN on the attached program.

Every frame must come back XDP_PASS (no socket is registered here) and move exactly one
counter: the reason it names. Frames no veth would carry (runts) can only be tested
this way; the veth tests send the rest over a real link.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from steer_frames import (
    ETH_P_8021AD,
    ETH_P_8021Q,
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    IP6_DSTOPTS,
    IP6_FRAGMENT,
    IP6_HOPOPTS,
    IP6_ROUTING,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    Endpoints,
)

from joyride.steer import LISTEN, Steering
from joyride.testbed import Testbed

pytestmark = pytest.mark.integration

XDP_PASS = 2
TCP_PORT = 7000
UDP_PORT = 7001


@pytest.fixture(scope="module")
def steered(steering: Steering, quiet_bed: Testbed) -> Iterator[Steering]:
    with quiet_bed.joy.inside():
        steering.add_ports([TCP_PORT], "tcp", LISTEN)
        steering.add_ports([UDP_PORT], "udp", LISTEN)
    yield steering
    steering.remove_ports([TCP_PORT], "tcp")
    steering.remove_ports([UDP_PORT], "udp")


def run_one(steer: Steering, bed: Testbed, frame: bytes) -> tuple[int, dict[str, int]]:
    before = steer.counters()
    with bed.joy.inside():
        action = steer.test_run(frame)
    return action, (steer.counters() - before).nonzero()


def ip_tcp(ep: Endpoints, **kw: Any) -> bytes:
    return ep.ipv4(IPPROTO_TCP, ep.tcp(TCP_PORT), **kw)


CASES: dict[str, tuple[Callable[[Endpoints], bytes], str]] = {
    # Ethernet and VLAN
    "arp": (lambda e: e.eth(ETH_P_ARP) + bytes(28), "pass_not_ipv4"),
    "ipv6_ethertype": (lambda e: e.eth(0x86DD) + bytes(40), "pass_not_ipv4"),
    "vlan_truncated": (lambda e: e.eth(ETH_P_IP)[:12] + b"\x81\x00\x00", "err_vlan_trunc"),
    "vlan_other_vid": (lambda e: e.eth(ETH_P_IP, vlan=100) + ip_tcp(e), "pass_vlan"),
    "qinq": (lambda e: e.eth(ETH_P_8021Q, vlan=100, outer=ETH_P_8021AD)
             + b"\x00\x64\x08\x00" + ip_tcp(e), "pass_vlan"),
    "vlan_tagged_arp": (lambda e: e.eth(ETH_P_ARP, vlan=5) + bytes(28), "pass_not_ipv4"),
    # IPv4 header
    "ip_truncated": (lambda e: e.eth(ETH_P_IP) + ip_tcp(e)[:19], "err_ip_trunc"),
    "ip_version_6": (lambda e: e.eth(ETH_P_IP) + ip_tcp(e, version=6), "err_ip_version"),
    "ihl_4": (lambda e: e.eth(ETH_P_IP) + ip_tcp(e, ihl=4), "err_ip_ihl"),
    "ihl_0": (lambda e: e.eth(ETH_P_IP) + ip_tcp(e, ihl=0), "err_ip_ihl"),
    "ihl_past_frame": (lambda e: e.eth(ETH_P_IP) + ip_tcp(e, ihl=15)[:40], "err_ip_ihl"),
    "totlen_beyond_frame": (lambda e: e.eth(ETH_P_IP) + ip_tcp(e, tot_len=1500),
                            "err_ip_totlen"),
    "totlen_below_header": (lambda e: e.eth(ETH_P_IP) + ip_tcp(e, tot_len=19),
                            "err_ip_totlen"),
    "fragment_first": (lambda e: e.eth(ETH_P_IP) + ip_tcp(e, frag=0x2000), "pass_fragment"),
    "fragment_later": (lambda e: e.eth(ETH_P_IP) + ip_tcp(e, frag=0x0010), "pass_fragment"),
    "icmp": (lambda e: e.eth(ETH_P_IP) + e.ipv4(IPPROTO_ICMP, bytes(8)), "pass_other_l4"),
    # TCP header
    "tcp_truncated": (lambda e: e.eth(ETH_P_IP) + e.ipv4(IPPROTO_TCP, e.tcp(TCP_PORT)[:19]),
                      "err_tcp_trunc"),
    "tcp_cut_by_totlen": (lambda e: e.eth(ETH_P_IP) + ip_tcp(e, tot_len=30),
                          "err_tcp_trunc"),
    "tcp_doff_4": (lambda e: e.eth(ETH_P_IP) + e.ipv4(IPPROTO_TCP, e.tcp(TCP_PORT, doff=4)),
                   "err_tcp_trunc"),
    "tcp_doff_past_segment": (lambda e: e.eth(ETH_P_IP)
                              + e.ipv4(IPPROTO_TCP, e.tcp(TCP_PORT, doff=8)),
                              "err_tcp_trunc"),
    "tcp_other_port": (lambda e: e.eth(ETH_P_IP) + e.ipv4(IPPROTO_TCP, e.tcp(7002)),
                       "pass_port_tcp"),
    # UDP header
    "udp_truncated": (lambda e: e.eth(ETH_P_IP) + e.ipv4(IPPROTO_UDP, e.udp(UDP_PORT)[:7]),
                      "err_udp_trunc"),
    "udp_len_short": (lambda e: e.eth(ETH_P_IP) + e.ipv4(IPPROTO_UDP, e.udp(UDP_PORT, length=7)),
                      "err_udp_trunc"),
    "udp_len_long": (lambda e: e.eth(ETH_P_IP) + e.ipv4(IPPROTO_UDP, e.udp(UDP_PORT, length=99)),
                     "err_udp_trunc"),
    "udp_other_port": (lambda e: e.udp_frame(7002), "pass_port_udp"),
    # Steered ports, but no socket on the queue: fail-open to the kernel.
    "tcp_steered": (lambda e: e.tcp_frame(TCP_PORT), "redirect_miss"),
    "udp_steered": (lambda e: e.udp_frame(UDP_PORT), "redirect_miss"),
    "tcp_steered_with_ip_options": (
        lambda e: e.eth(ETH_P_IP) + ip_tcp(e, ihl=6, options=b"\x01\x01\x01\x00"),
        "redirect_miss"),
    "tcp_steered_padded_frame": (lambda e: e.tcp_frame(TCP_PORT) + bytes(20), "redirect_miss"),
    "priority_tagged_vid0": (lambda e: e.eth(ETH_P_IP, vlan=0) + ip_tcp(e), "redirect_miss"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_frame_passes_and_is_counted_once_by_reason(
        case: str, steered: Steering, quiet_bed: Testbed, to_joy: Endpoints) -> None:
    build, reason = CASES[case]
    action, delta = run_one(steered, quiet_bed, build(to_joy))
    assert action == XDP_PASS
    assert delta == {reason: 1}


def test_configured_vlan_is_steered_and_untagged_then_is_not(
        steered: Steering, quiet_bed: Testbed, to_joy: Endpoints) -> None:
    with quiet_bed.joy.inside():
        steered.set_vlan(100)
    try:
        assert run_one(steered, quiet_bed, to_joy.tcp_frame(TCP_PORT, vlan=100))[1] == {
            "redirect_miss": 1}
        assert run_one(steered, quiet_bed, to_joy.tcp_frame(TCP_PORT))[1] == {"pass_vlan": 1}
        assert run_one(steered, quiet_bed, to_joy.tcp_frame(TCP_PORT, vlan=101))[1] == {
            "pass_vlan": 1}
    finally:
        steered.set_vlan(0)


def test_only_the_interfaces_addresses_are_steered(
        steered: Steering, quiet_bed: Testbed, to_joy: Endpoints) -> None:
    """A steered port on another destination (traffic routed through this host) stays
    the kernel's once the interface's addresses are set; None steers any again."""
    elsewhere = dataclasses.replace(to_joy, dst_ip=bytes([198, 19, 99, 7]))
    with quiet_bed.joy.inside():
        steered.set_addresses([to_joy.dst_ip])
    try:
        assert run_one(steered, quiet_bed, to_joy.tcp_frame(TCP_PORT))[1] == {
            "redirect_miss": 1}
        assert run_one(steered, quiet_bed, to_joy.udp_frame(UDP_PORT))[1] == {
            "redirect_miss": 1}
        assert run_one(steered, quiet_bed, elsewhere.tcp_frame(TCP_PORT))[1] == {
            "pass_addr": 1}
        assert run_one(steered, quiet_bed, elsewhere.udp_frame(UDP_PORT))[1] == {
            "pass_addr": 1}
        # Unsteered ports are still told apart first.
        assert run_one(steered, quiet_bed, elsewhere.tcp_frame(7002))[1] == {
            "pass_port_tcp": 1}
        with quiet_bed.joy.inside():
            steered.set_addresses([elsewhere.dst_ip])  # replaces: the old one is gone
        assert run_one(steered, quiet_bed, to_joy.tcp_frame(TCP_PORT))[1] == {"pass_addr": 1}
        assert run_one(steered, quiet_bed, elsewhere.tcp_frame(TCP_PORT))[1] == {
            "redirect_miss": 1}
        with quiet_bed.joy.inside():
            steered.set_addresses([])
        assert run_one(steered, quiet_bed, elsewhere.tcp_frame(TCP_PORT))[1] == {
            "pass_addr": 1}
    finally:
        with quiet_bed.joy.inside():
            steered.set_addresses(None)
    assert run_one(steered, quiet_bed, elsewhere.tcp_frame(TCP_PORT))[1] == {
        "redirect_miss": 1}


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=14, max_size=120), mutate=st.data())
def test_arbitrary_bytes_always_pass_with_exactly_one_count(
        data: bytes, mutate: st.DataObject, steered: Steering, quiet_bed: Testbed,
        to_joy: Endpoints) -> None:
    # Half the time start from a valid steered frame and corrupt a few bytes, so the
    # fuzzing reaches the deep branches, not just "not IPv4".
    if mutate.draw(st.booleans()):
        frame = bytearray(to_joy.tcp_frame(TCP_PORT))
        for _ in range(mutate.draw(st.integers(1, 4))):
            frame[mutate.draw(st.integers(12, len(frame) - 1))] = mutate.draw(st.integers(0, 255))
        cut = mutate.draw(st.integers(14, len(frame)))
        data = bytes(frame[:cut])
    action, delta = run_one(steered, quiet_bed, data)
    assert action == XDP_PASS
    assert sum(delta.values()) == 1


# -- IPv6 (issue 18): parsed only with set_ipv6(True) -----------------------------------

V6_JOY = bytes.fromhex("20010db8000000000000000000000001")
V6_PEER = bytes.fromhex("20010db8000000000000000000000002")


@pytest.fixture
def v6(steered: Steering, quiet_bed: Testbed, to_joy: Endpoints) -> Iterator[Endpoints]:
    """IPv6 steering on, and the peer's frames to the Joyride side over IPv6."""
    with quiet_bed.joy.inside():
        steered.set_ipv6(True)
    try:
        yield dataclasses.replace(to_joy, src_ip=V6_PEER, dst_ip=V6_JOY)
    finally:
        with quiet_bed.joy.inside():
            steered.set_ipv6(False)


def v6_frame(e: Endpoints, chain: bytes, next_header: int, l4: bytes, **ip: Any) -> bytes:
    return e.eth(ETH_P_IPV6) + e.ipv6(next_header, chain + l4, **ip)


V6_CASES: dict[str, tuple[Callable[[Endpoints], bytes], str]] = {
    "tcp_steered": (lambda e: v6_frame(e, b"", IPPROTO_TCP, e.tcp(TCP_PORT)), "redirect_miss"),
    "tcp_other_port": (lambda e: v6_frame(e, b"", IPPROTO_TCP, e.tcp(7002)), "pass_port_tcp"),
    "hop_by_hop_then_tcp": (lambda e: v6_frame(e, e.ext(IPPROTO_TCP), IP6_HOPOPTS,
                                               e.tcp(TCP_PORT)), "redirect_miss"),
    "routing_done_then_tcp": (lambda e: v6_frame(e, e.ext(IPPROTO_TCP, units=2), IP6_ROUTING,
                                                 e.tcp(TCP_PORT)), "redirect_miss"),
    "routing_segments_left": (lambda e: v6_frame(e, e.ext(IPPROTO_TCP, segments_left=1),
                                                 IP6_ROUTING, e.tcp(TCP_PORT)),
                              "pass_ipv6_ext"),
    "four_options_then_tcp": (lambda e: v6_frame(
        e, e.ext(IP6_DSTOPTS) * 3 + e.ext(IPPROTO_TCP), IP6_DSTOPTS, e.tcp(TCP_PORT)),
        "redirect_miss"),
    "five_options_then_tcp": (lambda e: v6_frame(
        e, e.ext(IP6_DSTOPTS) * 4 + e.ext(IPPROTO_TCP), IP6_DSTOPTS, e.tcp(TCP_PORT)),
        "pass_ipv6_ext"),
    "fragment": (lambda e: v6_frame(e, bytes([IPPROTO_TCP]) + bytes(7), IP6_FRAGMENT,
                                    e.tcp(TCP_PORT)), "pass_fragment"),
    "icmpv6": (lambda e: v6_frame(e, b"", IPPROTO_ICMPV6, bytes([135, 0]) + bytes(22)),
               "pass_other_l4"),  # neighbour solicitation: always the kernel's
    "udp": (lambda e: v6_frame(e, b"", IPPROTO_UDP, e.udp(UDP_PORT)), "pass_other_l4"),
    "header_truncated": (lambda e: e.eth(ETH_P_IPV6) + e.ipv6(IPPROTO_TCP, b"")[:39],
                         "err_ip6_trunc"),
    "payload_length_past_frame": (lambda e: v6_frame(e, b"", IPPROTO_TCP, e.tcp(TCP_PORT),
                                                     plen=200), "err_ip6_trunc"),
    "jumbogram": (lambda e: v6_frame(e, b"", IPPROTO_TCP, e.tcp(TCP_PORT), plen=0),
                  "err_ip6_trunc"),
    # Hdr Ext Len 9 (80 bytes) with 8 there and a 20-byte TCP header after them.
    "extension_past_payload": (lambda e: v6_frame(e, bytes([IPPROTO_TCP, 9]) + bytes(6),
                                                  IP6_HOPOPTS, e.tcp(TCP_PORT)),
                               "err_ip6_trunc"),
    "version_4": (lambda e: v6_frame(e, b"", IPPROTO_TCP, e.tcp(TCP_PORT), version=4),
                  "err_ip_version"),
    "tcp_truncated": (lambda e: v6_frame(e, b"", IPPROTO_TCP, e.tcp(TCP_PORT)[:19]),
                      "err_tcp_trunc"),
    "tcp_doff_past_segment": (lambda e: v6_frame(e, b"", IPPROTO_TCP, e.tcp(TCP_PORT, doff=8)),
                              "err_tcp_trunc"),
}


@pytest.mark.parametrize("case", sorted(V6_CASES))
def test_each_ipv6_frame_passes_and_is_counted_once_by_reason(
        case: str, steered: Steering, quiet_bed: Testbed, v6: Endpoints) -> None:
    build, reason = V6_CASES[case]
    action, delta = run_one(steered, quiet_bed, build(v6))
    assert action == XDP_PASS
    assert delta == {reason: 1}


def test_ipv6_is_the_kernels_until_switched_on(
        steered: Steering, quiet_bed: Testbed, to_joy: Endpoints) -> None:
    e = dataclasses.replace(to_joy, src_ip=V6_PEER, dst_ip=V6_JOY)
    assert run_one(steered, quiet_bed, v6_frame(e, b"", IPPROTO_TCP, e.tcp(TCP_PORT)))[1] == {
        "pass_not_ipv4": 1}


def test_only_the_interfaces_ipv6_addresses_are_steered(
        steered: Steering, quiet_bed: Testbed, v6: Endpoints, to_joy: Endpoints) -> None:
    elsewhere = dataclasses.replace(v6, dst_ip=bytes.fromhex("20010db8000000990000000000000007"))
    with quiet_bed.joy.inside():
        steered.set_addresses([to_joy.dst_ip, V6_JOY])
    try:
        frame = v6_frame(v6, b"", IPPROTO_TCP, v6.tcp(TCP_PORT))
        assert run_one(steered, quiet_bed, frame)[1] == {"redirect_miss": 1}
        other = v6_frame(elsewhere, b"", IPPROTO_TCP, elsewhere.tcp(TCP_PORT))
        assert run_one(steered, quiet_bed, other)[1] == {"pass_addr": 1}
        assert run_one(steered, quiet_bed, to_joy.tcp_frame(TCP_PORT))[1] == {
            "redirect_miss": 1}
        with quiet_bed.joy.inside():
            steered.set_addresses([to_joy.dst_ip])  # the IPv6 address is gone
        assert run_one(steered, quiet_bed, frame)[1] == {"pass_addr": 1}
    finally:
        with quiet_bed.joy.inside():
            steered.set_addresses(None)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutate=st.data())
def test_arbitrary_ipv6_damage_always_passes_with_exactly_one_count(
        mutate: st.DataObject, steered: Steering, quiet_bed: Testbed, v6: Endpoints) -> None:
    """A steered IPv6 frame with extension headers, a few bytes changed and cut short."""
    frame = bytearray(v6_frame(v6, v6.ext(IP6_DSTOPTS) + v6.ext(IPPROTO_TCP), IP6_HOPOPTS,
                               v6.tcp(TCP_PORT)))
    for _ in range(mutate.draw(st.integers(1, 4))):
        frame[mutate.draw(st.integers(14, len(frame) - 1))] = mutate.draw(st.integers(0, 255))
    data = bytes(frame[:mutate.draw(st.integers(14, len(frame)))])
    action, delta = run_one(steered, quiet_bed, data)
    assert action == XDP_PASS
    assert sum(delta.values()) == 1
