"""ICMP "fragmentation needed" and ICMPv6 "packet too big" reports (joyride.wire.icmp):
what a router builds comes back whole, and no input, malformed or hostile, raises."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from joyride.wire.ethernet import EthernetHeader
from joyride.wire.frame import build_frame, parse_frame
from joyride.wire.icmp import (
    TooBig,
    build_too_big4,
    build_too_big6,
    parse_too_big4,
    parse_too_big6,
)
from joyride.wire.ipv4 import Ipv4Header
from joyride.wire.ipv6 import Ipv6Header
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpFlags, TcpSegment

OURS, PEER, ROUTER = bytes([198, 18, 0, 1]), bytes([198, 18, 1, 2]), bytes([198, 18, 0, 254])


def dropped_packet(sport: int, dport: int, seq: int, payload: bytes) -> bytes:
    """The IPv4 packet of one of our segments, as the router saw it."""
    seg = TcpSegment(sport, dport, Seq(seq), Seq(1), TcpFlags.ACK, 1000, payload=payload)
    frame = build_frame(EthernetHeader(bytes(6), bytes(6)), Ipv4Header(OURS, PEER), seg)
    return frame[14:]


@given(st.integers(1, 65535), st.integers(1, 65535), st.integers(0, 2**32 - 1),
       st.integers(0, 65535), st.binary(max_size=1400))
def test_a_report_round_trips(sport: int, dport: int, seq: int, mtu: int,
                              payload: bytes) -> None:
    packet = build_too_big4(ROUTER, mtu, dropped_packet(sport, dport, seq, payload))
    assert parse_too_big4(packet) == TooBig(mtu, OURS, PEER, sport, dport, seq)


def test_the_dropped_packet_still_parses_as_ours() -> None:
    """The helper's packet is a real segment (the round trip reads what a router saw)."""
    raw = dropped_packet(8080, 40000, 7, b"x" * 100)
    assert parse_frame(bytes(12) + b"\x08\x00" + raw).tcp.seq == Seq(7)


@given(st.binary(max_size=700))
def test_any_bytes_are_a_report_or_none_never_an_error(data: bytes) -> None:
    result = parse_too_big4(data)
    assert result is None or isinstance(result, TooBig)


@given(st.integers(0, 10**6), st.integers(1, 255))
def test_a_damaged_report_is_refused(where: int, flip: int) -> None:
    """A byte changed anywhere in the ICMP message (the checksum field included) breaks
    its ones' complement sum: one byte cannot move a word by 0xFFFF."""
    good = bytearray(build_too_big4(ROUTER, 1200, dropped_packet(8080, 40000, 99, b"y" * 64)))
    good[20 + where % (len(good) - 20)] ^= flip
    assert parse_too_big4(bytes(good)) is None


def test_other_icmp_and_short_quotes_are_none() -> None:
    packet = bytearray(build_too_big4(ROUTER, 1200, dropped_packet(8080, 40000, 5, b"")))
    echo = bytearray(packet)
    echo[20] = 8  # an echo request, not destination unreachable
    assert parse_too_big4(bytes(echo)) is None
    assert parse_too_big4(bytes(packet[:-1])) is None  # total length past the end
    assert parse_too_big4(b"") is None


V6_OURS = bytes.fromhex("20010002000000010000000000000001")
V6_PEER = bytes.fromhex("20010002000000020000000000000002")


def dropped_packet6(sport: int, dport: int, seq: int, payload: bytes) -> bytes:
    seg = TcpSegment(sport, dport, Seq(seq), Seq(1), TcpFlags.ACK, 1000, payload=payload)
    eth = EthernetHeader(bytes(6), bytes(6), 0x86DD)
    return build_frame(eth, Ipv6Header(V6_OURS, V6_PEER), seg)[14:]


@given(st.integers(1, 65535), st.integers(1, 65535), st.integers(0, 2**32 - 1),
       st.integers(0, 2**32 - 1), st.binary(max_size=1400))
def test_an_ipv6_report_round_trips(sport: int, dport: int, seq: int, mtu: int,
                                    payload: bytes) -> None:
    message = build_too_big6(mtu, dropped_packet6(sport, dport, seq, payload))
    assert len(message) <= 1280 - 40  # what fits a minimum-MTU reply (RFC 4443 §2.4 c)
    assert parse_too_big6(message) == TooBig(mtu, V6_OURS, V6_PEER, sport, dport, seq)


@given(st.binary(max_size=700))
def test_any_bytes_are_an_ipv6_report_or_none(data: bytes) -> None:
    result = parse_too_big6(data)
    assert result is None or isinstance(result, TooBig)


def test_other_icmpv6_and_other_quotes_are_none() -> None:
    good = bytearray(build_too_big6(1280, dropped_packet6(8080, 40000, 5, b"z")))
    unreachable = bytearray(good)
    unreachable[0] = 1  # destination unreachable, not packet too big
    assert parse_too_big6(bytes(unreachable)) is None
    not_tcp = bytearray(good)
    not_tcp[8 + 6] = 17  # the quoted packet is UDP
    assert parse_too_big6(bytes(not_tcp)) is None
    assert parse_too_big6(bytes(good[:8 + 40 + 7])) is None  # the TCP ports cut short
