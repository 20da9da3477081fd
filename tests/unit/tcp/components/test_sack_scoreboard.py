"""SackScoreboard against RFC 6675 worked examples, plus hostile and random input."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from joyride.tcp.scoreboard import SackScoreboard
from joyride.wire.seq import Seq

MSS = 1000
UNA = Seq(4_000_000_000)  # close to the wrap, so every test crosses 2**32
NXT = UNA + 10 * MSS  # ten segments outstanding: 0..9


def blk(a: int, b: int) -> tuple[Seq, Seq]:
    return UNA + a, UNA + b


def board_with(*blocks: tuple[int, int], una: Seq = UNA) -> SackScoreboard:
    sb = SackScoreboard(MSS)
    sb.update(una, [blk(a, b) for a, b in blocks], NXT)
    return sb


def test_update_counts_new_bytes_and_merges() -> None:
    sb = SackScoreboard(MSS)
    assert sb.update(UNA, [blk(1000, 2000)], NXT) == 1000
    assert sb.update(UNA, [blk(1000, 3000)], NXT) == 1000
    assert sb.update(UNA, [blk(3000, 4000), blk(1500, 2500)], NXT) == 1000
    assert sb.sacked_bytes == 3000 and sb.range_count == 1
    assert sb.high_sacked == UNA + 4000
    assert sb.is_sacked(UNA + 1000) and sb.is_sacked(UNA + 3999)
    assert not sb.is_sacked(UNA + 999) and not sb.is_sacked(UNA + 4000)


def test_invalid_blocks_ignored() -> None:
    # RFC 2883 D-SACK below SND.UNA, blocks beyond SND.NXT, inverted, empty, or
    # 2**31 away: none may change the scoreboard.
    sb = SackScoreboard(MSS)
    hostile = [
        blk(-1000, 0),  # D-SACK of already acknowledged data
        blk(-500, 500),  # straddles SND.UNA
        blk(9000, 11000),  # beyond SND.NXT
        blk(3000, 2000),  # inverted
    ]
    assert sb.update(UNA, hostile, NXT) == 0
    assert sb.update(UNA, [blk(5, 5), blk(2**31, 2**31 + 10)], NXT) == 0
    assert sb.update(UNA, [(UNA - 2**31, UNA + 100)], NXT) == 0
    assert sb.update(UNA, [blk(1000, 2000)], UNA - 5) == 0  # nothing outstanding
    assert sb.sacked_bytes == 0 and sb.high_sacked is None


def test_at_most_four_blocks_read_per_ack() -> None:
    # RFC 2018 §3: an ACK carries at most 4 blocks; more is not a real ACK.
    sb = SackScoreboard(MSS)
    many = [blk(k * 1000 + 100, k * 1000 + 200) for k in range(9)]
    sb.update(UNA, many, NXT)
    assert sb.range_count == 4


def test_range_bound() -> None:
    sb = SackScoreboard(MSS, max_ranges=2)
    sb.update(UNA, [blk(1000, 1100), blk(3000, 3100), blk(5000, 5100)], NXT)
    assert sb.range_count == 2 and sb.sacked_bytes == 200
    sb.update(UNA, [blk(1100, 1200)], NXT)  # extending is still possible
    assert sb.sacked_bytes == 300


def test_cumulative_ack_discards_state_below_una() -> None:
    sb = board_with((1000, 2000), (3000, 5000))
    sb.update(UNA + 2000, [], NXT)
    assert sb.sacked_bytes == 2000 and sb.blocks() == [blk(3000, 5000)]
    sb.update(UNA + 4000, [], NXT)
    assert sb.sacked_bytes == 1000 and sb.blocks() == [blk(4000, 5000)]
    sb.update(NXT, [], NXT)
    assert sb.sacked_bytes == 0 and sb.high_sacked is None


def test_queries_prune_when_una_advanced_without_update() -> None:
    # An ACK without SACK blocks may advance SND.UNA without calling update().
    sb = board_with((1000, 2000), (3000, 5000))
    assert sb.pipe(UNA + 2500, NXT, UNA + 2500) == 7500 - 2000
    assert sb.sacked_bytes == 2000 and sb.blocks() == [blk(3000, 5000)]
    assert sb.next_seg(UNA + 5000, NXT, UNA + 5000, False, new_data_ok=False) is None
    assert sb.sacked_bytes == 0


def test_is_lost_by_bytes() -> None:
    # RFC 6675 §4 IsLost: more than (DupThresh - 1) * SMSS bytes SACKed above.
    assert not board_with((1000, 3000)).is_lost(UNA)  # exactly 2 SMSS: not yet
    sb = board_with((1000, 4000))
    assert sb.is_lost(UNA) and sb.is_lost(UNA + 999)
    assert not sb.is_lost(UNA + 1000)  # SACKed octets are not lost
    assert not sb.is_lost(UNA + 4000)  # nothing SACKed above


def test_is_lost_by_discontiguous_ranges() -> None:
    # RFC 6675 §4 IsLost: DupThresh discontiguous SACKed sequences above.
    sb = board_with((2000, 2500), (4000, 4500), (6000, 6500))
    assert sb.is_lost(UNA) and sb.is_lost(UNA + 1999)
    assert not sb.is_lost(UNA + 2500)  # only 2 ranges and 1000 bytes above
    assert not board_with((2000, 2500), (4000, 4500)).is_lost(UNA)


def test_setpipe_worked_example() -> None:
    # RFC 6675 §4 SetPipe: ten segments out, segments 1-3 SACKed, segment 0 lost.
    sb = board_with((1000, 4000))
    # unSACKed: 0 and 4..9 (7000 bytes); segment 0 is lost -> 6000 in the network.
    assert sb.pipe(UNA, NXT, UNA) == 6000
    # After retransmitting segment 0 (HighRxt past it) it counts once more.
    assert sb.pipe(UNA, NXT, UNA + 1000) == 7000
    # Without SACKs every outstanding byte is in the pipe (nothing is lost).
    assert SackScoreboard(MSS).pipe(UNA, NXT, UNA) == 10_000
    assert sb.pipe(UNA, UNA, UNA) == 0


def test_setpipe_retransmitted_and_not_lost_counts_twice() -> None:
    # RFC 6675 §4 SetPipe (a) and (b) are independent: a retransmitted octet that is
    # not deemed lost counts twice (original and retransmission both in flight).
    sb = board_with((5000, 6000))
    assert sb.pipe(UNA, NXT, UNA + 1000) == 9000 + 1000


def test_nextseg_rule1_then_2_then_3_then_4() -> None:
    sb = board_with((1000, 4000))
    # Rule 1: smallest lost, unSACKed, not yet retransmitted octet.
    assert sb.next_seg(UNA, NXT, UNA, rescue_ok=False) == (UNA, 1000)
    assert sb.last_rule == 1
    # After retransmitting it: rule 2, new data at SND.NXT.
    assert sb.next_seg(UNA, NXT, UNA + 1000, rescue_ok=False) == (NXT, MSS)
    assert sb.last_rule == 2
    # No new data: rule 3 needs an unSACKed octet below the highest SACK; none left.
    assert sb.next_seg(UNA, NXT, UNA + 1000, False, new_data_ok=False) is None
    assert sb.last_rule == 0
    # Rule 4: rescue retransmission of the highest outstanding unSACKed segment.
    assert sb.next_seg(UNA, NXT, UNA + 1000, True, new_data_ok=False) == (UNA + 9000, 1000)
    assert sb.last_rule == 4


def test_nextseg_rule3_not_lost_hole() -> None:
    # Hole at segment 2 with only 1 SMSS SACKed above: not lost, but rule 3 may
    # retransmit it when no new data can be sent.
    sb = board_with((0, 2000), (3000, 4000))
    assert not sb.is_lost(UNA + 2000)
    assert sb.next_seg(UNA, NXT, UNA, False) == (NXT, MSS)
    assert sb.next_seg(UNA, NXT, UNA, False, new_data_ok=False) == (UNA + 2000, 1000)
    assert sb.last_rule == 3


def test_nextseg_segment_stops_at_sacked_data() -> None:
    sb = board_with((500, 600), (1000, 1500), (2000, 4000))
    assert sb.next_seg(UNA, NXT, UNA, False) == (UNA, 500)
    assert sb.next_seg(UNA, NXT, UNA + 500, False) == (UNA + 600, 400)


def test_nextseg_rescue_when_top_is_sacked() -> None:
    # RFC 6675 §4 NextSeg (4): the segment must include the highest outstanding
    # unSACKed octet; here that is just below the top SACKed range.
    sb = board_with((8500, 10_000))
    # Not lost (1500 bytes, one range above): rule 3 takes the first hole...
    assert sb.next_seg(UNA, NXT, UNA, True, new_data_ok=False) == (UNA, 1000)
    # ...and once everything below the SACK was retransmitted, rule 4 applies.
    seg = sb.next_seg(UNA, NXT, UNA + 8500, True, new_data_ok=False)
    assert seg == (UNA + 7500, 1000)
    assert sb.last_rule == 4  # below high_sacked, yet a rescue
    everything = board_with((0, 10_000))
    assert everything.next_seg(UNA, NXT, UNA, True, new_data_ok=False) is None


def test_clear_on_rto() -> None:
    # RFC 6675 §5.1: discard SACK information on RTO.
    sb = board_with((1000, 4000))
    sb.clear()
    assert sb.sacked_bytes == 0 and not sb.is_lost(UNA) and sb.high_sacked is None


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=60),  # cumulative ACK advance
            st.lists(
                st.tuples(st.integers(-300, 1300), st.integers(-300, 1300)),
                max_size=5,
            ),
        ),
        max_size=25,
    ),
)
def test_scoreboard_matches_set_model(
    isn: int, acks: list[tuple[int, list[tuple[int, int]]]]
) -> None:
    """sacked_bytes is the size of the union of valid blocks above SND.UNA; nothing
    below SND.UNA is kept; IsLost/SetPipe agree with their per-octet definitions."""
    base = Seq(isn)
    total, mss = 1000, 20
    sb = SackScoreboard(mss)
    model: set[int] = set()
    una = 0
    for advance, raw in acks:
        una = min(una + advance, total)
        valid = [(a, b) for a, b in raw[:4] if una <= a < b <= total]
        added = sb.update(base + una, [(base + a, base + b) for a, b in raw], base + total)
        model = {x for x in model if x >= una}
        before = len(model)
        for a, b in valid:
            model.update(range(a, b))
        assert added == len(model) - before
        assert sb.sacked_bytes == len(model)
        for lo, hi in sb.blocks():
            assert lo - base >= una and hi - lo > 0
        # IsLost against its definition (RFC 6675 §4) at every 10th octet.
        ordered = sorted(model)
        run_starts = [y for k, y in enumerate(ordered) if k == 0 or ordered[k - 1] != y - 1]
        for x in range(una, total, 10):
            bytes_above = sum(1 for y in ordered if y > x)
            runs_above = sum(1 for y in run_starts if y > x)
            expected = x not in model and (bytes_above > 2 * mss or runs_above >= 3)
            assert sb.is_lost(base + x) == expected
    lost = [x for x in range(una, total) if x not in model and sb.is_lost(base + x)]
    unsacked = total - una - len(model)
    assert sb.pipe(base + una, base + total, base + una) == unsacked - len(lost)
    rxt = min(una + 100, total)
    retransmitted = sum(1 for x in range(una, rxt) if x not in model)
    assert sb.pipe(base + una, base + total, base + rxt) == unsacked - len(lost) + retransmitted


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1000), st.integers(1, 200)), max_size=8),
    st.integers(0, 1000),
    st.booleans(),
    st.booleans(),
)
def test_nextseg_never_resends_sacked_or_out_of_window(
    raw: list[tuple[int, int]], rxt: int, new_ok: bool, rescue: bool
) -> None:
    mss, total = 100, 1000
    sb = SackScoreboard(mss)
    for a, n in raw:
        sb.update(UNA, [blk(a, min(a + n, total))], UNA + total)
    seg = sb.next_seg(UNA, UNA + total, UNA + rxt, rescue, new_data_ok=new_ok)
    if seg is None:
        return
    start, length = seg
    if start == UNA + total:  # rule 2: new data
        assert new_ok and length == mss
        return
    off = start - UNA
    assert off >= 0 and 0 < length <= mss and off + length <= total
    assert not any(sb.is_sacked(start + k) for k in range(length))
    if off < rxt:  # only a rescue may go below HighRxt
        assert rescue and not new_ok
