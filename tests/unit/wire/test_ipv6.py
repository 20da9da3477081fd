"""IPv6 headers and the IPv6 pseudo-header checksum (joyride/wire/ipv6.py, checksum.py).

Known vectors: three frames Linux sent (a SYN, an ACK, "hello ipv6") between
fd00:6::1 and fd00:6::2 on a veth pair with transmit checksum offload off, captured on
the peer with an AF_PACKET socket (2026-12-04, Linux 6.18): the checksums in them are
the kernel's, computed over RFC 8200 §8.1's pseudo-header.
"""

from __future__ import annotations

import contextlib
import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from joyride.wire.checksum import internet_checksum, ones_sum, pseudo_header_sum
from joyride.wire.errors import IntegrityError, ParseError, Reason, SanityError
from joyride.wire.ethernet import ETHERTYPE_IPV6, EthernetHeader
from joyride.wire.frame import build_frame
from joyride.wire.ipv6 import (
    IPV6_HLEN,
    MAX_EXTENSION_HEADERS,
    Ipv6Header,
    emit_ipv6,
    is_martian6,
    parse_ipv6,
)
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpFlags, TcpSegment, emit_tcp_into, parse_tcp_ex
from joyride.wire.tcp_options import TcpOptions

LINUX_SYN6 = bytes.fromhex(
    "da3dc6b3c80c5ece425d8ca186dd600ce79e00280640fd000006000000000000000000000001fd00"
    "0006000000000000000000000002886a15b3c5bc849e00000000a002fd20580c0000020405a00402"
    "080a067409e7000000000103030a")
LINUX_ACK6 = bytes.fromhex(
    "da3dc6b3c80c5ece425d8ca186dd600ce79e00200640fd000006000000000000000000000001fd00"
    "0006000000000000000000000002886a15b3c5bc849f1b061910801000403b5400000101080a0674"
    "09e7e1ed3240")
LINUX_DATA6 = bytes.fromhex(
    "da3dc6b3c80c5ece425d8ca186dd600ce79e002a0640fd000006000000000000000000000001fd00"
    "0006000000000000000000000002886a15b3c5bc849f1b0619108018004017a900000101080a0674"
    "09e7e1ed324068656c6c6f2069707636")
SRC = bytes.fromhex("fd000006000000000000000000000001")
DST = bytes.fromhex("fd000006000000000000000000000002")
ETH_HLEN = 14


@pytest.mark.parametrize("frame", [LINUX_SYN6, LINUX_ACK6, LINUX_DATA6])
def test_linux_frames_parse_and_their_checksums_verify(frame: bytes) -> None:
    ip, l4 = parse_ipv6(frame[ETH_HLEN:])
    assert (ip.src, ip.dst, ip.proto, ip.hop_limit) == (SRC, DST, 6, 64)
    assert ip.flow_label == 0xCE79E and ip.traffic_class == 0
    seg, _ = parse_tcp_ex(l4, ip.src, ip.dst, verify_checksum=True)
    assert (seg.src_port, seg.dst_port) == (0x886A, 5555)


def test_linux_checksum_is_the_pseudo_header_sum() -> None:
    l4 = bytearray(LINUX_DATA6[ETH_HLEN + IPV6_HLEN:])
    theirs = int.from_bytes(l4[16:18], "big")
    l4[16:18] = b"\0\0"
    assert internet_checksum(l4, pseudo_header_sum(SRC, DST, 6, len(l4))) == theirs
    seg, _ = parse_tcp_ex(bytes(LINUX_DATA6[ETH_HLEN + IPV6_HLEN:]), SRC, DST)
    assert bytes(seg.payload) == b"hello ipv6"


def test_a_changed_address_fails_the_checksum() -> None:
    ip, l4 = parse_ipv6(LINUX_DATA6[ETH_HLEN:])
    other = DST[:-1] + b"\x03"
    with pytest.raises(IntegrityError) as err:
        parse_tcp_ex(l4, ip.src, other, verify_checksum=True)
    assert err.value.code is Reason.TCP_BAD_CHECKSUM


@given(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4),
       st.integers(0, 255), st.integers(0, 0xFFFF))
def test_ipv4_pseudo_header_sum_is_unchanged(src: bytes, dst: bytes, proto: int,
                                             length: int) -> None:
    words = [int.from_bytes(b[i:i + 2], "big") for b in (src, dst) for i in (0, 2)]
    s = sum(words) + proto + length
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    assert pseudo_header_sum(src, dst, proto, length) % 0xFFFF == s % 0xFFFF


def test_pseudo_header_sum_refuses_mixed_families() -> None:
    with pytest.raises(ValueError):
        pseudo_header_sum(bytes(4), bytes(16), 6, 20)


unicast6 = st.binary(min_size=16, max_size=16).filter(lambda a: not is_martian6(a))


@given(unicast6, unicast6, st.integers(0, 255), st.integers(0, 0xFFFFF),
       st.integers(1, 255), st.binary(max_size=300),
       st.integers(1, 0xFFFF), st.integers(1, 0xFFFF), st.integers(0, 2**32 - 1))
def test_round_trip(src: bytes, dst: bytes, tclass: int, label: int, hops: int,
                    payload: bytes, sport: int, dport: int, seq: int) -> None:
    ip = Ipv6Header(src, dst, hop_limit=hops, traffic_class=tclass, flow_label=label)
    seg = TcpSegment(sport, dport, Seq(seq), Seq(7), TcpFlags.ACK | TcpFlags.PSH, 512,
                     payload, TcpOptions(timestamps=(1, 2)))
    eth = EthernetHeader(bytes(6), bytes(6), ETHERTYPE_IPV6)
    frame = build_frame(eth, ip, seg)
    got, l4 = parse_ipv6(frame[ETH_HLEN:])
    assert got == ip
    back, _ = parse_tcp_ex(l4, src, dst, verify_checksum=True)
    assert bytes(back.payload) == payload and back.seq == Seq(seq)


@given(st.binary(max_size=120))
def test_arbitrary_bytes_after_the_fixed_header_never_escape(tail: bytes) -> None:
    # A hostile chain of extension headers: every outcome is a parse or a ParseError.
    for first in (0, 43, 44, 60, 6, 17):
        fixed = struct.pack("!IHBB16s16s", 6 << 28, len(tail), first, 64, SRC, DST)
        with contextlib.suppress(ParseError):
            parse_ipv6(fixed + tail)


def packet(chain: list[tuple[int, bytes]], upper: int = 6, body: bytes = bytes(20)) -> bytes:
    """A fixed header, the extension headers (next-header byte filled in), the body."""
    out = bytearray()
    kinds = [k for k, _ in chain] + [upper]
    for i, (_, rest) in enumerate(chain):
        out += bytes([kinds[i + 1]]) + rest
    out += body
    return struct.pack("!IHBB16s16s", 6 << 28, len(out), kinds[0], 64, SRC, DST) + out


PADN6 = bytes([0, 1, 4, 0, 0, 0, 0])  # hdr ext len 0, PadN of 4 bytes: 8 bytes in all


def test_options_headers_are_walked() -> None:
    ip, body = parse_ipv6(packet([(0, PADN6), (60, PADN6)]))
    assert ip.proto == 6 and len(body) == 20


def test_hop_by_hop_must_come_first() -> None:
    with pytest.raises(IntegrityError) as err:
        parse_ipv6(packet([(60, PADN6), (0, PADN6)]))
    assert err.value.code is Reason.IP6_BAD_EXTENSION


@pytest.mark.parametrize(("opt_type", "ok"), [(0x1E, True), (0x3F, True), (0x5E, False),
                                               (0x8E, False), (0xC2, False)])
def test_unknown_options_follow_their_action_bits(opt_type: int, ok: bool) -> None:
    pkt = packet([(60, bytes([0, opt_type, 4, 0, 0, 0, 0]))])
    if ok:
        assert parse_ipv6(pkt)[0].proto == 6
    else:
        with pytest.raises(SanityError) as err:
            parse_ipv6(pkt)
        assert err.value.code is Reason.IP6_OPTION


def test_an_option_longer_than_its_header_is_malformed() -> None:
    with pytest.raises(IntegrityError) as err:
        parse_ipv6(packet([(60, bytes([0, 1, 9, 0, 0, 0, 0]))]))
    assert err.value.code is Reason.IP6_BAD_EXTENSION


def test_routing_header_with_segments_left_is_not_for_us() -> None:
    done = bytes([0, 4, 0, 0, 0, 0, 0])  # type 4, segments left 0
    assert parse_ipv6(packet([(43, done)]))[0].proto == 6
    with pytest.raises(SanityError) as err:
        parse_ipv6(packet([(43, bytes([0, 4, 1, 0, 0, 0, 0]))]))
    assert err.value.code is Reason.IP6_ROUTING


def test_fragments_are_refused_but_an_atomic_fragment_is_read() -> None:
    atomic = bytes([0, 0, 0, 0, 0, 0, 42])
    assert parse_ipv6(packet([(44, atomic)]))[0].proto == 6  # RFC 6946
    for frag in (b"\x00\x01", b"\x00\x08"):  # M set; offset 1
        with pytest.raises(SanityError) as err:
            parse_ipv6(packet([(44, bytes([0]) + frag + bytes(4))]))
        assert err.value.code is Reason.IP_FRAGMENT


def test_the_walk_is_bounded() -> None:
    assert parse_ipv6(packet([(60, PADN6)] * MAX_EXTENSION_HEADERS))[0].proto == 6
    with pytest.raises(SanityError) as err:
        parse_ipv6(packet([(60, PADN6)] * (MAX_EXTENSION_HEADERS + 1)))
    assert err.value.code is Reason.IP6_HEADER_CHAIN


def test_truncations_and_versions() -> None:
    good = packet([])
    with pytest.raises(IntegrityError):
        parse_ipv6(good[:39])
    with pytest.raises(IntegrityError) as err:
        parse_ipv6(good[:-1])  # payload length beyond the bytes
    assert err.value.code is Reason.IP_TRUNCATED
    with pytest.raises(IntegrityError) as err:
        parse_ipv6(bytes([0x40]) + good[1:])
    assert err.value.code is Reason.IP_BAD_VERSION
    with pytest.raises(IntegrityError):
        parse_ipv6(packet([(60, PADN6)], body=b"")[:-4])  # header cut
    _, body = parse_ipv6(good + b"padding")  # bytes after the payload are ignored
    assert len(body) == 20


def test_jumbograms_are_refused() -> None:
    pkt = bytearray(packet([(0, bytes([0, 0xC2, 4, 0, 1, 0, 0]))]))
    pkt[4:6] = b"\0\0"
    with pytest.raises(SanityError) as err:
        parse_ipv6(bytes(pkt))
    assert err.value.code is Reason.IP6_JUMBOGRAM


@pytest.mark.parametrize("addr", ["::", "::1", "ff02::1", "ff05::2", "::ffff:10.0.0.1"])
def test_martians_are_refused_both_ways(addr: str) -> None:
    raw = ipaddress.IPv6Address(addr).packed
    assert is_martian6(raw)
    for src, dst, reason in ((raw, DST, Reason.IP_BAD_SRC_ADDR),
                             (SRC, raw, Reason.IP_BAD_DST_ADDR)):
        with pytest.raises(SanityError) as err:
            parse_ipv6(emit_ipv6(Ipv6Header(src, dst), bytes(20)))
        assert err.value.code is reason


@pytest.mark.parametrize("addr", ["fe80::1", "2001:db8::1", "fd00::1", "::2", "64:ff9b::1"])
def test_unicast_addresses_are_not_martians(addr: str) -> None:
    assert not is_martian6(ipaddress.IPv6Address(addr).packed)


def test_emit_checks_its_fields() -> None:
    with pytest.raises(ValueError):
        emit_ipv6(Ipv6Header(bytes(4), DST))
    with pytest.raises(ValueError):
        emit_ipv6(Ipv6Header(SRC, DST, flow_label=1 << 20))
    with pytest.raises(ValueError):
        emit_ipv6(Ipv6Header(SRC, DST), bytes(0x10000))


def test_segments_up_to_the_ipv6_limit_are_emitted() -> None:
    seg = TcpSegment(1, 2, Seq(0), Seq(0), TcpFlags.ACK, 1, bytes(0xFFFF - 20))
    buf = bytearray(0xFFFF)
    assert emit_tcp_into(buf, 0, seg, SRC, DST) == 0xFFFF
    with pytest.raises(ValueError):
        emit_tcp_into(buf, 0, seg, bytes(4), bytes(4))  # too big for IPv4
    assert ones_sum(bytes(buf), pseudo_header_sum(SRC, DST, 6, 0xFFFF)) == 0xFFFF
