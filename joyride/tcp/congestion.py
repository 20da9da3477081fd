"""Congestion control: NewReno (RFC 5681) and CUBIC (RFC 9438).

All windows are in bytes. The connection owns loss detection and recovery (RFC 6675
pipe, NewReno partial ACKs, any cwnd inflation); a controller only answers "how big
may the window be" at four kinds of event:

- ``on_ack``: new data cumulatively acknowledged outside recovery (window growth);
- ``on_congestion``: fast retransmit / SACK loss detected (multiplicative decrease);
- ``on_rto``: retransmission timeout (loss window);
- ``on_recovery_exit`` / ``on_idle``: leaving recovery, restarting after idle;
- ``on_delivery``: every acceptable ACK of new data with its RTT sample, for HyStart++
  (RFC 9406, ``joyride.tcp.hystart``) in the initial slow start.

Memory: a fixed set of numbers per controller.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final, Protocol

from joyride.tcp.hystart import (
    ACK_TRAIN_EXITED,
    ACK_TRAIN_LOW_WINDOW,
    SLOW_START_EXITED,
    HyStart,
)
from joyride.wire.seq import Seq

# RFC 5681 §3.1: the initial ssthresh "SHOULD be set arbitrarily high".
INITIAL_SSTHRESH: Final = 0x7FFFFFFF
# RFC 3465 §2.2 lets slow start grow cwnd by at most L*SMSS per ACK and recommends
# L = 2. Like Linux's tcp_slow_start, every segment an ACK covers counts here (L is in
# effect unbounded, 0xFFFF segments): GRO and LRO at the receiver turn a burst into one
# stretch ACK, and with L = 2 slow start grows by 2 segments a round trip instead of
# doubling (measured on the bed's delayed path: the kernel's first second carried 1,950
# segments, ours 311). L = 1 after an RTO (RFC 3465 §2.3) stays.
ABC_LIMIT: Final = 0xFFFF


def cwnd_limited(flight_size: int, cwnd: int) -> bool:
    """Whether the window was what held the sender back, so an ACK may grow it.

    RFC 7661 §4.3 / RFC 9438 §5.8: a sender that does not use its window (limited by
    the application or the receiver) must not keep growing it, or cwnd ends up
    meaningless. Linux's tcp_is_cwnd_limited uses the same "at least half used" test.
    """
    return 2 * flight_size >= cwnd


def initial_window(mss: int) -> int:
    """RFC 6928 §2: IW = min(10*MSS, max(2*MSS, 14600))."""
    return min(10 * mss, max(2 * mss, 14600))


class CongestionControl(Protocol):
    cwnd: int
    ssthresh: int
    hystart: HyStart

    def on_ack(self, now: float, acked: int, rtt: float | None, flight_size: int) -> None: ...
    def on_congestion(self, now: float, flight_size: int) -> None: ...
    def on_rto(self, now: float, flight_size: int) -> None: ...
    def on_recovery_exit(self, now: float) -> None: ...
    def on_idle(self, now: float, rto: float) -> None: ...
    def on_delivery(self, snd_una: Seq, snd_nxt: Seq, rtt: float | None,
                    now: float) -> str | None: ...
    def set_mss(self, mss: int) -> None: ...
    def save_hot(self, tcb: Any) -> bool: ...
    def load_hot(self, tcb: Any) -> None: ...


# ``struct dp_tcb.cc_kind`` (joyride/dataplane/dataplane.h: enum dp_cc).
DP_CC_NEWRENO: Final = 0
DP_CC_CUBIC: Final = 1


class _Base:
    """State and rules shared by every controller here."""

    def __init__(self, mss: int, initial_window_bytes: int | None, hystart: bool) -> None:
        if mss <= 0:
            raise ValueError("mss must be positive")
        self.mss = mss
        self._explicit_iw = initial_window_bytes
        self.cwnd = self._iw()
        self.ssthresh = INITIAL_SSTHRESH
        self.in_recovery = False
        # RFC 3465 §2.2: L = 2*SMSS in slow start, but 1*SMSS in the slow start that
        # follows a retransmission timeout (an ACK then may cover segments that were
        # sent long ago, not a burst the network just absorbed).
        self._abc_limit = ABC_LIMIT
        # Until the window first changes, a new MSS (negotiated in the handshake)
        # recomputes the initial window instead of keeping one sized for a guess.
        self._pristine = True
        self.hystart = HyStart(hystart)

    def _iw(self) -> int:
        if self._explicit_iw is not None:
            return max(self._explicit_iw, self.mss)
        return initial_window(self.mss)

    @property
    def in_slow_start(self) -> bool:
        # RFC 5681 §3.1: slow start while cwnd < ssthresh (either may be used when
        # equal; we pick congestion avoidance, as Linux does).
        return self.cwnd < self.ssthresh

    def _slow_start(self, acked: int) -> int:
        """RFC 5681 §3.1 eq. (2) with RFC 3465 §2.2 ABC: cwnd += min(N, L*SMSS), L as
        ``ABC_LIMIT`` says (every byte acknowledged, but one SMSS after an RTO), and a
        quarter of that in HyStart++'s conservative slow start (RFC 9406 §4.2).

        Returns the acknowledged bytes left over once cwnd reaches ssthresh, which
        belong to congestion avoidance (as Linux's tcp_slow_start).
        """
        inc = min(acked, self._abc_limit * self.mss) // self.hystart.growth_divisor
        new = min(self.cwnd + inc, max(self.ssthresh, self.cwnd))
        used = new - self.cwnd
        self.cwnd = new
        if self.cwnd >= self.ssthresh:
            self._abc_limit = ABC_LIMIT
        # Bytes beyond an ABC limit are not credited anywhere (RFC 3465 §2.2).
        return inc - used if self.cwnd >= self.ssthresh else 0

    def _loss_ssthresh(self, flight_size: int) -> int:
        # RFC 5681 §3.1 eq. (4): ssthresh = max(FlightSize / 2, 2*SMSS).
        return max(flight_size // 2, 2 * self.mss)

    def on_delivery(self, snd_una: Seq, snd_nxt: Seq, rtt: float | None,
                    now: float) -> str | None:
        """HyStart++ on one acceptable ACK of new data at ``now`` (SND.UNA now
        ``snd_una``, SND.NXT ``snd_nxt``, the ACK's RTT sample or None), in the initial
        slow start only (RFC 9406 §4.3: ssthresh still at its initial value). Returns
        the counter of what it did, if anything."""
        if self.ssthresh != INITIAL_SSTHRESH:
            return None
        train_ok = self.cwnd >= ACK_TRAIN_LOW_WINDOW * self.mss
        event = self.hystart.on_ack(snd_una, snd_nxt, rtt, now, train_ok)
        if event in (SLOW_START_EXITED, ACK_TRAIN_EXITED):
            self.ssthresh = self.cwnd  # RFC 9406 §4.2: enter congestion avoidance
        return event

    def set_mss(self, mss: int) -> None:
        if mss <= 0:
            return
        self.mss = mss
        if self._pristine:
            self.cwnd = self._iw()
        # A window below one segment would stall the sender entirely.
        self.cwnd = max(self.cwnd, mss)
        if self.ssthresh < 2 * mss:
            self.ssthresh = 2 * mss

    # -- hand-off to the C data plane, which runs on_ack and on_idle meanwhile --------

    def save_hot(self, tcb: Any) -> bool:
        """Write the controller into ``tcb`` (``struct dp_tcb``); False when C cannot
        run it (in recovery: recovery.py's business)."""
        if self.in_recovery:
            return False
        tcb.cwnd = self.cwnd
        tcb.ssthresh = min(self.ssthresh, 0xFFFFFFFF)
        tcb.abc_limit = self._abc_limit
        tcb.cc_pristine = int(self._pristine)
        tcb.cc_iw = self._iw()
        self.hystart.save_hot(tcb)
        return True

    def load_hot(self, tcb: Any) -> None:
        self.cwnd = int(tcb.cwnd)
        self.ssthresh = int(tcb.ssthresh)
        self._abc_limit = int(tcb.abc_limit)
        self._pristine = bool(tcb.cc_pristine)
        self.hystart.load_hot(tcb)

    def on_recovery_exit(self, now: float) -> None:
        # RFC 6582 §3.2 step 3 (full ACK): cwnd becomes ssthresh (option 2) or
        # min(ssthresh, max(FlightSize, SMSS) + SMSS) (option 1). The connection may
        # pick either before calling this; here only inflation left above ssthresh is
        # removed, so both choices survive.
        if self.in_recovery:
            self.cwnd = max(min(self.cwnd, self.ssthresh), self.mss)
            self.in_recovery = False

    def _restart_window(self) -> None:
        # RFC 2861 §3 (as Linux's tcp_cwnd_restart): remember the window we had by
        # raising ssthresh to 3/4 cwnd, so slow start climbs back to it quickly.
        self.ssthresh = max(self.ssthresh, (3 * self.cwnd) // 4)
        # RFC 5681 §4.1: after an idle period longer than RTO, cwnd = RW = min(IW, cwnd).
        self.cwnd = min(self._iw(), self.cwnd)
        # RFC 9406 §4.3: an idle restart is a new slow start; the last rounds' RTTs
        # say nothing of it.
        self.hystart.reset()


class NewReno(_Base):
    """RFC 5681 window management with RFC 3465 byte counting and RFC 6928 IW10."""

    def __init__(
        self, mss: int, initial_window: int | None = None, *, hystart: bool = True
    ) -> None:
        super().__init__(mss, initial_window, hystart)
        self._bytes_acked = 0

    def on_ack(self, now: float, acked: int, rtt: float | None, flight_size: int) -> None:
        if acked <= 0:
            return
        self._pristine = False
        if self.in_slow_start:
            acked = self._slow_start(acked)
            if not acked:
                return
        # RFC 5681 §3.1 congestion avoidance via RFC 3465 §2.1 byte counting: count
        # acknowledged bytes and add one SMSS each time a full cwnd has been acked.
        self._bytes_acked += acked
        if self._bytes_acked >= self.cwnd:
            self._bytes_acked -= self.cwnd
            self.cwnd += self.mss
            # Bounded catch-up: a single huge ACK yields at most one SMSS (RFC 5681
            # §3.1: cwnd grows at most one SMSS per RTT in congestion avoidance).
            self._bytes_acked = min(self._bytes_acked, self.cwnd)

    def save_hot(self, tcb: Any) -> bool:
        tcb.cc_kind = DP_CC_NEWRENO
        tcb.reno_bytes_acked = self._bytes_acked
        return super().save_hot(tcb)

    def load_hot(self, tcb: Any) -> None:
        super().load_hot(tcb)
        self._bytes_acked = int(tcb.reno_bytes_acked)

    def on_congestion(self, now: float, flight_size: int) -> None:
        # RFC 5681 §3.2 step 2 / RFC 6582 §3.2 step 2: ssthresh per eq. (4); the
        # connection handles the +3*SMSS inflation of fast recovery, if it uses it.
        self._pristine = False
        self.ssthresh = self._loss_ssthresh(flight_size)
        self.cwnd = self.ssthresh
        self._bytes_acked = 0
        self.in_recovery = True
        self.hystart.reset()  # RFC 9406 §4.3: the initial slow start is over

    def on_rto(self, now: float, flight_size: int) -> None:
        # RFC 5681 §3.1: on timeout ssthresh per eq. (4) and cwnd = LW = 1 SMSS.
        self._pristine = False
        self.ssthresh = self._loss_ssthresh(flight_size)
        self.cwnd = self.mss
        self._abc_limit = 1
        self._bytes_acked = 0
        self.in_recovery = False
        self.hystart.reset()  # RFC 9406 §4.3: the initial slow start is over

    def on_idle(self, now: float, rto: float) -> None:
        """Called by the connection before sending after an idle period > ``rto``."""
        self._restart_window()
        self._bytes_acked = 0


# RFC 9438 §5.1/§4.6: C = 0.4, beta_cubic = 0.7.
CUBIC_C: Final = 0.4
CUBIC_BETA: Final = 0.7
# RFC 9438 §4.3: alpha_cubic = 3 * (1 - beta) / (1 + beta) makes the Reno-friendly
# estimate grow at the average rate of Reno with beta = 0.5.
CUBIC_ALPHA: Final = 3 * (1 - CUBIC_BETA) / (1 + CUBIC_BETA)


class Cubic(_Base):
    """CUBIC per RFC 9438, with RFC 5681 slow start and HyStart++ (RFC 9406).

    Internally W_max, cwnd_prior and W_est are in bytes; the cubic curve is evaluated
    in segments as the RFC writes it and scaled by the MSS.
    """

    def __init__(
        self, mss: int, initial_window: int | None = None, *, fast_convergence: bool = True,
        hystart: bool = True,
    ) -> None:
        super().__init__(mss, initial_window, hystart)
        self.fast_convergence = fast_convergence
        self.w_max = 0.0  # bytes; 0 = no congestion event yet
        self.cwnd_prior = 0.0  # bytes, cwnd before the last reduction
        self.k = 0.0  # seconds
        self.epoch_start: float | None = None
        self.w_est = 0.0  # bytes
        self.last_rtt: float | None = None
        self._carry = 0.0  # fractional bytes of growth not yet applied to cwnd

    def w_cubic(self, t: float) -> float:
        """RFC 9438 §4.2 eq. (1): W_cubic(t) = C*(t-K)^3 + W_max, in bytes."""
        return (CUBIC_C * (t - self.k) ** 3) * self.mss + self.w_max

    def _start_epoch(self, now: float) -> None:
        # RFC 9438 §4.2: t counts from the beginning of the current congestion
        # avoidance stage; cwnd_epoch is cwnd at that moment.
        self.epoch_start = now
        self._carry = 0.0
        cwnd_epoch = float(self.cwnd)
        if self.w_max <= cwnd_epoch:
            # RFC 9438 §4.8 (after a timeout) and §4.10 (slow start ended without
            # loss): W_max = cwnd at the start of the stage and K = 0.
            self.w_max = cwnd_epoch
            self.k = 0.0
        else:
            # RFC 9438 §4.2 eq. (2): K = cbrt((W_max - cwnd_epoch) / C), in segments.
            self.k = ((self.w_max - cwnd_epoch) / self.mss / CUBIC_C) ** (1 / 3)
        # RFC 9438 §4.3: W_est starts at cwnd_epoch.
        self.w_est = cwnd_epoch

    def on_ack(self, now: float, acked: int, rtt: float | None, flight_size: int) -> None:
        if acked <= 0:
            return
        self._pristine = False
        if rtt is not None and math.isfinite(rtt) and rtt >= 0:
            self.last_rtt = rtt
        if self.in_slow_start:
            # RFC 9438 §4.10: slow start as RFC 5681, with HyStart++ (_Base).
            acked = self._slow_start(acked)
            if not acked:
                return
        if self.epoch_start is None or now < self.epoch_start:
            self._start_epoch(now)
        assert self.epoch_start is not None
        t = now - self.epoch_start
        cwnd = float(self.cwnd)
        segs_acked = acked / self.mss

        # RFC 9438 §4.3: W_est += alpha_cubic * segments_acked / cwnd (segments);
        # alpha_cubic becomes 1 once W_est reaches cwnd_prior.
        alpha = 1.0 if self.w_est >= self.cwnd_prior else CUBIC_ALPHA
        self.w_est += alpha * segs_acked * self.mss * self.mss / cwnd

        if self.w_cubic(t) < self.w_est:
            # RFC 9438 §4.3: Reno-friendly region, cwnd = W_est.
            new = self.w_est
        else:
            # RFC 9438 §4.4/§4.5 (concave and convex regions): target is W_cubic one
            # RTT ahead, clamped to [cwnd, 1.5*cwnd] (§4.2), and cwnd grows by
            # (target - cwnd) / cwnd per acknowledged SMSS.
            rtt_ahead = self.last_rtt if self.last_rtt is not None else 0.0
            target = min(max(self.w_cubic(t + rtt_ahead), cwnd), 1.5 * cwnd)
            new = cwnd + (target - cwnd) / cwnd * segs_acked * self.mss
            # A stretch ACK covering more than a window must not overshoot target.
            new = min(new, target)
        grow = new - cwnd + self._carry
        if grow > 0:
            whole = int(grow)
            self._carry = grow - whole
            self.cwnd += whole

    def save_hot(self, tcb: Any) -> bool:
        tcb.cc_kind = DP_CC_CUBIC
        tcb.cubic_w_max = self.w_max
        tcb.cubic_cwnd_prior = self.cwnd_prior
        tcb.cubic_k = self.k
        tcb.cubic_epoch_start = -1.0 if self.epoch_start is None else self.epoch_start
        tcb.cubic_w_est = self.w_est
        tcb.cubic_last_rtt = -1.0 if self.last_rtt is None else self.last_rtt
        tcb.cubic_carry = self._carry
        return super().save_hot(tcb)

    def load_hot(self, tcb: Any) -> None:
        super().load_hot(tcb)
        self.w_max = float(tcb.cubic_w_max)
        self.cwnd_prior = float(tcb.cubic_cwnd_prior)
        self.k = float(tcb.cubic_k)
        epoch = float(tcb.cubic_epoch_start)
        self.epoch_start = None if epoch < 0 else epoch
        self.w_est = float(tcb.cubic_w_est)
        last = float(tcb.cubic_last_rtt)
        self.last_rtt = None if last < 0 else last
        self._carry = float(tcb.cubic_carry)

    def _reduce(self, flight_size: int) -> None:
        cwnd = float(self.cwnd)
        # RFC 9438 §4.7 fast convergence: a flow that lost before regaining its
        # previous W_max releases bandwidth by lowering W_max further.
        if self.fast_convergence and cwnd < self.w_max:
            self.w_max = cwnd * (1 + CUBIC_BETA) / 2
        else:
            self.w_max = cwnd
        self.cwnd_prior = cwnd
        # RFC 9438 §4.6: ssthresh = flight_size * beta_cubic, floored at 2 SMSS; from
        # cwnd instead when the flight is smaller, as Linux's CUBIC does (the section
        # allows it where cwnd does not grow while the flight falls short of it: here
        # the RFC 7661 test of cwnd_limited). With the flight alone, a loss detected
        # soon after the last recovery (whose PRR left the flight below cwnd) cut cwnd
        # twice over: through 1% loss at 40 ms RTT Joyride's cwnd averaged 9.2
        # segments against Linux's 12.7, and a 10 MB download took 1.22-1.40x the
        # kernel's time; 0.97x with this rule (2026-12-05, README).
        self.ssthresh = max(int(max(flight_size, self.cwnd) * CUBIC_BETA), 2 * self.mss)
        self.epoch_start = None
        self._carry = 0.0
        self.hystart.reset()  # RFC 9406 §4.3: the initial slow start is over

    def on_congestion(self, now: float, flight_size: int) -> None:
        self._pristine = False
        self._reduce(flight_size)
        # RFC 9438 §4.6: cwnd = max(ssthresh, 2) segments on loss.
        self.cwnd = self.ssthresh
        self.in_recovery = True

    def on_recovery_exit(self, now: float) -> None:
        was_in_recovery = self.in_recovery
        super().on_recovery_exit(now)
        if was_in_recovery:
            # RFC 9438 §4.2: t counts from the start of the congestion avoidance stage,
            # which begins when recovery ends. An epoch (and W_est) begun by ACKs
            # during recovery describes a cwnd that recovery exit has just pulled
            # down to ssthresh: kept, the next ACK would jump cwnd back up to W_est.
            self.epoch_start = None
            self._carry = 0.0

    def on_rto(self, now: float, flight_size: int) -> None:
        # RFC 9438 §4.8: on timeout reduce like Reno (cwnd = 1 SMSS, RFC 5681 §3.1)
        # but set ssthresh with beta_cubic (§4.6). The next congestion avoidance
        # stage starts with W_max = cwnd at its start and K = 0.
        self._pristine = False
        self._reduce(flight_size)
        self.w_max = 0.0
        self.cwnd = self.mss
        self._abc_limit = 1
        self.in_recovery = False

    def on_idle(self, now: float, rto: float) -> None:
        """Called by the connection before sending after an idle period > ``rto``.

        The restart window (RFC 5681 §4.1) shrinks cwnd, and the cubic epoch restarts
        so that the idle time does not count towards t (RFC 9438 §5.8: a flow must
        not grow its window from time spent application-limited).
        """
        self._restart_window()
        self.epoch_start = None
        self._carry = 0.0


CONGESTION_CONTROLS: dict[str, Callable[..., CongestionControl]] = {
    "cubic": Cubic,
    "newreno": NewReno,
}


def make_congestion_control(name: str, mss: int, *, hystart: bool = True) -> CongestionControl:
    """Build the controller registered under ``name`` (ValueError if unknown), with
    HyStart++ in its initial slow start unless ``hystart`` is False."""
    try:
        factory = CONGESTION_CONTROLS[name.lower()]
    except KeyError:
        known = ", ".join(sorted(CONGESTION_CONTROLS))
        raise ValueError(f"unknown congestion control {name!r} (known: {known})") from None
    return factory(mss, hystart=hystart)
