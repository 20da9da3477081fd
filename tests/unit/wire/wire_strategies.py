"""Hypothesis strategies for valid wire objects, shared by the wire tests."""

from __future__ import annotations

from hypothesis import strategies as st

from joyride.wire.ethernet import ETHERTYPE_IPV4, EthernetHeader
from joyride.wire.ipv4 import Ipv4Header
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpFlags, TcpSegment
from joyride.wire.tcp_options import TcpOptions, options_len

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
seqs = u32.map(Seq)
macs = st.binary(min_size=6, max_size=6)
ports = st.integers(1, 0xFFFF)

# Unicast addresses only: 0/8, 127/8 and 224/3 are rejected as martians.
unicast_ips = st.tuples(
    st.integers(1, 223).filter(lambda b: b != 127), st.binary(min_size=3, max_size=3)
).map(lambda t: bytes([t[0]]) + t[1])


def ethernet_headers(ethertype: int | None = ETHERTYPE_IPV4) -> st.SearchStrategy[EthernetHeader]:
    types = st.just(ethertype) if ethertype is not None else u16.filter(lambda t: t != 0x8100)
    return st.builds(EthernetHeader, macs, macs, types, st.none() | u16)


@st.composite
def ip_options(draw: st.DrawFn) -> bytes:
    """A well-formed IPv4 option list, padded with EOL to a multiple of 4 (≤ 40)."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.integers(2, 255))
        body = draw(st.binary(max_size=6))
        if len(out) + 2 + len(body) > 40:
            break
        if draw(st.booleans()):
            out.append(1)  # a NOP in front
            if len(out) + 2 + len(body) > 40:
                break
        out += bytes((kind, 2 + len(body))) + body
    out += b"\x00" * (-len(out) % 4)
    return bytes(out[:40])


def ipv4_headers(proto: int | None = 6) -> st.SearchStrategy[Ipv4Header]:
    return st.builds(
        Ipv4Header,
        unicast_ips,
        unicast_ips,
        st.just(proto) if proto is not None else st.integers(0, 255),
        st.integers(0, 255),
        st.integers(0, 255),
        u16,
        st.booleans(),
        ip_options(),
    )


sack_blocks = st.lists(st.tuples(seqs, seqs), max_size=4).map(tuple)

tcp_options = st.builds(
    TcpOptions,
    st.none() | u16,
    st.none() | st.integers(0, 255),
    st.booleans(),
    sack_blocks,
    st.none() | st.tuples(u32, u32),
).filter(lambda o: options_len(o) <= 40)

# SYN+FIN is a sanity error, so valid segments never carry both.
tcp_flags = st.integers(0, 255).filter(lambda f: f & 3 != 3).map(TcpFlags)

tcp_segments = st.builds(
    TcpSegment,
    ports,
    ports,
    seqs,
    seqs,
    tcp_flags,
    u16,
    st.binary(max_size=300),
    tcp_options,
    u16,
)
