"""SACK scoreboard and loss recovery helpers for the sender (RFC 6675).

The scoreboard remembers which outstanding bytes the receiver has SACKed, as a short
sorted list of disjoint, non-adjacent ranges. It answers the three questions of
RFC 6675 §4: IsLost(), SetPipe() and NextSeg(). The connection keeps the recovery
state (RecoveryPoint, HighRxt, RescueRxt) and drives the algorithm of §5.

Sequence numbers wrap, so internally every position is "unwrapped" onto a 64-bit-ish
line anchored at SND.UNA: ranges then sort and compare as plain integers.

Conventions: ranges and returned blocks are half-open ``[left, right)``, as SACK
blocks are (RFC 2018 §3). ``high_rxt`` is *one past* the highest retransmitted
octet; at the start of recovery the connection sets it to SND.UNA, which reads as
"nothing retransmitted yet" (RFC 6675 §5 step 3 sets HighRxt = HighACK).

Bounds: at most ``max_ranges`` ranges (a new disjoint range beyond that is dropped,
which only costs a possibly unneeded retransmission), and at most
``MAX_BLOCKS_PER_UPDATE`` blocks are read from one ACK.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable
from typing import Any, Final

from joyride.wire.seq import MASK, Seq

# RFC 2018 §3: 40 bytes of option space hold at most 4 SACK blocks.
MAX_BLOCKS_PER_UPDATE: Final = 4


class SackScoreboard:
    """RFC 6675 scoreboard: SACKed ranges above SND.UNA plus IsLost/SetPipe/NextSeg."""

    __slots__ = (
        "_cum",
        "_his",
        "_los",
        "_una_pos",
        "_una_seq",
        "dupthresh",
        "last_rule",
        "max_ranges",
        "mss",
        "rack_lost_below",
        "rack_mode",
        "sacked_bytes",
    )

    def __init__(self, mss: int, dupthresh: int = 3, max_ranges: int = 256) -> None:
        if mss <= 0 or dupthresh < 1 or max_ranges < 1:
            raise ValueError("need mss > 0, dupthresh >= 1, max_ranges >= 1")
        self.mss = mss
        # RFC 6675 §2: DupThresh, 3 by default (RFC 5681 §3.2).
        self.dupthresh = dupthresh
        self.max_ranges = max_ranges
        self._los: list[int] = []  # unwrapped left edges, ascending
        self._his: list[int] = []  # unwrapped right edges (exclusive)
        self._cum: list[int] | None = None  # prefix sums of range lengths, lazily built
        self._una_seq = 0
        self._una_pos = 1 << 33  # unwrapped position of _una_seq (never negative)
        self.sacked_bytes = 0
        #: Which NextSeg() rule (1-4) produced the last non-None answer, 0 if none;
        #: the connection sets RescueRxt when it is 4.
        self.last_rule = 0
        #: RFC 8985 RACK in charge of IsLost() (``LossRecovery`` sets both): then an
        #: unSACKed octet is lost iff it lies below ``rack_lost_below`` (None: none).
        self.rack_mode = False
        self.rack_lost_below: Seq | None = None

    # -- positions ----------------------------------------------------------------------

    def _pos(self, seq: Seq) -> int:
        """Unwrapped position of ``seq`` (nearest to the last SND.UNA seen)."""
        return self._una_pos + ((int(seq) - self._una_seq + (1 << 31)) & MASK) - (1 << 31)

    def _seq(self, pos: int) -> Seq:
        return Seq(self._una_seq + (pos - self._una_pos))

    def _advance(self, snd_una: Seq) -> int:
        """Re-anchor at ``snd_una`` and drop everything below it (RFC 6675 §5: data
        at or below HighACK is no longer of interest)."""
        una = self._pos(snd_una)
        self._una_pos = una
        self._una_seq = int(snd_una)
        los, his = self._los, self._his
        self._cum = None
        k = bisect.bisect_right(his, una)
        if k:
            self.sacked_bytes -= sum(h - lo for lo, h in zip(los[:k], his[:k], strict=True))
            del los[:k], his[:k]
        if los and los[0] < una:
            self.sacked_bytes -= una - los[0]
            los[0] = una
        return una

    def _catch_up(self, snd_una: Seq) -> int:
        """Prune up to ``snd_una`` if it moved on since the last update (an ACK that
        carried no SACK option still advances SND.UNA); never move backwards."""
        una = self._pos(snd_una)
        return self._advance(snd_una) if una > self._una_pos else una

    # -- updates ------------------------------------------------------------------------

    def update(self, snd_una: Seq, blocks: Iterable[tuple[Seq, Seq]], snd_nxt: Seq) -> int:
        """Merge the SACK blocks of one ACK; return how many bytes became SACKed.

        Blocks not inside [SND.UNA, SND.NXT], inverted or empty ones, are ignored:
        they are D-SACKs of old data (RFC 2883 §4), stale, or forged (RFC 5961 §5
        spirit: nothing outside the window may change state).
        """
        una = self._advance(snd_una)
        nxt = self._pos(snd_nxt)
        if nxt <= una:
            return 0
        added = 0
        for left, right in itertools.islice(blocks, MAX_BLOCKS_PER_UPDATE):
            lo = self._pos(left)
            hi = self._pos(right)
            if not (una <= lo < hi <= nxt):
                continue
            added += self._add(lo, hi)
        return added

    def _add(self, lo: int, hi: int) -> int:
        los, his = self._los, self._his
        self._cum = None
        # Ranges overlapping or touching [lo, hi): from the first with hi' >= lo to
        # the last with lo' <= hi.
        i = bisect.bisect_left(his, lo)
        j = bisect.bisect_right(los, hi)
        if i == j:
            if len(los) >= self.max_ranges:
                return 0
            los.insert(i, lo)
            his.insert(i, hi)
            self.sacked_bytes += hi - lo
            return hi - lo
        new_lo = min(lo, los[i])
        new_hi = max(hi, his[j - 1])
        before = sum(h - x for x, h in zip(los[i:j], his[i:j], strict=True))
        los[i:j] = [new_lo]
        his[i:j] = [new_hi]
        added = (new_hi - new_lo) - before
        self.sacked_bytes += added
        return added

    def save_hot(self, tcb: Any) -> None:
        """The ranges, their byte count and the mode of IsLost() into ``tcb`` (a
        ``struct dp_tcb``: the C data plane keeps them while it runs the connection)."""
        blocks = self.blocks()
        for i, (left, right) in enumerate(blocks):
            tcb.sacked[i].start = int(left)
            tcb.sacked[i].end = int(right)
        tcb.sacked_count = len(blocks)
        tcb.sacked_bytes = self.sacked_bytes
        tcb.rack_mode = int(self.rack_mode)

    def load_hot(self, tcb: Any) -> None:
        """Take back what C kept (disjoint ranges, ascending, above SND.UNA) in place of
        these; the mode as the last ACK C took left it."""
        self.clear()
        una = self._advance(Seq(int(tcb.snd_una)))
        for r in tcb.sacked[0:int(tcb.sacked_count)]:
            lo, hi = self._pos(Seq(int(r.start))), self._pos(Seq(int(r.end)))
            if una <= lo < hi:
                self._add(lo, hi)
        self.rack_mode = bool(tcb.rack_mode)

    def clear(self) -> None:
        """RFC 6675 §5.1: on RTO the SACK information is discarded."""
        self._los.clear()
        self._his.clear()
        self._cum = None
        self.sacked_bytes = 0

    # -- queries ------------------------------------------------------------------------

    @property
    def range_count(self) -> int:
        return len(self._los)

    @property
    def high_sacked(self) -> Seq | None:
        """One past the highest SACKed octet, or None when nothing is SACKed."""
        return self._seq(self._his[-1]) if self._his else None

    def blocks(self) -> list[tuple[Seq, Seq]]:
        """All SACKed ranges, ascending."""
        return [(self._seq(lo), self._seq(hi)) for lo, hi in zip(self._los, self._his, strict=True)]

    def _is_sacked_pos(self, pos: int) -> bool:
        k = bisect.bisect_right(self._los, pos) - 1
        return k >= 0 and pos < self._his[k]

    def is_sacked(self, seq: Seq) -> bool:
        return self._is_sacked_pos(self._pos(seq))

    def _lost_below(self) -> int | None:
        """The position L such that an unSACKed octet is lost iff it lies below L.

        RFC 6675 §4 IsLost(SeqNum): true when DupThresh discontiguous SACKed ranges
        lie above SeqNum, or more than (DupThresh - 1) * SMSS bytes above it have been
        SACKed. Both counts only shrink as SeqNum grows, and are constant across an
        unSACKed gap, so the lost octets are exactly the unSACKed ones below the left
        edge of the range where either threshold is first met, counting from the top.
        """
        if self.rack_mode:
            rack = self.rack_lost_below
            return None if rack is None else self._pos(rack)
        limit = (self.dupthresh - 1) * self.mss
        total = 0
        for count, k in enumerate(range(len(self._los) - 1, -1, -1), start=1):
            total += self._his[k] - self._los[k]
            if total > limit or count >= self.dupthresh:
                return self._los[k]
        return None

    def is_lost(self, seq: Seq) -> bool:
        """RFC 6675 §4 IsLost() for the octet ``seq`` (SACKed octets are not lost)."""
        pos = self._pos(seq)
        lost_below = self._lost_below()
        return lost_below is not None and pos < lost_below and not self._is_sacked_pos(pos)

    def _sacked_below(self, x: int) -> int:
        """SACKed bytes at positions < x, in O(log n) from cached prefix sums (SetPipe
        runs once per segment sent during recovery; updates run once per ACK)."""
        cum = self._cum
        if cum is None:
            lengths = (h - lo for lo, h in zip(self._los, self._his, strict=True))
            cum = self._cum = list(itertools.accumulate(lengths, initial=0))
        k = bisect.bisect_left(self._los, x)  # ranges starting below x
        if k and self._his[k - 1] > x:
            return cum[k - 1] + (x - self._los[k - 1])
        return cum[k]

    def _sacked_between(self, a: int, b: int) -> int:
        return self._sacked_below(b) - self._sacked_below(a) if b > a else 0

    def _unsacked(self, a: int, b: int) -> int:
        return max(b - a, 0) - self._sacked_between(a, b)

    def unsacked(self, left: Seq, right: Seq) -> int:
        """How many octets of [left, right) are neither SACKed nor below SND.UNA."""
        una = self._una_pos
        return self._unsacked(max(self._pos(left), una), self._pos(right))

    def first_unsacked(self, seq: Seq) -> Seq:
        """The first octet at or after ``seq`` (and SND.UNA) that is not SACKed."""
        return self._seq(self._first_unsacked_from(max(self._pos(seq), self._una_pos)))

    def pipe(self, snd_una: Seq, snd_nxt: Seq, high_rxt: Seq) -> int:
        """RFC 6675 §4 SetPipe(): the sender's estimate of bytes still in the network.

        For each unSACKed octet in [HighACK, HighData]: +1 if not IsLost(), and +1 if
        it has been retransmitted (below ``high_rxt``).
        """
        una = self._catch_up(snd_una)
        nxt = self._pos(snd_nxt)
        if nxt <= una:
            return 0
        lost_below = self._lost_below()
        lost_end = una if lost_below is None else min(max(lost_below, una), nxt)
        rxt_end = min(max(self._pos(high_rxt), una), nxt)
        not_lost = self._unsacked(una, nxt) - self._unsacked(una, lost_end)
        return not_lost + self._unsacked(una, rxt_end)

    def _first_unsacked_from(self, pos: int) -> int:
        k = bisect.bisect_right(self._los, pos) - 1
        if k >= 0 and pos < self._his[k]:
            return self._his[k]  # ranges never touch, so this octet is unSACKed
        return pos

    def _segment_from(self, start: int, nxt: int) -> tuple[Seq, int]:
        """Up to one SMSS from ``start`` without running into SACKed data."""
        k = bisect.bisect_right(self._los, start)
        end = min(start + self.mss, nxt)
        if k < len(self._los):
            end = min(end, self._los[k])
        return self._seq(start), end - start

    def next_seg(
        self,
        snd_una: Seq,
        snd_nxt: Seq,
        high_rxt: Seq,
        rescue_ok: bool,
        *,
        new_data_ok: bool = True,
    ) -> tuple[Seq, int] | None:
        """RFC 6675 §4 NextSeg(): what to (re)transmit next, or None.

        Returns (start, length <= SMSS). Rule 2 ("send new data") is returned as
        ``(snd_nxt, mss)``; pass ``new_data_ok=False`` when there is no unsent data
        or the peer's window is closed, so that rules 3 and 4 are considered.
        ``rescue_ok`` says the connection allows a rule-4 rescue retransmission
        (HighACK > RescueRxt, or RescueRxt undefined), and the caller then sets
        RescueRxt = RecoveryPoint.
        """
        una = self._catch_up(snd_una)
        nxt = self._pos(snd_nxt)
        self.last_rule = 0
        if nxt <= una:
            if not new_data_ok:
                return None
            self.last_rule = 2
            return snd_nxt, self.mss
        hrx = max(self._pos(high_rxt), una)
        high_sacked = self._his[-1] if self._his else None
        candidate = self._first_unsacked_from(hrx)
        # (1.a) S2 > HighRxt, (1.b) S2 < highest SACKed octet, (1.c) IsLost(S2).
        lost_below = self._lost_below()
        if (
            high_sacked is not None
            and lost_below is not None
            and candidate < min(high_sacked, lost_below, nxt)
        ):
            self.last_rule = 1
            return self._segment_from(candidate, nxt)
        # (2) Previously unsent data, if any and if the receive window allows it.
        if new_data_ok:
            self.last_rule = 2
            return snd_nxt, self.mss
        # (3) Like (1) without IsLost: any unSACKed, not retransmitted octet below the
        # highest SACKed one.
        if high_sacked is not None and candidate < min(high_sacked, nxt):
            self.last_rule = 3
            return self._segment_from(candidate, nxt)
        # (4) Rescue retransmission: one segment that includes the highest
        # outstanding unSACKed octet.
        if rescue_ok:
            top = nxt - 1
            if self._his and self._his[-1] >= nxt:
                top = self._los[-1] - 1
            if top < una:
                return None
            k = bisect.bisect_right(self._his, top) - 1  # SACKed range just below top
            floor = self._his[k] if k >= 0 else una
            start = max(una, floor, top + 1 - self.mss)
            self.last_rule = 4
            return self._seq(start), top + 1 - start
        return None
