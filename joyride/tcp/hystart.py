"""HyStart++ (RFC 9406): leaving slow start on rising delay, before a queue overflows.

Standard slow start doubles cwnd each round trip until something is lost. A deep queue
on the path (a bottleneck's buffer; on the test bed, the relay's socket buffer) absorbs
the growth as delay first; by the time it drops, the window is up to twice what the
path holds, and a whole round of losses must be recovered. HyStart++ watches each
round's minimum RTT. When it rises by RttThresh over the last round's, slow start gives
way to Conservative Slow Start (CSS: a quarter of the growth) for ``CSS_ROUNDS``
rounds, then to congestion avoidance (ssthresh = cwnd). If the minimum falls back
below the one CSS began with, the rise was jitter and slow start resumes (§4.2).

- Only the initial slow start (§4.3: while ssthresh keeps its initial value); after a
  loss or a timeout, ssthresh says where to stop, and the state starts over should an
  undo bring the initial ssthresh back.
- L, the limit of growth per ACK (§4.2), stays ``congestion.ABC_LIMIT``, as in standard
  slow start here. The RFC's L = 8 for unpaced senders would undo why that limit is
  unbounded (GRO turns bursts into stretch ACKs); Linux's slow start, with or without
  HyStart, has no such limit either.
- A round (§4.2) ends when SND.UNA reaches ``window_end``, SND.NXT when it began.

The controller owns one (``congestion._Base.hystart``); the connection gives it every
acceptable ACK of new data with that ACK's RTT sample (``on_ack``), and the C data plane
runs the same rules on the same fields (``struct dp_tcb``'s ``hs_*``; dataplane.c's
``hystart_ack``), which ``save_hot`` and ``load_hot`` carry.

Memory: a fixed set of numbers per connection.
"""

from __future__ import annotations

import math
from typing import Any, Final

from joyride.wire.seq import Seq

# RFC 9406 §4.3, the constants' recommended values.
MIN_RTT_THRESH: Final = 0.004  # s
MAX_RTT_THRESH: Final = 0.016  # s
MIN_RTT_DIVISOR: Final = 8
N_RTT_SAMPLE: Final = 8
CSS_GROWTH_DIVISOR: Final = 4
CSS_ROUNDS: Final = 5

# ``struct dp_tcb.hs_phase``.
PHASE_SLOW_START: Final = 0
PHASE_CSS: Final = 1
PHASE_OFF: Final = 2  # HyStart++ is off for this connection (TcpConfig.hystart)

# What an ACK did, as the counter that counts it (``counters.CONGESTION_COUNTERS``).
CSS_ENTERED: Final = "hystart_css_entered"
CSS_ABANDONED: Final = "hystart_css_abandoned"
SLOW_START_EXITED: Final = "hystart_slow_start_exits"

INF: Final = math.inf


class HyStart:
    """The state of RFC 9406 §4.2's algorithm, and its rules for one ACK."""

    phase: int
    window_end: Seq | None  # None: no round has begun
    last_round_min: float  # s; lastRoundMinRTT
    current_round_min: float  # s; currentRoundMinRTT
    samples: int  # rttSampleCount
    css_baseline: float  # s; cssBaselineMinRtt
    css_rounds: int  # rounds completed in CSS

    def __init__(self, enabled: bool = True) -> None:
        self.phase = PHASE_SLOW_START if enabled else PHASE_OFF
        self.reset()

    def reset(self) -> None:
        """Start over (a loss, a timeout or an idle restart ended this slow start)."""
        if self.phase != PHASE_OFF:
            self.phase = PHASE_SLOW_START
        self.window_end = None
        self.last_round_min = INF
        self.current_round_min = INF
        self.samples = 0
        self.css_baseline = INF
        self.css_rounds = 0

    @property
    def growth_divisor(self) -> int:
        """What slow start's growth is divided by: CSS_GROWTH_DIVISOR in CSS (§4.2)."""
        return CSS_GROWTH_DIVISOR if self.phase == PHASE_CSS else 1

    def on_ack(self, snd_una: Seq, snd_nxt: Seq, rtt: float | None) -> str | None:
        """One acceptable ACK of new data in the initial slow start, SND.UNA now
        ``snd_una``, with its RTT sample (None: none). Returns what it did
        (``CSS_ENTERED``, ``CSS_ABANDONED``, ``SLOW_START_EXITED``: then the caller
        sets ssthresh to cwnd) or None."""
        if self.phase == PHASE_OFF:
            return None
        end = self.window_end
        if end is None or snd_una >= end:
            # §4.2: a round ends with the ACK of windowEnd; the next one begins.
            if end is not None and self.phase == PHASE_CSS:
                self.css_rounds += 1
                if self.css_rounds >= CSS_ROUNDS:
                    self.reset()
                    return SLOW_START_EXITED  # §4.2: CSS_ROUNDS rounds: avoidance
            self.window_end = snd_nxt
            self.last_round_min = self.current_round_min
            self.current_round_min = INF
            self.samples = 0
        if rtt is None:
            return None
        if rtt < self.current_round_min:
            self.current_round_min = rtt
        self.samples += 1
        if self.samples < N_RTT_SAMPLE:
            return None
        if self.phase == PHASE_SLOW_START:
            last = self.last_round_min
            if last == INF:
                return None
            # §4.2: RttThresh = max(MIN_RTT_THRESH, min(lastRoundMinRTT /
            # MIN_RTT_DIVISOR, MAX_RTT_THRESH)).
            thresh = max(MIN_RTT_THRESH, min(last / MIN_RTT_DIVISOR, MAX_RTT_THRESH))
            if self.current_round_min >= last + thresh:
                self.css_baseline = self.current_round_min
                self.phase = PHASE_CSS
                self.css_rounds = 0
                return CSS_ENTERED
        elif self.current_round_min < self.css_baseline:
            # §4.2: the delay fell back: the increase was jitter; slow start resumes.
            self.css_baseline = INF
            self.phase = PHASE_SLOW_START
            return CSS_ABANDONED
        return None

    # -- hand-off to the C data plane, which runs ``on_ack`` meanwhile ----------------

    def save_hot(self, tcb: Any) -> None:
        tcb.hs_phase = self.phase
        tcb.hs_round_open = int(self.window_end is not None)
        tcb.hs_window_end = 0 if self.window_end is None else self.window_end.value
        tcb.hs_last_round_min = self.last_round_min
        tcb.hs_current_round_min = self.current_round_min
        tcb.hs_samples = self.samples
        tcb.hs_css_baseline = self.css_baseline
        tcb.hs_css_rounds = self.css_rounds

    def load_hot(self, tcb: Any) -> None:
        self.phase = int(tcb.hs_phase)
        self.window_end = Seq(int(tcb.hs_window_end)) if tcb.hs_round_open else None
        self.last_round_min = float(tcb.hs_last_round_min)
        self.current_round_min = float(tcb.hs_current_round_min)
        self.samples = int(tcb.hs_samples)
        self.css_baseline = float(tcb.hs_css_baseline)
        self.css_rounds = int(tcb.hs_css_rounds)
