"""``wire_build_gso``: the headers of a GSO super-segment, checked against what a device
makes of it. The reference is ``joyride.wire.gso.segment`` (Linux's software GSO for
TCP and any TSO device: the payload cut into ``gso_size`` pieces, each with the
super-segment's headers, its sequence number advanced, the IPv4 ID counting on, FIN and
PSH only on the last, full checksums). Each piece must then be byte for byte the frame
the single-segment builder makes, and the unsegmented frame, its checksum completed, a
valid frame of the whole run (what a veth peer receives)."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_wire_batch import templates
from wire_strategies import seqs, u16, u32

from joyride.wire import gso
from joyride.wire._native import ffi, lib
from joyride.wire.batch import FrameTemplate, make_template
from joyride.wire.checksum import internet_checksum
from joyride.wire.frame import parse_frame
from joyride.wire.ipv4 import Ipv4Header
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpFlags, TcpSegment
from joyride.wire.tcp_options import TcpOptions

VNET_NEEDS_CSUM = 1
VNET_GSO_TCPV4 = 1


def build_gso(t: FrameTemplate, seg: TcpSegment, ident: int,
              gso_size: int) -> tuple[bytes, dict[str, int]]:
    """The C builder's headers for ``seg`` (its payload the whole run), the payload after
    them, and the virtio-net header as a dict."""
    s = ffi.new("struct wire_seg *")
    s.seq = int(seg.seq)
    s.ack = int(seg.ack)
    s.flags = int(seg.flags)
    s.window = seg.window
    s.ip_id = ident
    s.payload_len = len(seg.payload)
    ts = seg.options.timestamps
    if ts is not None:
        s.has_ts = 1
        s.tsval, s.tsecr = ts
    hdr = ffi.new("uint8_t[]", 128)
    vnet = ffi.new("struct wire_vnet_hdr *")
    hl = lib.wire_build_gso(make_template(t), s, gso_size, hdr, 128, vnet)
    assert hl > 0
    fields = {name: int(getattr(vnet, name)) for name in
              ("flags", "gso_type", "hdr_len", "gso_size", "csum_start", "csum_offset")}
    return bytes(ffi.buffer(hdr, hl)) + seg.payload, fields


def complete_checksum(frame: bytes, start: int, offset: int) -> bytes:
    """CHECKSUM_PARTIAL's completion (skb_checksum_help): the ones' complement of the
    sum from ``start``, the field holding the pseudo-header's sum, stored at start + offset."""
    field = start + offset
    total = internet_checksum(frame[start:])  # ~sum, the partial value included
    return frame[:field] + struct.pack("!H", total) + frame[field + 2:]


run_flags = st.sampled_from([TcpFlags.ACK, TcpFlags.ACK | TcpFlags.PSH,
                             TcpFlags.ACK | TcpFlags.PSH | TcpFlags.FIN])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_segments_of_a_super_segment_are_the_single_segment_frames(
        data: st.DataObject) -> None:
    t = data.draw(templates())
    gso_size = data.draw(st.integers(536, 1460))
    count = data.draw(st.integers(2, 8))
    size = data.draw(st.integers((count - 1) * gso_size + 1, count * gso_size))
    ts = data.draw(st.none() | st.tuples(u32, u32))
    seg = TcpSegment(t.src_port, t.dst_port, data.draw(seqs), data.draw(seqs),
                     data.draw(run_flags), data.draw(u16), data.draw(st.binary(
                         min_size=size, max_size=size)), TcpOptions(timestamps=ts))
    ident = data.draw(u16)
    frame, vnet = build_gso(t, seg, ident, gso_size)
    datagram = gso.VNET_HEADER.pack(*vnet.values()) + frame
    l2 = 18 if t.vlan_tci is not None else 14
    assert vnet == {"flags": VNET_NEEDS_CSUM, "gso_type": VNET_GSO_TCPV4,
                    "hdr_len": len(frame) - size, "gso_size": gso_size,
                    "csum_start": l2 + 20, "csum_offset": 16}
    whole = complete_checksum(frame, vnet["csum_start"], vnet["csum_offset"])
    # Unsegmented (a veth peer receives it so): a valid frame carrying the whole run.
    parsed = parse_frame(whole)
    assert parsed.tcp == seg
    assert isinstance(parsed.ip, Ipv4Header) and parsed.ip.ident == ident
    # Segmented: each piece as the single-segment path would have built it.
    pieces = gso.segment(datagram)
    assert len(pieces) == count
    tcps = [parse_frame(p).tcp for p in pieces]
    assert b"".join(x.payload for x in tcps) == seg.payload
    assert [int(x.seq) for x in tcps] == [(int(seg.seq) + i * gso_size) & 0xFFFFFFFF
                                          for i in range(count)]
    assert [x.flags for x in tcps] == [seg.flags & ~(TcpFlags.FIN | TcpFlags.PSH)] * (
        count - 1) + [seg.flags]
    assert all(len(x.payload) == gso_size for x in tcps[:-1])
    for i, expected in enumerate(pieces):
        one = ffi.new("struct wire_seg *")
        ref = parse_frame(expected)
        one.seq, one.ack, one.flags = int(ref.tcp.seq), int(seg.ack), int(ref.tcp.flags)
        one.window, one.ip_id = seg.window, (ident + i) & 0xFFFF
        one.payload_len = len(ref.tcp.payload)
        if ts is not None:
            one.has_ts = 1
            one.tsval, one.tsecr = ts
        out = ffi.new("uint8_t[]", 2048)
        offs = ffi.new("uint64_t[]", [0])
        caps = ffi.new("uint32_t[]", [2048])
        lens = ffi.new("uint32_t[]", 1)
        payload = ffi.from_buffer(ref.tcp.payload) if ref.tcp.payload else ffi.NULL
        assert lib.wire_build_batch(make_template(t), one, 1, payload, out, offs, caps,
                                    lens) == 1
        assert bytes(ffi.buffer(out, lens[0])) == expected


def test_a_run_that_fits_one_segment_is_not_marked_for_segmentation() -> None:
    t = FrameTemplate(b"\x02" * 6, b"\x04" * 6, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]),
                      80, 40000, None, 64, 0, True)
    seg = TcpSegment(80, 40000, Seq(7), Seq(9), TcpFlags.ACK | TcpFlags.PSH, 512, b"y" * 1000)
    frame, vnet = build_gso(t, seg, 1, 1448)
    assert vnet["gso_type"] == 0 and vnet["gso_size"] == 0
    assert vnet["flags"] == VNET_NEEDS_CSUM
    whole = complete_checksum(frame, vnet["csum_start"], vnet["csum_offset"])
    assert parse_frame(whole).tcp == seg


def test_control_segments_and_oversized_runs_are_refused() -> None:
    t = make_template(FrameTemplate(b"\x02" * 6, b"\x04" * 6, bytes([10, 0, 0, 1]),
                                    bytes([10, 0, 0, 2]), 80, 40000, None, 64, 0, True))
    hdr = ffi.new("uint8_t[]", 128)
    vnet = ffi.new("struct wire_vnet_hdr *")
    s = ffi.new("struct wire_seg *")
    s.payload_len = 4000
    for flags in (0x02, 0x12, 0x04, 0x14):  # SYN, SYN-ACK, RST, RST-ACK
        s.flags = flags
        assert lib.wire_build_gso(t, s, 1448, hdr, 128, vnet) == 0
    s.flags = 0x10
    assert lib.wire_build_gso(t, s, 0, hdr, 128, vnet) == 0  # no segment size
    s.payload_len = 65536 - 40  # the IPv4 total length would overflow 16 bits
    assert lib.wire_build_gso(t, s, 1448, hdr, 128, vnet) == 0
    s.payload_len = 4000
    assert lib.wire_build_gso(t, s, 1448, hdr, 20, vnet) == 0  # headers do not fit
    assert lib.wire_build_gso(t, s, 1448, hdr, 128, vnet) == 14 + 20 + 20
