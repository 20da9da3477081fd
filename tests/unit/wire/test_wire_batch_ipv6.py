"""The compiled batch parser on IPv6 frames (``BatchParser(ipv6=True)``, wire.c's
``wire_parse_batch6``): agreement with the Python reference (``parse_frame(ipv6=True)``)
on Linux's frames, on built and mutated ones, on hostile extension-header chains and on
every drop reason; and IPv6 left out where it is not asked for."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ipv6 import DST, LINUX_ACK6, LINUX_DATA6, LINUX_SYN6, PADN6, SRC, packet
from test_wire_batch import check_agreement, data_segments

from joyride.wire.batch import BatchBuilder, BatchParser, FrameTemplate
from joyride.wire.errors import Reason, SanityError
from joyride.wire.ethernet import ETHERTYPE_IPV6, EthernetHeader
from joyride.wire.frame import build_frame, parse_frame
from joyride.wire.ipv6 import Ipv6Header, is_martian6
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpFlags, TcpSegment
from joyride.wire.tcp_options import TcpOptions

PARSER6 = BatchParser(64, ipv6=True)
PARSER6_NOVERIFY = BatchParser(64, verify_checksums=False, ipv6=True)
ETH6 = bytes(12) + b"\x86\xdd"
SEG = LINUX_DATA6[54:]  # Linux's segment: its checksum holds whatever headers precede it


def test_linux_frames_agree_and_read_right() -> None:
    check_agreement(PARSER6, [LINUX_SYN6, LINUX_ACK6, LINUX_DATA6])
    r = PARSER6.records
    assert list(r["family"][:3]) == [6, 6, 6]
    assert r["src_ip"][0].tobytes() == bytes(4)  # IPv6 addresses are beside the record
    frame = PARSER6.frame(2)
    assert isinstance(frame.ip, Ipv6Header)
    assert (frame.ip.src, frame.ip.dst, frame.ip.flow_label) == (SRC, DST, 0xCE79E)
    assert bytes(frame.tcp.payload) == b"hello ipv6"


def test_ipv6_is_refused_unless_asked_for() -> None:
    plain = BatchParser(4)
    assert plain.parse([LINUX_DATA6]) == 0
    assert plain.reason(0) is Reason.ETH_NOT_IPV4
    with pytest.raises(SanityError) as err:
        parse_frame(LINUX_DATA6)
    assert err.value.code is Reason.ETH_NOT_IPV4


unicast6 = st.binary(min_size=16, max_size=16).filter(lambda a: not is_martian6(a))


@st.composite
def ipv6_frames(draw: st.DrawFn) -> bytes:
    ip = Ipv6Header(draw(unicast6), draw(unicast6), hop_limit=draw(st.integers(1, 255)),
                    traffic_class=draw(st.integers(0, 255)),
                    flow_label=draw(st.integers(0, 0xFFFFF)))
    opts = draw(st.sampled_from([TcpOptions(), TcpOptions(timestamps=(1, 2)),
                                 TcpOptions(sack_blocks=((Seq(5), Seq(9)),)),
                                 TcpOptions(mss=1440, wscale=7, sack_permitted=True)]))
    flags = draw(st.sampled_from([TcpFlags.ACK, TcpFlags.ACK | TcpFlags.PSH, TcpFlags.SYN,
                                  TcpFlags.RST, TcpFlags.FIN | TcpFlags.ACK]))
    seg = TcpSegment(draw(st.integers(1, 0xFFFF)), draw(st.integers(1, 0xFFFF)),
                     Seq(draw(st.integers(0, 2**32 - 1))), Seq(7), flags, 1000,
                     draw(st.binary(max_size=200)), opts)
    tci = draw(st.none() | st.integers(0, 0xFFFF))
    return build_frame(EthernetHeader(bytes(6), bytes(6), ETHERTYPE_IPV6, tci), ip, seg)


@st.composite
def mutated_ipv6(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(ipv6_frames() | st.sampled_from([LINUX_SYN6, LINUX_DATA6])))
    for _ in range(draw(st.integers(1, 4))):
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(raw)))
    return bytes(raw[: max(cut, len(raw) - draw(st.integers(0, 8)))])


@st.composite
def extension_soup(draw: st.DrawFn) -> bytes:
    """Chains of extension headers, well-formed or not, before Linux's segment."""
    chain = []
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from([0, 43, 44, 60, 51, 6, 17, 59]))
        rest = draw(st.sampled_from([PADN6, bytes(7), bytes([0, 4, 0, 0, 0, 0, 0]),
                                     bytes([0, 4, 1, 0, 0, 0, 0]), bytes([0, 0, 1, 0, 0, 0, 0]),
                                     bytes([0, 0x80, 4, 0, 0, 0, 0]), bytes([3]) + bytes(30),
                                     bytes([0, 1, 9, 0, 0, 0, 0])]) | st.binary(max_size=24))
        chain.append((kind, rest))
    return ETH6 + packet(chain, upper=draw(st.sampled_from([6, 6, 17])), body=SEG)


@given(st.lists(ipv6_frames(), min_size=1, max_size=12))
def test_agreement_on_built_frames(frames: list[bytes]) -> None:
    check_agreement(PARSER6, frames)


@given(st.lists(mutated_ipv6(), min_size=1, max_size=12))
def test_agreement_on_mutated_frames(frames: list[bytes]) -> None:
    check_agreement(PARSER6, frames)
    check_agreement(PARSER6_NOVERIFY, frames)


@given(st.lists(extension_soup(), min_size=1, max_size=12))
def test_agreement_on_extension_soup(frames: list[bytes]) -> None:
    check_agreement(PARSER6, frames)


def test_every_ipv6_reason_agrees() -> None:
    fixed = struct.pack("!IHBB16s16s", 6 << 28, len(SEG), 6, 64, SRC, DST)
    jumbo = bytearray(ETH6 + packet([(0, bytes([0, 0xC2, 4, 0, 1, 0, 0]))], body=SEG))
    jumbo[18:20] = b"\0\0"
    cases = {
        Reason.IP_TRUNCATED: ETH6 + fixed[:30],
        Reason.IP_BAD_VERSION: ETH6 + b"\x40" + fixed[1:] + SEG,
        Reason.IP6_JUMBOGRAM: bytes(jumbo),
        Reason.IP6_BAD_EXTENSION: ETH6 + packet([(60, PADN6), (0, PADN6)], body=SEG),
        Reason.IP6_OPTION: ETH6 + packet([(60, bytes([0, 0x80, 4, 0, 0, 0, 0]))], body=SEG),
        Reason.IP6_ROUTING: ETH6 + packet([(43, bytes([0, 4, 1, 0, 0, 0, 0]))], body=SEG),
        Reason.IP_FRAGMENT: ETH6 + packet([(44, bytes([0, 0, 1, 0, 0, 0, 0]))], body=SEG),
        Reason.IP6_HEADER_CHAIN: ETH6 + packet([(60, PADN6)] * 9, body=SEG),
        Reason.IP_BAD_SRC_ADDR: ETH6 + fixed[:8] + bytes(15) + b"\x01" + fixed[24:] + SEG,
        Reason.IP_BAD_DST_ADDR: ETH6 + fixed[:24] + b"\xff\x02" + bytes(14) + SEG,
        Reason.IP_NOT_TCP: ETH6 + packet([], upper=17, body=SEG),
        Reason.TCP_BAD_CHECKSUM: LINUX_DATA6[:-1] + b"7",
        Reason.TCP_TRUNCATED: ETH6 + packet([], body=SEG[:10]),
    }
    # Six destination-options headers of 40 bytes (length 4, one PadN of 36): 280 bytes.
    long_chain = ETH6 + packet([(60, bytes([4, 1, 36]) + bytes(36))] * 6, body=SEG)
    cases_chain_bytes = {Reason.IP6_HEADER_CHAIN: long_chain}  # 6 x 40 bytes: > 255
    frames = list(cases.values()) + list(cases_chain_bytes.values())
    check_agreement(PARSER6, frames)
    reasons = [*cases, *cases_chain_bytes]
    for i, reason in enumerate(reasons):
        assert PARSER6.reason(i) is reason, (i, reason, PARSER6.reason(i))


def test_extension_headers_before_the_segment_are_walked() -> None:
    chain = [(0, PADN6), (43, bytes([0, 4, 0, 0, 0, 0, 0])), (44, bytes(7)), (60, PADN6)]
    frame = ETH6 + packet(chain, body=SEG)
    check_agreement(PARSER6, [frame])
    assert PARSER6.records["ip_hl"][0] == 40 + 32
    assert bytes(PARSER6.frame(0).tcp.payload) == b"hello ipv6"


# -- building ------------------------------------------------------------------------

@st.composite
def templates6(draw: st.DrawFn) -> FrameTemplate:
    return FrameTemplate(
        bytes(draw(st.binary(min_size=6, max_size=6))),
        bytes(draw(st.binary(min_size=6, max_size=6))),
        draw(unicast6), draw(unicast6), draw(st.integers(1, 0xFFFF)),
        draw(st.integers(1, 0xFFFF)), draw(st.none() | st.integers(0, 0xFFFF)),
        draw(st.integers(1, 255)), draw(st.integers(0, 255)), True,
        draw(st.integers(0, 0xFFFFF)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_build_matches_python_emitter(data: st.DataObject) -> None:
    t = data.draw(templates6())
    segs = data.draw(st.lists(data_segments(t), min_size=1, max_size=16))
    built = BatchBuilder(t, 16).build(segs, [0] * len(segs))
    eth = EthernetHeader(t.dst_mac, t.src_mac, ETHERTYPE_IPV6, t.vlan_tci)
    ip = Ipv6Header(t.src_ip, t.dst_ip, hop_limit=t.ttl, traffic_class=t.tos,
                    flow_label=t.flow_label)
    for seg, raw in zip(segs, built, strict=True):
        assert raw == build_frame(eth, ip, seg)
    check_agreement(PARSER6, built)


def test_build_reproduces_linux_data_segment() -> None:
    theirs = parse_frame(LINUX_DATA6, ipv6=True)
    assert isinstance(theirs.ip, Ipv6Header)
    t = FrameTemplate(theirs.eth.src, theirs.eth.dst, theirs.ip.src, theirs.ip.dst,
                      theirs.tcp.src_port, theirs.tcp.dst_port, flow_label=0xCE79E)
    [raw] = BatchBuilder(t).build([theirs.tcp], [0])
    assert raw == LINUX_DATA6


def test_templates_take_one_family() -> None:
    with pytest.raises(ValueError):
        BatchBuilder(FrameTemplate(bytes(6), bytes(6), SRC, bytes(4), 1, 2))
    with pytest.raises(ValueError):
        BatchBuilder(FrameTemplate(bytes(6), bytes(6), SRC, DST, 1, 2, flow_label=1 << 20))
