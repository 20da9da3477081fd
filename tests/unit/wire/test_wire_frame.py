"""Whole-frame parse/build: round trips, frames captured from Linux, and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire_strategies import ethernet_headers, ipv4_headers, tcp_segments

from joyride.wire.errors import IntegrityError, ParseError, Reason, SanityError
from joyride.wire.ethernet import EthernetHeader
from joyride.wire.frame import Frame, build_frame, build_frame_into, parse_frame
from joyride.wire.ipv4 import Ipv4Header
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpFlags, TcpSegment
from joyride.wire.tcp_options import TcpOptions


def hexdump(text: str) -> bytes:
    """Bytes from tcpdump -xx lines ("0x0000:  2a75 775f ..."), offsets dropped."""
    return bytes.fromhex("".join(line.split(":", 1)[1] for line in text.strip().splitlines()))


# Captured with `tcpdump -xx` on a veth pair between two namespaces (checksum offload
# off), Linux 6.18: a handshake from 10.77.0.1:59350 to 10.77.0.2:8080.
# tcpdump: Flags [S], cksum 0x1053 (correct), seq 1238875617, win 64240,
#          options [mss 1460,sackOK,TS val 1104140077 ecr 0,nop,wscale 10]
LINUX_SYN = hexdump("""
0x0000:  2a75 775f 0c2c 5afe dcef 6c68 0800 4500
0x0010:  003c 219e 4000 4006 0482 0a4d 0001 0a4d
0x0020:  0002 e7d6 1f90 49d7 bde1 0000 0000 a002
0x0030:  faf0 1053 0000 0204 05b4 0402 080a 41cf
0x0040:  d72d 0000 0000 0103 030a
""")
# Flags [S.], cksum 0x1d2e (correct), seq 2704368904, ack 1238875618, win 65160,
# options [mss 1460,sackOK,TS val 2625850558 ecr 1104140077,nop,wscale 10]
LINUX_SYN_ACK = hexdump("""
0x0000:  5afe dcef 6c68 2a75 775f 0c2c 0800 4500
0x0010:  003c 0000 4000 4006 2620 0a4d 0002 0a4d
0x0020:  0001 1f90 e7d6 a131 6508 49d7 bde2 a012
0x0030:  fe88 1d2e 0000 0204 05b4 0402 080a 9c83
0x0040:  4cbe 41cf d72d 0103 030a
""")
# Flags [.], cksum 0x4a47 (correct), seq 1, ack 1, win 63,
# options [nop,nop,TS val 1104140077 ecr 2625850558]
LINUX_ACK = hexdump("""
0x0000:  2a75 775f 0c2c 5afe dcef 6c68 0800 4500
0x0010:  0034 219f 4000 4006 0489 0a4d 0001 0a4d
0x0020:  0002 e7d6 1f90 49d7 bde2 a131 6509 8010
0x0030:  003f 4a47 0000 0101 080a 41cf d72d 9c83
0x0040:  4cbe
""")
CLIENT_MAC = bytes.fromhex("5afedcef6c68")
SERVER_MAC = bytes.fromhex("2a75775f0c2c")
CLIENT_IP = bytes([10, 77, 0, 1])
SERVER_IP = bytes([10, 77, 0, 2])


def test_linux_syn_known_answer() -> None:
    f = parse_frame(LINUX_SYN)
    assert f.eth == EthernetHeader(SERVER_MAC, CLIENT_MAC)
    assert f.ip == Ipv4Header(CLIENT_IP, SERVER_IP, ident=0x219E)
    assert f.tcp == TcpSegment(
        59350,
        8080,
        Seq(1238875617),
        Seq(0),
        TcpFlags.SYN,
        64240,
        options=TcpOptions(mss=1460, wscale=10, sack_permitted=True, timestamps=(1104140077, 0)),
    )
    assert not f.plain
    # Our emitter reproduces Linux's bytes exactly, checksums included.
    assert build_frame(f.eth, f.ip, f.tcp) == LINUX_SYN


def test_linux_syn_ack_and_ack_known_answers() -> None:
    synack = parse_frame(LINUX_SYN_ACK)
    assert synack.tcp.flags == TcpFlags.SYN | TcpFlags.ACK
    assert synack.tcp.seq == Seq(2704368904)
    assert synack.tcp.ack == Seq(1238875618)
    assert synack.tcp.options.timestamps == (2625850558, 1104140077)
    assert build_frame(synack.eth, synack.ip, synack.tcp) == LINUX_SYN_ACK
    ack = parse_frame(LINUX_ACK)
    assert ack.tcp.flags == TcpFlags.ACK
    assert ack.tcp.window == 63
    assert ack.tcp.options == TcpOptions(timestamps=(1104140077, 2625850558))
    assert ack.plain
    assert build_frame(ack.eth, ack.ip, ack.tcp) == LINUX_ACK


def test_ethernet_padding_is_ignored() -> None:
    # A 66-byte ACK padded by a switch to more bytes still parses to the same frame.
    assert parse_frame(LINUX_ACK + bytes(10)) == parse_frame(LINUX_ACK)


def test_known_answer_corruptions() -> None:
    bad = bytearray(LINUX_SYN)
    bad[-1] ^= 1  # window scale 10 -> 11: TCP checksum breaks
    with pytest.raises(IntegrityError) as e:
        parse_frame(bad)
    assert e.value.reason == "tcp_bad_checksum"
    assert parse_frame(bad, verify_checksums=False).tcp.options.wscale == 11
    bad = bytearray(LINUX_SYN)
    bad[22] = 63  # TTL
    with pytest.raises(IntegrityError) as e:
        parse_frame(bad)
    assert e.value.reason == "ip_bad_checksum"
    udp = bytearray(LINUX_SYN)
    udp[23] = 17
    with pytest.raises(ParseError) as perr:
        parse_frame(udp, verify_checksums=False)
    assert isinstance(perr.value, SanityError)
    assert perr.value.code is Reason.IP_NOT_TCP
    arp = LINUX_SYN[:12] + b"\x08\x06" + LINUX_SYN[14:]
    with pytest.raises(SanityError) as serr:
        parse_frame(arp)
    assert serr.value.reason == "eth_not_ipv4"


def test_vlan_tagged_frame() -> None:
    f = parse_frame(LINUX_SYN)
    tagged = EthernetHeader(f.eth.dst, f.eth.src, vlan_tci=0x2064)
    raw = build_frame(tagged, f.ip, f.tcp)
    assert raw[12:18] == bytes.fromhex("810020640800")
    assert raw[18:] == LINUX_SYN[14:]
    assert parse_frame(raw) == Frame(tagged, f.ip, f.tcp)
    double = raw[:16] + b"\x81\x00" + raw[16:]
    with pytest.raises(SanityError) as e:
        parse_frame(double)
    assert e.value.reason == "eth_not_ipv4"


def test_build_frame_into_offset_and_errors() -> None:
    f = parse_frame(LINUX_ACK)
    buf = bytearray(200)
    n = build_frame_into(buf, 7, f.eth, f.ip, f.tcp)
    assert bytes(buf[7 : 7 + n]) == LINUX_ACK
    assert buf[:7] == bytes(7)
    with pytest.raises(ValueError):
        build_frame_into(bytearray(60), 0, f.eth, f.ip, f.tcp)
    with pytest.raises(ValueError):
        build_frame(EthernetHeader(f.eth.dst, f.eth.src, 0x86DD), f.ip, f.tcp)


@settings(max_examples=200, deadline=None)
@given(ethernet_headers(), ipv4_headers(), tcp_segments)
def test_frame_round_trip(eth: EthernetHeader, ip: Ipv4Header, seg: TcpSegment) -> None:
    got = parse_frame(build_frame(eth, ip, seg))
    assert (got.eth, got.ip, got.tcp) == (eth, ip, seg)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_parse_errors(data: bytes) -> None:
    for verify in (True, False):
        try:
            parse_frame(data, verify_checksums=verify)
        except ParseError as e:
            assert e.code is not None
            assert isinstance(e, IntegrityError) == e.code.is_integrity


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    """A valid frame with a few bytes overwritten, inserted, or cut off."""
    raw = bytearray(build_frame(draw(ethernet_headers()), draw(ipv4_headers()), draw(tcp_segments)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["set", "flip", "cut", "insert"]))
        at = draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "set" and raw:
            raw[at] = draw(st.integers(0, 255))
        elif op == "flip" and raw:
            raw[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del raw[at:]
        else:
            raw[at:at] = draw(st.binary(min_size=1, max_size=4))
    return bytes(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_frames())
def test_mutated_frames_raise_only_parse_errors(data: bytes) -> None:
    for verify in (True, False):
        try:
            f = parse_frame(data, verify_checksums=verify)
        except ParseError as e:
            assert e.code is not None
        else:
            # Whatever survives must re-emit to a frame that parses to the same thing.
            again = parse_frame(build_frame(f.eth, f.ip, f.tcp))
            assert (again.eth, again.ip, again.tcp) == (f.eth, f.ip, f.tcp)


def test_parse_accepts_any_contiguous_buffer() -> None:
    import array

    import numpy as np

    expect = parse_frame(LINUX_SYN)
    assert parse_frame(bytearray(LINUX_SYN)) == expect
    assert parse_frame(memoryview(LINUX_SYN)) == expect
    words = np.frombuffer(LINUX_SYN, dtype=np.uint16)  # 74 bytes: 37 words
    assert memoryview(words).format == "H"  # type: ignore[arg-type]
    assert parse_frame(memoryview(words)) == expect  # type: ignore[arg-type]
    assert parse_frame(memoryview(array.array("H", LINUX_SYN))) == expect


@given(ethernet_headers(), ipv4_headers(), tcp_segments)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_tcp_flow_of_agrees_with_the_parser(eth: EthernetHeader, ip: Ipv4Header,
                                            seg: object) -> None:
    """The 4-tuple read from the fixed headers (VLAN tag and IP options included) is the
    one ``parse_frame`` finds."""
    from joyride.wire.frame import tcp_flow_of

    raw = build_frame(eth, ip, seg)  # type: ignore[arg-type]
    frame = parse_frame(raw, verify_checksums=False)
    assert tcp_flow_of(raw) == (frame.ip.src, frame.tcp.src_port, frame.ip.dst,
                                frame.tcp.dst_port)


def test_tcp_flow_of_ipv6_and_what_it_refuses() -> None:
    from joyride.wire.frame import tcp_flow_of
    from joyride.wire.ipv6 import Ipv6Header
    from joyride.wire.tcp import TcpFlags, TcpSegment

    src, dst = bytes(range(16)), bytes(range(16, 32))
    seg = TcpSegment(src_port=4000, dst_port=80, seq=Seq(1), ack=Seq(0),
                     flags=TcpFlags(TcpFlags.SYN), window=1000)
    raw = build_frame(EthernetHeader(b"\x02" * 6, b"\x04" * 6, 0x86DD),
                      Ipv6Header(src, dst), seg)
    assert tcp_flow_of(raw) == (src, 4000, dst, 80)
    assert tcp_flow_of(raw[:20]) is None  # cut short
    udp = bytearray(raw)
    udp[14 + 6] = 17
    assert tcp_flow_of(bytes(udp)) is None
    assert tcp_flow_of(b"\x00" * 12 + b"\x08\x06" + b"\x00" * 28) is None  # ARP
