"""Per-header round trips (parse(emit(x)) == x) and every header-level drop reason."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_strategies import (
    ethernet_headers,
    ipv4_headers,
    tcp_options,
    tcp_segments,
    unicast_ips,
)

from joyride.wire.errors import IntegrityError, ParseError, Reason, SanityError, error_for
from joyride.wire.ethernet import EthernetHeader, emit_ethernet, parse_ethernet, require_ipv4
from joyride.wire.ipv4 import Ipv4Header, emit_ipv4, parse_ipv4
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpFlags, TcpSegment, emit_tcp, parse_tcp, parse_tcp_ex
from joyride.wire.tcp_options import TcpOptions, emit_options, options_len, parse_options

SRC = bytes([10, 0, 0, 1])
DST = bytes([10, 0, 0, 2])


# ---- round trips -------------------------------------------------------------------


@given(ethernet_headers(ethertype=None), st.binary(max_size=64))
def test_ethernet_round_trip(hdr: EthernetHeader, payload: bytes) -> None:
    got, rest = parse_ethernet(emit_ethernet(hdr, payload))
    assert got == hdr
    assert bytes(rest) == payload


@given(ipv4_headers(proto=None), st.binary(max_size=64), st.binary(max_size=8))
def test_ipv4_round_trip(hdr: Ipv4Header, payload: bytes, padding: bytes) -> None:
    # Bytes past the total length (Ethernet padding) are not part of the payload.
    got, rest = parse_ipv4(emit_ipv4(hdr, payload) + padding)
    assert got == hdr
    assert bytes(rest) == payload


@given(tcp_options)
def test_tcp_options_round_trip(opts: TcpOptions) -> None:
    raw = emit_options(opts)
    assert len(raw) == options_len(opts)
    assert len(raw) % 4 == 0
    assert parse_options(raw)[0] == opts


@settings(max_examples=200, deadline=None)
@given(tcp_segments, unicast_ips, unicast_ips)
def test_tcp_round_trip(seg: TcpSegment, src: bytes, dst: bytes) -> None:
    raw = emit_tcp(seg, src, dst)
    assert parse_tcp(raw, src, dst) == seg
    # The checksum covers the pseudo-header: other addresses must fail it...
    other = bytes([src[0], src[1], src[2], src[3] ^ 1])
    with pytest.raises(IntegrityError) as e:
        parse_tcp(raw, other, dst)
    assert e.value.reason == "tcp_bad_checksum"
    # ...unless verification is off, which is then an explicit choice.
    assert parse_tcp(raw, other, dst, verify_checksum=False) == seg


def test_seg_len_counts_syn_and_fin() -> None:
    # RFC 9293 §3.4: SEG.LEN counts the data octets plus one each for SYN and FIN.
    base = TcpSegment(1, 2, Seq(0), Seq(0), TcpFlags.ACK, 0, b"abc")
    assert base.seg_len == 3
    syn = TcpSegment(1, 2, Seq(0), Seq(0), TcpFlags.SYN, 0)
    assert syn.seg_len == 1
    fin = TcpSegment(1, 2, Seq(0), Seq(0), TcpFlags.FIN | TcpFlags.ACK, 0, b"ab")
    assert fin.seg_len == 3


def test_linux_syn_option_layout() -> None:
    # Linux orders SYN options MSS, SACK_PERM, TS, NOP, WS (net/ipv4/tcp_output.c).
    opts = TcpOptions(mss=1460, wscale=10, sack_permitted=True, timestamps=(0x41CFD72D, 0))
    assert emit_options(opts).hex() == "020405b40402080a41cfd72d000000000103030a"


def test_options_too_long_is_a_caller_error() -> None:
    blocks = tuple((Seq(i), Seq(i + 1)) for i in range(4))
    with pytest.raises(ValueError):
        emit_options(TcpOptions(sack_blocks=blocks, timestamps=(1, 2)))


def test_unknown_options_are_skipped_and_not_plain() -> None:
    raw = bytes((1, 1, 8, 10)) + (7).to_bytes(4, "big") + (9).to_bytes(4, "big")
    assert parse_options(raw) == (TcpOptions(timestamps=(7, 9)), True)
    opts, plain = parse_options(bytes((30, 4, 0xAA, 0xBB)) + raw)
    assert opts == TcpOptions(timestamps=(7, 9))
    assert not plain
    # Everything after EOL is ignored, even what would be malformed.
    assert parse_options(bytes((0, 5, 99, 1))) == (TcpOptions(), True)


def test_duplicate_option_last_wins() -> None:
    raw = bytes((2, 4, 0x05, 0xB4, 2, 4, 0x02, 0x18))
    assert parse_options(raw)[0].mss == 0x0218


# ---- every reason, on purpose -------------------------------------------------------


def _tcp(flags: TcpFlags = TcpFlags.ACK, *, sport: int = 1000, dport: int = 80) -> bytearray:
    return bytearray(emit_tcp(TcpSegment(sport, dport, Seq(1), Seq(2), flags, 100), SRC, DST))


def _with_options(opts: bytes) -> bytearray:
    """A TCP header carrying raw option bytes (padded with EOL), checksum correct."""
    opts += b"\x00" * (-len(opts) % 4)
    raw = bytearray(emit_tcp(TcpSegment(1000, 80, Seq(1), Seq(2), TcpFlags.ACK, 100), SRC, DST))
    raw[12] = ((20 + len(opts)) // 4) << 4
    raw[16:18] = b"\x00\x00"
    raw[20:] = opts
    from joyride.wire.checksum import internet_checksum, pseudo_header_sum

    raw[16:18] = internet_checksum(raw, pseudo_header_sum(SRC, DST, 6, len(raw))).to_bytes(2, "big")
    return raw


def _expect(kind: type[ParseError], reason: Reason, fn: object, *args: object) -> None:
    assert callable(fn)
    with pytest.raises(kind) as e:
        fn(*args)
    assert e.value.reason == reason.key
    assert e.value.code is reason


def test_eth_reasons() -> None:
    _expect(IntegrityError, Reason.ETH_TRUNCATED, parse_ethernet, b"\x00" * 13)
    tagged = b"\x00" * 12 + b"\x81\x00" + b"\x00\x05"
    _expect(IntegrityError, Reason.ETH_TRUNCATED, parse_ethernet, tagged + b"\x08")
    arp, _ = parse_ethernet(b"\x00" * 12 + b"\x08\x06")
    _expect(SanityError, Reason.ETH_NOT_IPV4, require_ipv4, arp)


def _ip(**kw: object) -> bytearray:
    hdr = Ipv4Header(SRC, DST, **kw)  # type: ignore[arg-type]
    return bytearray(emit_ipv4(hdr, b"x" * 20))


def _refill_ip_checksum(raw: bytearray) -> bytearray:
    from joyride.wire.checksum import internet_checksum

    ihl = (raw[0] & 15) * 4
    raw[10:12] = b"\x00\x00"
    raw[10:12] = internet_checksum(raw[:ihl]).to_bytes(2, "big")
    return raw


def test_ip_integrity_reasons() -> None:
    good = _ip()
    _expect(IntegrityError, Reason.IP_TRUNCATED, parse_ipv4, good[:19])
    bad = bytearray(good)
    bad[0] = 0x65
    _expect(IntegrityError, Reason.IP_BAD_VERSION, parse_ipv4, bad)
    bad = bytearray(good)
    bad[0] = 0x44
    _expect(IntegrityError, Reason.IP_BAD_HEADER_LENGTH, parse_ipv4, bad)
    bad = bytearray(good[:24])
    bad[0] = 0x46  # claims 24 header bytes: fine; 0x47 claims 28 of 24
    bad[0] = 0x47
    _expect(IntegrityError, Reason.IP_BAD_HEADER_LENGTH, parse_ipv4, bad)
    bad = bytearray(good)
    bad[2:4] = (19).to_bytes(2, "big")
    _expect(IntegrityError, Reason.IP_BAD_TOTAL_LENGTH, parse_ipv4, bad)
    _expect(IntegrityError, Reason.IP_TRUNCATED, parse_ipv4, good[:-1])
    bad = bytearray(good)
    bad[8] ^= 1  # TTL changed, checksum not
    _expect(IntegrityError, Reason.IP_BAD_CHECKSUM, parse_ipv4, bad)
    assert parse_ipv4(bad, verify_checksum=False)[0].ttl == 65
    for opts in (b"\x07\x01\x00\x00", b"\x01\x01\x01\x07", b"\x07\x08\x00\x00"):
        raw = _ip(options=opts)
        _expect(IntegrityError, Reason.IP_BAD_OPTION_LENGTH, parse_ipv4, raw)


def test_ip_sanity_reasons() -> None:
    more_fragments = _refill_ip_checksum(_ip(dont_fragment=False))
    more_fragments[6] |= 0x20
    _expect(SanityError, Reason.IP_FRAGMENT, parse_ipv4, _refill_ip_checksum(more_fragments))
    offset = _ip(dont_fragment=False)
    offset[7] = 1
    _expect(SanityError, Reason.IP_FRAGMENT, parse_ipv4, _refill_ip_checksum(offset))
    for martian in ("0.1.2.3", "127.0.0.1", "224.0.0.1", "255.255.255.255", "240.0.0.1"):
        addr = bytes(int(x) for x in martian.split("."))
        raw = bytearray(emit_ipv4(Ipv4Header(addr, DST), b""))
        _expect(SanityError, Reason.IP_BAD_SRC_ADDR, parse_ipv4, raw)
        raw = bytearray(emit_ipv4(Ipv4Header(SRC, addr), b""))
        _expect(SanityError, Reason.IP_BAD_DST_ADDR, parse_ipv4, raw)


def test_tcp_integrity_reasons() -> None:
    good = _tcp()
    _expect(IntegrityError, Reason.TCP_TRUNCATED, parse_tcp, good[:19], SRC, DST)
    bad = bytearray(good)
    bad[12] = 4 << 4
    _expect(IntegrityError, Reason.TCP_BAD_HEADER_LENGTH, parse_tcp, bad, SRC, DST)
    bad[12] = 6 << 4  # 24 bytes of header in a 20-byte segment
    _expect(IntegrityError, Reason.TCP_BAD_HEADER_LENGTH, parse_tcp, bad, SRC, DST)
    bad = bytearray(good)
    bad[4] ^= 0x80
    _expect(IntegrityError, Reason.TCP_BAD_CHECKSUM, parse_tcp, bad, SRC, DST)
    malformed = [
        b"\x02",  # kind without a length byte at the end
        b"\x01\x01\x01\x08",  # length byte missing
        b"\x1e\x01",  # length < 2
        b"\x1e\x00",  # length 0 (RFC 9293 §3.2's example of an illegal length)
        b"\x1e\x09\x00\x00",  # runs past the header
        b"\x02\x03\x05",  # MSS must be 4
        b"\x03\x04\x05\x00",  # window scale must be 3
        b"\x04\x03\x00\x00",  # SACK-permitted must be 2
        b"\x05\x02",  # SACK with no block
        b"\x05\x0b" + bytes(9),  # SACK not 2 + 8n
        b"\x01\x01\x01\x01\x08\x0a" + bytes(6),  # timestamps running past the header
        b"\x08\x09" + bytes(7),  # timestamps must be 10
    ]
    for opts in malformed:
        raw = _with_options(opts)
        _expect(IntegrityError, Reason.TCP_BAD_OPTION_LENGTH, parse_tcp, raw, SRC, DST)


def test_tcp_sanity_reasons() -> None:
    _expect(SanityError, Reason.TCP_ZERO_PORT, parse_tcp, _tcp(sport=0), SRC, DST)
    _expect(SanityError, Reason.TCP_ZERO_PORT, parse_tcp, _tcp(dport=0), SRC, DST)
    syn_fin = _tcp(TcpFlags.SYN | TcpFlags.FIN)
    _expect(SanityError, Reason.TCP_SYN_FIN, parse_tcp, syn_fin, SRC, DST)


def test_plain_classification() -> None:
    ts = bytes((1, 1, 8, 10)) + bytes(8)
    assert parse_tcp_ex(_with_options(ts), SRC, DST)[1]
    assert parse_tcp_ex(_tcp(TcpFlags.ACK | TcpFlags.PSH), SRC, DST)[1]
    assert not parse_tcp_ex(_tcp(TcpFlags.ACK | TcpFlags.FIN), SRC, DST)[1]
    assert not parse_tcp_ex(_tcp(TcpFlags.PSH), SRC, DST)[1]
    assert not parse_tcp_ex(_tcp(TcpFlags.ACK | TcpFlags.ECE), SRC, DST)[1]
    sack = bytes((1, 1, 5, 10)) + bytes(8)
    assert not parse_tcp_ex(_with_options(sack), SRC, DST)[1]


def test_error_classes_and_keys() -> None:
    for r in Reason:
        if r is Reason.OK:
            with pytest.raises(ValueError):
                error_for(r)
            continue
        err = error_for(r, "detail")
        assert isinstance(err, IntegrityError if r.value < 32 else SanityError)
        assert err.reason == r.name.lower()
        assert "detail" in str(err)
    # Other layers may raise with a plain string key.
    assert ParseError("tcp_bad_checksum").code is Reason.TCP_BAD_CHECKSUM
    assert ParseError("something_else").code is None


@given(tcp_segments, st.integers(0, 32))
def test_emit_tcp_into_at_an_offset(seg: TcpSegment, offset: int) -> None:
    from joyride.wire.tcp import emit_tcp_into

    buf = bytearray(b"\xee" * (offset + seg.header_len + len(seg.payload) + 5))
    n = emit_tcp_into(buf, offset, seg, SRC, DST)
    assert bytes(buf[offset : offset + n]) == emit_tcp(seg, SRC, DST)
    assert buf[:offset] == b"\xee" * offset  # nothing written outside the segment
    assert buf[offset + n :] == b"\xee" * 5
    with pytest.raises(ValueError):
        emit_tcp_into(bytearray(n - 1), 0, seg, SRC, DST)


def test_emit_rejects_caller_errors() -> None:
    with pytest.raises(ValueError):
        emit_ipv4(Ipv4Header(SRC, DST, options=b"\x01\x01"), b"")  # not a multiple of 4
    with pytest.raises(ValueError):
        emit_ipv4(Ipv4Header(SRC, DST, options=b"\x01" * 44), b"")  # > 40 bytes
    with pytest.raises(ValueError):
        emit_ipv4(Ipv4Header(SRC, b"\x01\x02\x03"), b"")
    with pytest.raises(ValueError):
        emit_ipv4(Ipv4Header(SRC, DST), bytes(0xFFFF))
    with pytest.raises(ValueError):
        emit_ethernet(EthernetHeader(b"\x00" * 5, b"\x00" * 6))
    with pytest.raises(ValueError):
        emit_ethernet(EthernetHeader(b"\x00" * 6, b"\x00" * 6, 0x8100))
    with pytest.raises(ValueError):
        emit_tcp(TcpSegment(1, 2, Seq(0), Seq(0), TcpFlags.ACK, 0, bytes(0xFFFF)), SRC, DST)
