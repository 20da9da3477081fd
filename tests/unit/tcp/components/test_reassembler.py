"""Reassembler: trimming to the window, coalescing, bounds, SACK block order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from joyride.tcp.reassembly import Reassembler
from joyride.wire.seq import Seq

BASE = Seq(1000)


def blocks(r: Reassembler, base: Seq = BASE) -> list[tuple[int, int]]:
    """SACK blocks as offsets from ``base``, for readable assertions."""
    return [(lo - base, hi - base) for lo, hi in r.sack_blocks(64)]


def test_in_order_pop() -> None:
    r = Reassembler(1000)
    assert r.insert(BASE, b"hello", BASE, 100) == 5
    assert r.pop_ready(BASE) == b"hello"
    assert r.buffered == 0 and r.pop_ready(BASE + 5) == b""


def test_accepts_memoryview_payloads() -> None:
    r = Reassembler(1000)
    frame = bytearray(b"HDRpayload")
    assert r.insert(BASE + 3, memoryview(frame)[3:], BASE, 100) == 7
    frame[:] = b"xxxxxxxxxx"  # the store must own a copy, not a view of the frame
    r.insert(BASE, b"abc", BASE, 100)
    assert r.pop_ready(BASE) == b"abcpayload"


def test_hole_then_fill() -> None:
    r = Reassembler(1000)
    assert r.insert(BASE + 5, b"world", BASE, 100) == 5
    assert r.pop_ready(BASE) == b""
    assert r.insert(BASE, b"hello", BASE, 100) == 5
    assert r.range_count == 1  # adjacent ranges coalesce
    assert r.pop_ready(BASE) == b"helloworld"


def test_trim_to_window() -> None:
    # RFC 9293 §3.10.7.4: only bytes inside [RCV.NXT, RCV.NXT+RCV.WND) are kept.
    r = Reassembler(1000)
    assert r.insert(BASE - 3, b"abcdefgh", BASE, 4) == 4
    assert r.pop_ready(BASE) == b"defg"
    assert r.insert(BASE + 10, b"xyz", BASE, 10) == 0  # entirely beyond the window
    assert r.insert(BASE - 10, b"old", BASE, 10) == 0  # entirely before RCV.NXT
    assert r.insert(BASE, b"", BASE, 10) == 0
    assert r.insert(BASE, b"zero window", BASE, 0) == 0


def test_overlap_keeps_first_copy_and_counts_new_bytes() -> None:
    r = Reassembler(1000)
    r.insert(BASE + 2, b"CDEF", BASE, 100)
    assert r.insert(BASE, b"abcdefgh", BASE, 100) == 4  # only a, b, g, h are new
    assert r.pop_ready(BASE) == b"abCDEFgh"


def test_segment_bridging_several_ranges() -> None:
    r = Reassembler(1000)
    r.insert(BASE + 2, b"22", BASE, 100)
    r.insert(BASE + 6, b"66", BASE, 100)
    r.insert(BASE + 10, b"AA", BASE, 100)
    assert r.range_count == 3
    assert r.insert(BASE + 1, b"xxxxxxxxxxxx", BASE, 100) == 6
    assert r.range_count == 1
    r.insert(BASE, b"0", BASE, 100)
    assert r.pop_ready(BASE) == b"0x22xx66xxAAx"


def test_capacity_refuses_rather_than_grows() -> None:
    r = Reassembler(capacity=10)
    assert r.insert(BASE + 20, b"a" * 8, BASE, 1000) == 8
    # Only 2 bytes of room: the new segment is cut after its first 2 new bytes.
    assert r.insert(BASE + 40, b"b" * 8, BASE, 1000) == 2
    assert r.buffered == 10
    assert r.insert(BASE + 60, b"c", BASE, 1000) == 0
    assert blocks(r) == [(40, 42), (20, 28)]
    # Duplicates are still recognised when full.
    assert r.insert(BASE + 20, b"a" * 8, BASE, 1000) == 0
    assert r.buffered == 10


def test_capacity_cut_fills_gaps_in_order() -> None:
    r = Reassembler(capacity=8)
    r.insert(BASE + 2, b"BB", BASE, 100)
    r.insert(BASE + 6, b"DD", BASE, 100)
    # 4 bytes of room: the gaps [0,2) and [4,6) fill, [8,..) is refused.
    assert r.insert(BASE, b"aabbccddeeff", BASE, 100) == 4
    assert r.buffered == 8 and r.range_count == 1
    assert r.pop_ready(BASE) == b"aaBBccDD"


def test_max_ranges_bound() -> None:
    r = Reassembler(capacity=10_000, max_ranges=3)
    for k in range(3):
        assert r.insert(BASE + 10 * (k + 1), b"x", BASE, 1000) == 1
    assert r.insert(BASE + 100, b"y", BASE, 1000) == 0  # would be a 4th range
    assert r.insert(BASE + 11, b"x", BASE, 1000) == 1  # extending one is fine
    assert r.range_count == 3


def test_data_at_rcv_nxt_evicts_highest_stored_data() -> None:
    # The store is full of later data; the segment that fills the hole must still be
    # taken (else nothing is ever delivered): the highest bytes go (RFC 2018 §8).
    r = Reassembler(capacity=10, max_ranges=2)
    r.insert(BASE + 4, b"EFGH", BASE, 1000)
    r.insert(BASE + 20, b"uvwxyz", BASE, 1000)
    assert r.buffered == 10
    assert r.insert(BASE, b"abcd", BASE, 1000) == 4
    assert r.buffered == 10 and blocks(r) == [(0, 8), (20, 22)]
    assert r.pop_ready(BASE) == b"abcdEFGH"
    # Range bound: a new range at RCV.NXT drops the highest whole range.
    r2 = Reassembler(capacity=100, max_ranges=2)
    r2.insert(BASE + 10, b"k", BASE, 1000)
    r2.insert(BASE + 20, b"u", BASE, 1000)
    assert r2.insert(BASE, b"a", BASE, 1000) == 1
    assert blocks(r2) == [(0, 1), (10, 11)]


def test_sack_blocks_most_recent_first() -> None:
    # RFC 2018 §4: first block = the one containing the most recent segment, then
    # the most recently reported ones.
    r = Reassembler(1000)
    r.insert(BASE + 10, b"a", BASE, 1000)
    r.insert(BASE + 20, b"b", BASE, 1000)
    r.insert(BASE + 30, b"c", BASE, 1000)
    assert blocks(r) == [(30, 31), (20, 21), (10, 11)]
    r.insert(BASE + 11, b"a", BASE, 1000)
    assert blocks(r) == [(10, 12), (30, 31), (20, 21)]
    r.insert(BASE + 20, b"b", BASE, 1000)  # duplicate still moves its block first
    assert blocks(r) == [(20, 21), (10, 12), (30, 31)]
    assert [(lo - BASE, hi - BASE) for lo, hi in r.sack_blocks(2)] == [(20, 21), (10, 12)]
    assert r.sack_blocks(0) == []


def test_rcv_nxt_advancing_past_stored_data_prunes_it() -> None:
    r = Reassembler(1000)
    r.insert(BASE + 5, b"0123456789", BASE, 1000)
    # The connection delivered bytes up to BASE+8 some other way.
    assert r.pop_ready(BASE + 8) == b"3456789"
    assert r.buffered == 0


def test_sequence_wrap() -> None:
    base = Seq(2**32 - 4)
    r = Reassembler(1000)
    r.insert(base + 6, b"ghij", base, 100)
    r.insert(base, b"abcdef", base, 100)
    assert r.pop_ready(base) == b"abcdefghij"


def test_hostile_offsets_ignored() -> None:
    r = Reassembler(1000)
    for seq in (BASE + 2**31, BASE - 2**31, BASE + 2**31 - 1, BASE + 2**30 + 5):
        assert r.insert(seq, b"evil", BASE, 2**31 + 100) == 0
    assert r.insert(BASE, b"ok", BASE, -5) == 0
    assert r.buffered == 0


def test_clear() -> None:
    r = Reassembler(1000)
    r.insert(BASE + 5, b"abc", BASE, 100)
    r.clear()
    assert r.buffered == 0 and r.sack_blocks() == []


STREAM = bytes((i * 7 + 3) & 0xFF for i in range(600))


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.lists(
        st.tuples(
            st.integers(min_value=-50, max_value=650), st.integers(min_value=0, max_value=80)
        ),
        max_size=60,
    ),
    st.integers(min_value=1, max_value=700),
    st.integers(min_value=1, max_value=12),
)
def test_random_segments_reassemble_to_the_stream(
    isn: int, segments: list[tuple[int, int]], capacity: int, max_ranges: int
) -> None:
    """Random permutations, duplicates and overlaps of a stream, then every byte in
    order, must read back as exactly the stream; bounds hold throughout."""
    base = Seq(isn)
    r = Reassembler(capacity, max_ranges)
    wnd = 700
    delivered = bytearray()

    def offer(off: int, length: int) -> None:
        # Bytes before the stream's first byte are junk (they must be trimmed away);
        # the rest is the real stream, as a retransmission would carry.
        hi = min(off + length, len(STREAM))
        if hi <= off:
            return
        data = b"\xee" * max(0, min(-off, hi - off)) + STREAM[max(off, 0) : max(hi, 0)]
        nxt = base + len(delivered)
        before = r.buffered
        added = r.insert(base + off, data, nxt, wnd - len(delivered))
        # Eviction (data at RCV.NXT displacing later data) may lower the total.
        assert added >= 0 and r.buffered <= before + added
        assert r.buffered <= capacity and r.range_count <= max_ranges
        delivered.extend(r.pop_ready(base + len(delivered)))
        for lo_s, hi_s in r.sack_blocks(64):
            assert 0 < lo_s - (base + len(delivered)) < hi_s - (base + len(delivered))

    for off, length in segments:
        offer(off, length)
    # The sender finally retransmits everything in order, in 100-byte segments.
    while len(delivered) < len(STREAM):
        pos = len(delivered)
        r.insert(base + pos, STREAM[pos : pos + 100], base + pos, wnd - pos)
        got = r.pop_ready(base + pos)
        assert got, "data at RCV.NXT must always be accepted, evicting later data"
        delivered.extend(got)
        assert r.buffered <= capacity
    assert bytes(delivered) == STREAM
    assert r.buffered == 0


def test_appending_out_of_order_segments_is_amortised() -> None:
    # 8000 segments appended behind a hole (the common loss case) into a 16 MiB store
    # must not copy the growing range each time.
    import time

    r = Reassembler(capacity=16 << 20)
    seg = bytes(1448)
    start = time.perf_counter()
    for k in range(1, 8001):
        r.insert(BASE + k * 1448, seg, BASE, 1 << 30)
    elapsed = time.perf_counter() - start
    assert r.range_count == 1 and r.buffered == 8000 * 1448
    assert elapsed < 2.0
    r.insert(BASE, seg, BASE, 1 << 30)
    assert len(r.pop_ready(BASE)) == 8001 * 1448


@settings(max_examples=200, deadline=None)
@given(st.data(), st.integers(min_value=0, max_value=2**32 - 1))
def test_permuted_overlapping_chunks_with_room_deliver_everything(
    data: st.DataObject, isn: int
) -> None:
    """With capacity for the whole stream, any order of overlapping chunks that
    covers the stream delivers it exactly, with nothing left behind."""
    cuts = sorted(data.draw(st.sets(st.integers(1, len(STREAM) - 1), max_size=30)))
    bounds = [0, *cuts, len(STREAM)]
    chunks = [(bounds[k], bounds[k + 1]) for k in range(len(bounds) - 1)]
    # Stretch some chunks so they overlap their neighbours, and duplicate a few.
    stretched = [
        (
            max(0, lo - data.draw(st.integers(0, 20))),
            min(len(STREAM), hi + data.draw(st.integers(0, 20))),
        )
        for lo, hi in chunks
    ]
    order = data.draw(
        st.permutations(stretched + data.draw(st.lists(st.sampled_from(stretched), max_size=5)))
    )
    base = Seq(isn)
    r = Reassembler(capacity=len(STREAM), max_ranges=64)
    out = bytearray()
    for lo, hi in order:
        r.insert(base + lo, STREAM[lo:hi], base + len(out), len(STREAM) - len(out))
        out += r.pop_ready(base + len(out))
        assert r.buffered + len(out) <= len(STREAM)
    assert bytes(out) == STREAM and r.buffered == 0 and r.range_count == 0


def test_load_hot_takes_the_c_data_planes_ranges_with_their_recency() -> None:
    """The ranges C held (struct dp_tcb.ooo) come back in sequence order with their
    stamps: their bytes, the SACK blocks' order (RFC 2018 §4) and later inserts' order
    all continue from them; only an empty store may take them."""
    r = Reassembler(capacity=100_000)
    base = 0xFFFF_FF00  # across the wrap
    r.load_hot([(base + 100, b"a" * 50, 7), ((base + 300) & 0xFFFFFFFF, b"b" * 20, 9)])
    assert r.buffered == 70 and r.range_count == 2
    assert r.sack_blocks() == [(Seq(base + 300), Seq(base + 320)),
                               (Seq(base + 100), Seq(base + 150))]
    r.insert(Seq(base + 150), b"c" * 10, Seq(base), 1 << 20)  # grows the older range
    assert r.sack_blocks()[0] == (Seq(base + 100), Seq(base + 160))
    assert r.pop_ready(Seq(base + 100)) == b"a" * 50 + b"c" * 10
    with pytest.raises(RuntimeError):
        r.load_hot([(base + 500, b"d", 1)])


def test_save_hot_empties_the_store_in_order_with_recency_ranked() -> None:
    """For the C data plane: ranges above RCV.NXT in sequence order, stamps renumbered
    1..n by recency (C's clock is 32 bits), bytes intact; the store is left empty."""
    r = Reassembler(capacity=100_000)
    r.insert(BASE + 300, b"c" * 10, BASE, 1 << 20)
    r.insert(BASE + 100, b"a" * 10, BASE, 1 << 20)
    r.insert(BASE + 200, b"b" * 10, BASE, 1 << 20)
    r.insert(BASE + 110, b"a" * 5, BASE, 1 << 20)  # grows the first range: most recent
    saved = r.save_hot(BASE)
    assert [(start - int(BASE), data, stamp) for start, data, stamp in saved] == [
        (100, b"a" * 15, 3), (200, b"b" * 10, 2), (300, b"c" * 10, 1)]
    assert r.buffered == 0 and r.range_count == 0
    r.load_hot(saved)
    assert blocks(r) == [(100, 115), (200, 210), (300, 310)]
