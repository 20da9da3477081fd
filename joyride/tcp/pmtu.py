"""Packetization-layer path MTU search (RFC 4821 §7, as Linux's ``tcp_mtu_probe``).

Once a connection's MSS was cut below what the handshake allowed (a router's "packet
too big", or RFC 4821 §3 black-hole detection), the cut need not last: the path may
have widened, and a black-hole cut is a guess (1024 bytes, then halves). The search
finds the MSS again from below, with probes: one segment at a time of a size between
the largest known to work (``low``) and the largest worth trying (``high``), sent with
new data. An acknowledged probe raises ``low`` and the connection's MSS to its size; a
probe that had to be resent (lost, RFC 4821 §7.6.2) lowers ``high`` below it. The search
ends when the two are within ``SEARCH_DONE`` bytes, and starts again after
``REPROBE_INTERVAL`` from the MSS it found up to the handshake's (Linux re-probes every
``tcp_probe_interval``, 10 minutes), as a route's learned MTU expires
(``net.ipv6.route.mtu_expires``).

Sans-I/O like the rest of the TCP core: the connection calls in with the time and the
sequence numbers; sizes are data bytes per segment (the connection's SMSS, options not
counted). Known deviation: a lost probe is recovered as any loss, with its congestion
response, where RFC 4821 §7.6.2 would spare the window (one probe per search step; a
search takes about log2((high - low) / SEARCH_DONE) of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from joyride.wire.seq import Seq

REPROBE_INTERVAL: Final = 600.0  # seconds (Linux's net.ipv4.tcp_probe_interval)
SEARCH_DONE: Final = 8  # bytes (Linux's net.ipv4.tcp_probe_threshold)


@dataclass
class PmtuSearch:
    """One connection's search: the MSS bounds, the probe in flight, when to probe."""

    low: int  # largest SMSS known to pass
    high: int  # largest SMSS worth trying
    ceiling: int  # the handshake's SMSS: where a new search starts from
    due: float  # when the next probe may go
    probe_start: Seq | None = None  # the probe in flight: [start, end), its size
    probe_end: Seq | None = None
    probe_size: int = 0
    # The cut was a guess (black-hole detection): the guess, and once the search ends
    # what it found, are news for the destination's other connections (``found``:
    # the latest not yet told), so that they do not time out three times each.
    guessed: bool = False
    found: int | None = None

    @classmethod
    def after_cut(cls, mss: int, failed: int, ceiling: int, now: float, *,
                  at_once: bool) -> PmtuSearch:
        """A search from ``mss`` (just cut to, from ``failed``) up to ``ceiling``: at
        once below ``failed`` after a black-hole guess; after ``REPROBE_INTERVAL`` after
        a router's report, which named the path's MTU."""
        if at_once:
            return cls(mss, max(mss, failed - 1), ceiling, now, guessed=True, found=mss)
        return cls(mss, mss, ceiling, now + REPROBE_INTERVAL)

    @property
    def searching(self) -> bool:
        return self.high - self.low >= SEARCH_DONE

    @property
    def restored(self) -> bool:
        """The MSS is the handshake's again: nothing left to search."""
        return self.low >= self.ceiling

    def next_size(self) -> int:
        """The next probe's size (``size_due`` says whether it may go now)."""
        return (self.low + (self.high if self.searching else self.ceiling) + 1) // 2

    def size_due(self, now: float) -> int | None:
        """The size of the probe to send now, or None (one in flight, not yet due, or
        the search ended: then the next one starts at ``due``)."""
        if self.probe_start is not None or now < self.due:
            return None
        if not self.searching:
            # A finished search starts again: the path may have widened since.
            self.high = self.ceiling
            if not self.searching:
                self.due = now + REPROBE_INTERVAL
                return None
        return self.next_size()

    def sent(self, start: Seq, size: int) -> None:
        self.probe_start, self.probe_end, self.probe_size = start, start + size, size

    def acked(self, snd_una: Seq, now: float) -> int | None:
        """SND.UNA advanced: the new SMSS if the probe got through whole."""
        if self.probe_end is None or snd_una < self.probe_end:
            return None
        self.low = self.probe_size
        self._settle(now)
        return self.low

    def resent(self, start: Seq, end: Seq, now: float) -> bool:
        """Bytes [start, end) are being resent: True if that is (part of) the probe,
        which then failed (RFC 4821 §7.6.2: taken for the path's limit)."""
        if self.probe_start is None or self.probe_end is None or \
                not (start < self.probe_end and self.probe_start < end):
            return False
        self.high = self.probe_size - 1
        self._settle(now)
        return True

    def _settle(self, now: float) -> None:
        """The probe's outcome is known: the next one goes at once while the search
        goes on, after ``REPROBE_INTERVAL`` once it ended."""
        self.probe_start = self.probe_end = None
        self.probe_size = 0
        self.due = now if self.searching else now + REPROBE_INTERVAL
        if self.guessed and not self.searching:
            self.found, self.guessed = self.low, False  # told once
