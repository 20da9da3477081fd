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
- Linux's CUBIC also leaves slow start on an ACK train (tcp_cubic.c's HyStart,
  HYSTART_ACK_TRAIN; Ha and Rhee, "Taming the elephants", 2011): once cwnd is 16
  segments, ACKs arriving back to back (at most 2 ms apart) for longer than half the
  smallest RTT seen mean a window's worth is already spread over the path, and
  ssthresh becomes cwnd. RFC 9406 has no such rule, and without it Joyride stayed in
  slow start far longer than the kernel it is measured against on short paths: the
  delay rule waits for 4 ms of queue, forty times a 0.1 ms path's round trip (through
  the test bed's relay with 10% reordering Joyride's window grew to 1-4 MB where the
  kernel's CUBIC left slow start at 38-153 segments). Both rules run here.

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
# Linux's tcp_cubic.c: hystart_low_window (segments) and hystart_ack_delta_us.
ACK_TRAIN_LOW_WINDOW: Final = 16
ACK_TRAIN_DELTA: Final = 0.002  # s

# ``struct dp_tcb.hs_phase``.
PHASE_SLOW_START: Final = 0
PHASE_CSS: Final = 1
PHASE_OFF: Final = 2  # HyStart++ is off for this connection (TcpConfig.hystart)

# What an ACK did, as the counter that counts it (``counters.CONGESTION_COUNTERS``).
CSS_ENTERED: Final = "hystart_css_entered"
CSS_ABANDONED: Final = "hystart_css_abandoned"
SLOW_START_EXITED: Final = "hystart_slow_start_exits"
ACK_TRAIN_EXITED: Final = "hystart_ack_train_exits"

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
    round_start: float  # s: the time the round began (its first ACK)
    last_ack_at: float  # s: the last ACK of the round's ACK train
    delay_min: float  # s: the smallest RTT sample of this slow start

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
        self.round_start = 0.0
        self.last_ack_at = 0.0
        self.delay_min = INF

    @property
    def growth_divisor(self) -> int:
        """What slow start's growth is divided by: CSS_GROWTH_DIVISOR in CSS (§4.2)."""
        return CSS_GROWTH_DIVISOR if self.phase == PHASE_CSS else 1

    def on_ack(self, snd_una: Seq, snd_nxt: Seq, rtt: float | None, now: float,
               train_ok: bool) -> str | None:
        """One acceptable ACK of new data at ``now`` in the initial slow start, SND.UNA
        now ``snd_una``, with its RTT sample (None: none); ``train_ok``: cwnd is at
        least ``ACK_TRAIN_LOW_WINDOW`` segments. Returns what it did (``CSS_ENTERED``,
        ``CSS_ABANDONED``; ``SLOW_START_EXITED`` or ``ACK_TRAIN_EXITED``: then the
        caller sets ssthresh to cwnd) or None."""
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
            self.round_start = self.last_ack_at = now
        if rtt is None:
            return None
        if rtt < self.delay_min:
            self.delay_min = rtt
        if train_ok and now - self.last_ack_at <= ACK_TRAIN_DELTA:
            # The ACK train goes on; past half the smallest RTT, slow start ends (as
            # Linux's hystart_update, without a pacing rate's allowance).
            self.last_ack_at = now
            if now - self.round_start > self.delay_min / 2:
                self.reset()
                return ACK_TRAIN_EXITED
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
        tcb.hs_round_start = self.round_start
        tcb.hs_last_ack_at = self.last_ack_at
        tcb.hs_delay_min = self.delay_min

    def load_hot(self, tcb: Any) -> None:
        self.phase = int(tcb.hs_phase)
        self.window_end = Seq(int(tcb.hs_window_end)) if tcb.hs_round_open else None
        self.last_round_min = float(tcb.hs_last_round_min)
        self.current_round_min = float(tcb.hs_current_round_min)
        self.samples = int(tcb.hs_samples)
        self.css_baseline = float(tcb.hs_css_baseline)
        self.css_rounds = int(tcb.hs_css_rounds)
        self.round_start = float(tcb.hs_round_start)
        self.last_ack_at = float(tcb.hs_last_ack_at)
        self.delay_min = float(tcb.hs_delay_min)
