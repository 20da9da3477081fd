"""Out-of-order segment store for the receive side (RFC 9293 §3.10.7.4, RFC 2018).

Segments that arrive beyond RCV.NXT are kept here until the hole before them is
filled. The store is a short list of disjoint, non-adjacent byte ranges sorted by
sequence number, each a ``bytearray``. Inserting trims the segment to the receive
window, fills only the gaps between stored ranges (stored bytes win; RFC 9293 leaves
the choice to the implementation and keeping the first copy is what Linux does), and
coalesces everything it touches into one range.

Bounds, whatever the peer sends: at most ``capacity`` payload bytes and at most
``max_ranges`` ranges. When either would be exceeded the new data (or the part of it
that does not fit) is refused rather than the store growing. The one exception is a
segment that starts at RCV.NXT: refusing it could stall the connection forever, so
the highest stored bytes are dropped to make room for it (Linux's
tcp_prune_ofo_queue does the same; RFC 2018 §8 allows this reneging because the
sender keeps SACKed data until it is cumulatively acknowledged).

Cost: O(log ranges) searches plus O(bytes copied) per call; appending to the end of
a range is amortised O(len(segment)).
"""

from __future__ import annotations

import bisect
from typing import Final

from joyride.wire.seq import HALF, MASK, Seq

# RFC 7323 §2.3: the largest window a peer can offer is 2**30 (65535 << 14); a
# window in sequence space must stay well below 2**31 for comparisons to hold.
MAX_WINDOW: Final = 1 << 30


def _dist(a: int, b: int) -> int:
    """Signed distance a - b in sequence space (RFC 9293 §3.4)."""
    return ((a - b + HALF) & MASK) - HALF


class _Range:
    __slots__ = ("buf", "stamp", "start")

    def __init__(self, start: int, buf: bytearray, stamp: int) -> None:
        self.start = start  # absolute sequence number of buf[0], modulo 2**32
        self.buf = buf
        self.stamp = stamp  # recency, for RFC 2018 §4 block ordering


class Reassembler:
    """Bounded store of out-of-order data keyed by sequence number."""

    __slots__ = ("_buffered", "_clock", "_ranges", "capacity", "max_ranges")

    def __init__(self, capacity: int, max_ranges: int = 64) -> None:
        if capacity < 0 or max_ranges < 1:
            raise ValueError("capacity must be >= 0 and max_ranges >= 1")
        self.capacity = capacity
        self.max_ranges = max_ranges
        self._ranges: list[_Range] = []
        self._buffered = 0
        self._clock = 0

    @property
    def buffered(self) -> int:
        return self._buffered

    @property
    def range_count(self) -> int:
        return len(self._ranges)

    def clear(self) -> None:
        self._ranges.clear()
        self._buffered = 0

    def _prune(self, rcv_nxt: int) -> None:
        """Drop bytes at or below RCV.NXT: they have been delivered (or skipped)."""
        ranges = self._ranges
        while ranges:
            head = ranges[0]
            behind = _dist(rcv_nxt, head.start)
            if behind <= 0:
                return
            if behind >= len(head.buf):
                self._buffered -= len(head.buf)
                ranges.pop(0)
            else:
                del head.buf[:behind]  # O(1) front delete on bytearray
                head.start = rcv_nxt
                self._buffered -= behind
                return

    def insert(
        self, seq: Seq, data: bytes | bytearray | memoryview, rcv_nxt: Seq, rcv_wnd: int
    ) -> int:
        """Store ``data`` (which starts at ``seq``); return how many bytes were new."""
        nxt = int(rcv_nxt)
        self._prune(nxt)
        if not data:
            return 0
        wnd = min(max(rcv_wnd, 0), MAX_WINDOW)
        off = _dist(int(seq), nxt)
        # RFC 9293 §3.10.7.4: keep only the part inside [RCV.NXT, RCV.NXT + RCV.WND).
        start = max(off, 0)
        end = min(off + len(data), wnd)
        if start >= end:
            return 0

        if start == 0:
            # Data at RCV.NXT: at most ``capacity`` bytes from here can be held.
            end = min(end, self.capacity)
            if end <= 0:
                return 0
        ranges = self._ranges
        rel, i, j, new = self._locate(nxt, start, end)
        if start == 0 and (
            new > self.capacity - self._buffered or (i == j and len(ranges) >= self.max_ranges)
        ):
            # The segment reaches RCV.NXT but the store is full of later data: without
            # room for it nothing could ever be delivered again. Make room by dropping
            # the highest stored bytes, as Linux's tcp_prune_ofo_queue does. This is
            # reneging on SACKed data, which RFC 2018 §8 permits (the sender keeps
            # SACKed data until it is cumulatively acknowledged).
            self._evict_above(nxt, end, new - (self.capacity - self._buffered), i == j)
            rel, i, j, new = self._locate(nxt, start, end)
        if new == 0:
            # Pure duplicate inside one range. RFC 2018 §4: the first SACK block must
            # still report the block containing the segment that triggered the ACK.
            self._clock += 1
            ranges[i].stamp = self._clock
            return 0
        free = self.capacity - self._buffered
        if free <= 0:
            return 0
        if new > free:
            end = self._cut(rel, i, j, start, end, free)
            while j > i and rel[j - 1][0] > end:
                j -= 1
            new = free
        if i == j and len(ranges) >= self.max_ranges:
            return 0  # a new disjoint range would exceed the range bound: refuse

        self._clock += 1
        view = memoryview(data)
        if i < j and rel[i][0] <= start:
            merged = ranges[i]
            out = merged.buf
            lo = rel[i][0]
            pos = rel[i][1]
            k = i + 1
        else:
            lo = start
            out = bytearray()
            pos = start
            k = i
        for idx in range(k, j):
            r_lo, r_hi = rel[idx]
            if r_lo > pos:
                out += view[pos - off : r_lo - off]
            out += ranges[idx].buf
            pos = r_hi
        if end > pos:
            out += view[pos - off : end - off]
        view.release()
        rng = _Range((nxt + lo) & MASK, out, self._clock)
        ranges[i:j] = [rng]
        self._buffered += new
        return new

    def _locate(
        self, nxt: int, start: int, end: int
    ) -> tuple[list[tuple[int, int]], int, int, int]:
        """The slice [i:j) of ranges that overlap or touch [start, end) (first with
        hi >= start, up to last with lo <= end), found by binary search since ranges
        are sorted; their offsets from RCV.NXT as ``rel[i:j]`` (other entries of
        ``rel`` are placeholders); and how many bytes of [start, end) are new."""
        ranges = self._ranges
        i = bisect.bisect_left(ranges, start, key=lambda r: _dist(r.start, nxt) + len(r.buf))
        j = bisect.bisect_right(ranges, end, lo=i, key=lambda r: _dist(r.start, nxt))
        touched = [(lo, lo + len(r.buf)) for r in ranges[i:j] for lo in (_dist(r.start, nxt),)]
        rel = [(0, 0)] * i + touched
        return rel, i, j, self._new_bytes(rel, i, j, start, end)

    def _evict_above(self, nxt: int, end: int, need: int, need_range: bool) -> None:
        """Drop up to ``need`` stored bytes at offsets >= ``end`` from RCV.NXT,
        highest first; if ``need_range``, drop a whole range lying above ``end``."""
        ranges = self._ranges
        while ranges and (need > 0 or need_range):
            top = ranges[-1]
            lo = _dist(top.start, nxt)
            hi = lo + len(top.buf)
            if hi <= end:
                return
            if lo >= end and (need_range or hi - lo <= need):
                ranges.pop()
                self._buffered -= hi - lo
                need -= hi - lo
                need_range = False
                continue
            if need_range:
                return  # the top range reaches below end: nothing whole to drop
            cut = max(end, hi - need)
            del top.buf[cut - lo :]
            self._buffered -= hi - cut
            need -= hi - cut

    @staticmethod
    def _new_bytes(rel: list[tuple[int, int]], i: int, j: int, start: int, end: int) -> int:
        covered = 0
        for lo, hi in rel[i:j]:
            covered += max(0, min(hi, end) - max(lo, start))
        return (end - start) - covered

    @staticmethod
    def _cut(
        rel: list[tuple[int, int]], i: int, j: int, start: int, end: int, budget: int
    ) -> int:
        """The end offset at which exactly ``budget`` new bytes have been taken."""
        pos = start
        for lo, hi in rel[i:j]:
            if lo > pos:
                gap = lo - pos
                if gap >= budget:
                    return pos + budget
                budget -= gap
            pos = max(pos, hi)
        return min(pos + budget, end)

    def duplicate(self, seq: Seq, length: int, rcv_nxt: Seq) -> tuple[Seq, Seq] | None:
        """The lowest contiguous part of [seq, seq+length) already stored, or None.

        RFC 2883 §4: the D-SACK block reports a duplicate contiguous sequence (one
        block per ACK: the lowest, as FreeBSD). Ask before ``insert``."""
        nxt = int(rcv_nxt)
        self._prune(nxt)
        if length <= 0 or not self._ranges:
            return None
        start = _dist(int(seq), nxt)
        end = start + length
        for r in self._ranges:
            lo = _dist(r.start, nxt)
            hi = lo + len(r.buf)
            if hi <= start:
                continue
            if lo >= end:
                return None
            return Seq(nxt + max(lo, start)), Seq(nxt + min(hi, end))
        return None

    def block_containing(self, seq: Seq) -> tuple[Seq, Seq] | None:
        """The queued block holding the octet ``seq``, as a SACK block, or None."""
        for r in self._ranges:
            off = _dist(int(seq), r.start)
            if 0 <= off < len(r.buf):
                return Seq(r.start), Seq(r.start + len(r.buf))
        return None

    def pop_ready(self, rcv_nxt: Seq) -> bytes:
        """Remove and return the stored bytes that start exactly at ``rcv_nxt``."""
        nxt = int(rcv_nxt)
        self._prune(nxt)
        ranges = self._ranges
        if not ranges or ranges[0].start != nxt:
            return b""
        head = ranges.pop(0)
        self._buffered -= len(head.buf)
        return bytes(head.buf)

    def save_hot(self, rcv_nxt: Seq) -> list[tuple[int, bytes, int]]:
        """Empty the store for the C data plane (``struct dp_tcb.ooo``): (start, bytes,
        recency stamp) of each range above ``rcv_nxt``, in sequence order, the stamps
        renumbered 1..n in the order of their recency (C keeps a 32-bit clock)."""
        self._prune(int(rcv_nxt))
        ranges = self._ranges
        order = sorted(range(len(ranges)), key=lambda i: ranges[i].stamp)
        stamps = [0] * len(ranges)
        for rank, i in enumerate(order, start=1):
            stamps[i] = rank
        out = [(r.start, bytes(r.buf), stamps[i]) for i, r in enumerate(ranges)]
        self.clear()
        return out

    def load_hot(self, ranges: list[tuple[int, bytes, int]]) -> None:
        """Take the ranges the C data plane held (``struct dp_tcb.ooo``): (start, bytes,
        recency stamp) each, disjoint, non-adjacent and in sequence order, into an
        empty store; the stamps keep their order for ``sack_blocks``."""
        if self._ranges:
            raise RuntimeError("load_hot into a store that holds data")
        for start, data, stamp in ranges:
            self._ranges.append(_Range(start & MASK, bytearray(data), stamp))
            self._buffered += len(data)
            self._clock = max(self._clock, stamp)

    def sack_blocks(self, max_blocks: int = 4) -> list[tuple[Seq, Seq]]:
        """Stored ranges as SACK blocks, most recently changed first (RFC 2018 §4).

        RFC 2018 §4: the first block reports the segment that triggered this ACK;
        the rest repeat the most recently reported blocks, which recency order gives.
        """
        if max_blocks <= 0:
            return []
        recent = sorted(self._ranges, key=lambda r: r.stamp, reverse=True)[:max_blocks]
        return [(Seq(r.start), Seq(r.start + len(r.buf))) for r in recent]
