"""The receiver's D-SACK (RFC 2883 §4) and immediate ACKs (RFC 5681 §4.2), stepped at
explicit times. The connection under test receives; ``R`` is the first sequence
number of the peer's data (IRS + 1), and offsets are bytes from it.

RFC 2883 §4 rules: (1) a D-SACK block reports only the duplicate in the most recent
segment (so it goes in one ACK), (2) each duplicate contiguous sequence once, (3) its
edges are the duplicate's, (4) a duplicate of queued out-of-order data is followed by
the queued block it belongs to, (5) then the ordinary SACK blocks, most recently
changed first (RFC 2018 §4).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from tcp_helpers import ACK, IRS, ISS, established, none, one, out, plain_config, seg

from joyride.tcp.connection import HOT_OOO_RANGES, TcpConnection
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpOptions

R = IRS + 1


def _conn(sack: bool = True, timestamps: bool = False) -> TcpConnection:
    return established(
        plain_config(sack=sack, timestamps=timestamps),
        peer_options=TcpOptions(mss=1460, sack_permitted=sack),
    )


def _data(conn: TcpConnection, off: int, n: int, now: float) -> None:
    conn.receive(seg(R + off, ISS + 1, ACK, bytes([off % 251]) * n), now)


def _blocks(pairs: list[tuple[int, int]]) -> tuple[tuple[Seq, Seq], ...]:
    return tuple((R + a, R + b) for a, b in pairs)


def test_duplicate_below_cumulative_ack_rfc2883_4_1_1() -> None:
    """Example 1: the ACK of a segment was lost, the sender resends it: the answer
    acknowledges RCV.NXT and D-SACKs the duplicate, and only that ACK carries it."""
    conn = _conn()
    _data(conn, 0, 500, 1.0)
    _data(conn, 500, 500, 1.0)
    conn.on_timer(1.1)  # less than two full segments: the delayed ACK
    ack = one(conn, 1.1)
    assert ack.ack == R + 1000 and ack.options.sack_blocks == ()
    _data(conn, 0, 500, 1.2)  # the retransmission of the first segment
    dup = one(conn, 1.2)
    assert dup.ack == R + 1000
    assert dup.options.sack_blocks == _blocks([(0, 500)])
    assert conn.counters["dsack_sent"] == 1
    conn.receive(seg(R + 1000, ISS + 1, ACK, b"z" * 10), 1.3)
    conn.on_timer(1.5)
    later = one(conn, 1.5)
    assert later.ack == R + 1010 and later.options.sack_blocks == ()  # rule (1)


def test_replicated_segment_with_queued_data_rfc2883_4_1_3() -> None:
    """Example 3 (the network replicated a segment): D-SACK first, then the SACK
    block of the out-of-order data queued (rule 5)."""
    conn = _conn()
    _data(conn, 0, 500, 1.0)
    _data(conn, 1000, 500, 1.0)  # out of order: immediate dupack with its SACK
    assert one(conn, 1.0).options.sack_blocks == _blocks([(1000, 1500)])
    _data(conn, 0, 500, 1.1)
    ack = one(conn, 1.1)
    assert ack.ack == R + 500
    assert ack.options.sack_blocks == _blocks([(0, 500), (1000, 1500)])


def test_partial_duplicate_below_rcv_nxt_rfc2883_4_2_1() -> None:
    """Example 4: a retransmission that is partly new: the part below RCV.NXT is
    D-SACKed, the rest delivered, and the ACK goes at once."""
    conn = _conn()
    _data(conn, 0, 500, 1.0)
    conn.on_timer(1.1)
    one(conn, 1.1)  # the delayed ACK of the first segment
    _data(conn, 0, 1000, 1.2)
    ack = one(conn, 1.2)
    assert ack.ack == R + 1000
    assert ack.options.sack_blocks == _blocks([(0, 500)])
    assert conn.recv() == bytes([0]) * 500 + bytes([0]) * 500


def test_duplicate_reaching_queued_data_reports_lowest_rfc2883_4_2_2() -> None:
    """Example 5: one retransmission covers two duplicate pieces (queued data on
    both sides of a hole it fills): one D-SACK block, the lowest duplicate (rule 2-3;
    as FreeBSD); everything is then below RCV.NXT, so no block follows (rule 4)."""
    conn = _conn()
    _data(conn, 500, 500, 1.0)
    _data(conn, 1500, 500, 1.0)
    out = conn.segments_to_send(1.0)
    assert out[-1].options.sack_blocks == _blocks([(1500, 2000), (500, 1000)])
    conn.receive(seg(R, ISS + 1, ACK, bytes([5]) * 2000), 1.1)  # [0, 2000)
    ack = one(conn, 1.1)
    assert ack.ack == R + 2000
    assert ack.options.sack_blocks == _blocks([(500, 1000)])


def test_duplicate_of_out_of_order_segment_rfc2883_4_2_3() -> None:
    """Example 6: a duplicate of queued out-of-order data: the D-SACK block, then
    the (larger) queued block it belongs to (rule 4), then the other SACK blocks,
    most recent first (RFC 2018 §4), three beside... none here: no timestamps."""
    conn = _conn()
    _data(conn, 1000, 500, 1.0)
    _data(conn, 1500, 500, 1.0)
    _data(conn, 3000, 500, 1.0)
    _data(conn, 4000, 500, 1.0)
    conn.segments_to_send(1.0)
    _data(conn, 1500, 500, 1.1)  # again
    ack = one(conn, 1.1)
    assert ack.ack == R
    assert ack.options.sack_blocks == _blocks(
        [(1500, 2000), (1000, 2000), (4000, 4500), (3000, 3500)]
    )


def test_dsack_leaves_room_for_the_timestamp_option_rfc2018_3() -> None:
    conn = established(
        plain_config(sack=True, timestamps=True),
        peer_options=TcpOptions(mss=1460, sack_permitted=True, timestamps=(7, 0)),
    )
    ts = TcpOptions(timestamps=(8, 0))
    for off in (1000, 3000, 5000, 7000):
        conn.receive(seg(R + off, ISS + 1, ACK, b"q" * 500, options=ts), 1.0)
    conn.segments_to_send(1.0)
    conn.receive(seg(R + 7000, ISS + 1, ACK, b"q" * 500, options=ts), 1.1)
    ack = one(conn, 1.1)
    # D-SACK, its queued block, then one more: three blocks beside timestamps.
    assert ack.options.sack_blocks == _blocks([(7000, 7500), (7000, 7500), (5000, 5500)])


def test_no_dsack_without_sack_permitted() -> None:
    conn = _conn(sack=False)
    _data(conn, 0, 500, 1.0)
    conn.on_timer(1.1)
    one(conn, 1.1)
    _data(conn, 0, 500, 1.2)
    ack = one(conn, 1.2)  # still answered at once (RFC 9293 §3.10.7.4)
    assert ack.options.sack_blocks == () and conn.counters["dsack_sent"] == 0


def test_partial_hole_fill_is_acked_at_once_rfc5681_4_2() -> None:
    """A segment at RCV.NXT that fills only part of the hole before queued data is
    ACKed at once, not delayed."""
    conn = _conn()
    _data(conn, 2000, 500, 1.0)
    one(conn, 1.0)  # the dupack for the out-of-order segment
    _data(conn, 0, 500, 1.1)
    ack = one(conn, 1.1)
    assert ack.ack == R + 500 and ack.options.sack_blocks == _blocks([(2000, 2500)])
    _data(conn, 500, 1500, 1.2)  # fills the rest: everything delivered, ACK at once
    assert one(conn, 1.2).ack == R + 2500
    none(conn, 1.2)


def test_segments_of_one_batch_each_get_their_immediate_ack_rfc5681_4_2() -> None:
    """A receive batch hands several segments over before anything is sent. Each
    out-of-order, gap-filling or duplicate one still gets an ACK of its own, as it
    would arriving alone; in-order data after them is ACKed once, at the end.

    One ACK for a whole flight in recovery was what a Linux sender saw, and when the 1%
    loss link took it, the sender (no loss probe in recovery) waited out its RTO."""
    conn = _conn()
    _data(conn, 1000, 500, 1.0)  # out of order
    _data(conn, 1500, 500, 1.0)  # out of order
    _data(conn, 0, 1000, 1.0)  # fills the hole: everything up to 2000 delivered
    _data(conn, 2000, 1460, 1.0)  # in order
    _data(conn, 3460, 1460, 1.0)  # in order: the second full segment owes an ACK
    acks = out(conn, 1.0)
    assert [(a.ack - R, a.options.sack_blocks) for a in acks] == [
        (0, _blocks([(1000, 1500)])),
        (0, _blocks([(1000, 2000)])),
        (2000, ()),
        (4920, ()),
    ]
    assert all(not a.payload for a in acks)


def test_in_order_segments_of_one_batch_share_an_ack() -> None:
    """In-order data is coalesced per batch, as GRO would merge it before TCP."""
    conn = _conn()
    for off in range(0, 6 * 1460, 1460):
        _data(conn, off, 1460, 1.0)
    assert [a.ack - R for a in out(conn, 1.0)] == [6 * 1460]


def test_owed_dsack_keeps_the_connection_from_the_data_plane() -> None:
    conn = _conn()
    _data(conn, 0, 500, 1.0)
    conn.on_timer(1.1)
    one(conn, 1.1)
    assert conn.hot_ready()
    _data(conn, 0, 500, 1.2)
    assert not conn.hot_ready()  # C would send the ACK without the D-SACK
    one(conn, 1.2)
    assert conn.hot_ready()


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 4)), min_size=1, max_size=40))
def test_dsack_blocks_report_only_bytes_already_held(
    pieces: list[tuple[int, int]],
) -> None:
    """Any arrival order with duplicates: the stream is delivered intact; each
    D-SACK block (first block, below the ACK or inside the second block) covers only
    bytes that had arrived before, and every duplicate arrival is reported."""
    unit = 100
    stream = bytes(range(256)) * 20
    conn = _conn()
    held: set[int] = set()
    got = bytearray()
    t = 1.0
    for start, length in [*pieces, (0, 34)]:
        a, b = start * unit, min((start + length) * unit, 3400)
        dup = any(x in held for x in range(a, b))
        conn.receive(seg(R + a, ISS + 1, ACK, stream[a:b]), t)
        segs = conn.segments_to_send(t)
        acks = [s for s in segs if s.options.sack_blocks]
        if dup:
            assert acks, (a, b)
            left, right = acks[0].options.sack_blocks[0]
            lo, hi = left - R, right - R
            blocks = acks[0].options.sack_blocks
            assert right <= acks[0].ack or (
                len(blocks) > 1 and blocks[1][0] <= left and right <= blocks[1][1]
            )
            assert a <= lo < hi <= b and all(x in held for x in range(lo, hi))
        held.update(range(a, b))
        got += conn.recv()
        t += 0.01
    assert bytes(got) == stream[:3400]


def test_paws_rejected_replica_is_dsacked_rfc2883_4_1_3() -> None:
    """A replica that arrives after TS.Recent moved on fails PAWS (RFC 7323 §5.3)
    and is dropped; its data is below RCV.NXT, so the answer D-SACKs it (Linux)."""
    conn = established(
        plain_config(sack=True, timestamps=True),
        peer_options=TcpOptions(mss=1460, sack_permitted=True, timestamps=(100, 0)),
    )
    conn.receive(seg(R, ISS + 1, ACK, b"a" * 500, options=TcpOptions(timestamps=(200, 0))), 1.0)
    conn.on_timer(1.05)
    one(conn, 1.05)
    conn.receive(
        seg(R + 500, ISS + 1, ACK, b"b" * 500, options=TcpOptions(timestamps=(300, 0))), 1.1
    )  # TS.Recent = 300 (RFC 7323 §4.3)
    conn.on_timer(1.15)
    one(conn, 1.15)
    conn.receive(seg(R, ISS + 1, ACK, b"a" * 500, options=TcpOptions(timestamps=(200, 0))), 1.2)
    assert conn.counters["drop_paws"] == 1
    ack = one(conn, 1.2)
    assert ack.ack == R + 1000 and ack.options.sack_blocks == _blocks([(0, 500)])


def test_data_beside_sack_blocks_shrinks_to_fit_the_mtu_rfc9293_3_7_1() -> None:
    """While out-of-order data is held, every segment carries SACK blocks (RFC 2018
    §4): data segments leave room for them (RFC 9293 §3.7.1: the data shrinks by the
    options' length, as Linux's tcp_current_mss), so none outgrows the MTU. The room
    is reserved whole (4 + 8 per block: four without timestamps, three beside them),
    and SMSS comes back once the hole fills."""
    conn = _conn()
    smss = conn.mss
    _data(conn, 1000, 500, 1.0)  # a hole at [0, 1000)
    one(conn, 1.0)  # the duplicate ACK
    conn.send(b"r" * 3 * smss)
    held = out(conn, 1.1)
    assert [len(s.payload) for s in held[:2]] == [smss - 36, smss - 36]
    for s in held:
        assert s.options.sack_blocks == _blocks([(1000, 1500)])
        assert 4 + 8 * len(s.options.sack_blocks) + len(s.payload) <= smss
    _data(conn, 0, 1000, 1.2)  # the hole fills: everything is in order
    conn.receive(seg(R + 1500, ISS + 1 + 3 * smss, ACK), 1.3)  # all acknowledged
    conn.send(b"s" * 2 * smss)
    assert [len(s.payload) for s in out(conn, 1.4)] == [smss, smss]


def test_c_takes_a_connection_holding_up_to_its_number_of_ranges() -> None:
    """Held out-of-order data does not keep a connection from the C data plane, which
    holds up to HOT_OOO_RANGES ranges (dataplane.h's DP_OOO_RANGES); with more, or with
    a D-SACK owed, it stays here."""
    conn = _conn()
    for k in range(HOT_OOO_RANGES):
        _data(conn, 1000 + 200 * k, 100, 1.0)
    out(conn, 1.0)
    assert conn.hot_blocker() is None
    _data(conn, 1000 + 200 * HOT_OOO_RANGES, 100, 1.1)
    out(conn, 1.1)
    assert conn.hot_blocker() == "reassembling"
