"""Retransmission timer computation (RFC 6298).

``RttEstimator`` turns RTT samples into SRTT, RTTVAR and the retransmission timeout.
It is pure arithmetic: the caller measures the samples and owns the timer. Karn's
rule (RFC 6298 §3: never sample a retransmitted segment unless timestamps
disambiguate it) is enforced by the connection, which knows what was retransmitted.

Memory: a handful of floats, whatever the input.
"""

from __future__ import annotations

import math
from typing import Any, Final

# RFC 6298 §2.3: alpha = 1/8, beta = 1/4, K = 4.
ALPHA: Final = 0.125
BETA: Final = 0.25
K: Final = 4

# RFC 6298 §5.7: an RTO below 3 s must be re-initialised to 3 s once data transmission
# begins if the SYN (or SYN-ACK) had to be retransmitted.
SYN_FALLBACK_RTO: Final = 3.0

# Backoff doubles the RTO; beyond this many doublings the cap at max_rto is always
# reached (2**32 * min_rto dwarfs any sane max_rto), so the shift is bounded too.
_MAX_BACKOFF_SHIFT: Final = 32


class RttEstimator:
    """SRTT/RTTVAR/RTO per RFC 6298, with exponential backoff (§5.5)."""

    __slots__ = (
        "_backoff",
        "_base_rto",
        "_rttvar",
        "_srtt",
        "granularity",
        "max_rto",
        "min_rto",
        "samples",
    )

    def __init__(
        self,
        initial_rto: float = 1.0,
        min_rto: float = 0.2,
        max_rto: float = 60.0,
        granularity: float = 0.001,
    ) -> None:
        if not (0 < min_rto <= max_rto):
            raise ValueError(f"need 0 < min_rto <= max_rto, got {min_rto}, {max_rto}")
        if not (initial_rto > 0 and granularity >= 0):
            raise ValueError("initial_rto must be positive and granularity non-negative")
        self.min_rto = min_rto
        # RFC 6298 §2.5: a maximum value MAY be placed on RTO provided it is at least
        # 60 seconds; smaller values are accepted for tests and tight deployments.
        self.max_rto = max_rto
        self.granularity = granularity
        self._srtt: float | None = None
        self._rttvar: float | None = None
        # RFC 6298 §2.1: until a sample is taken, RTO is the initial value (1 s).
        self._base_rto = initial_rto
        self._backoff = 0
        self.samples = 0

    @property
    def srtt(self) -> float | None:
        return self._srtt

    @property
    def rttvar(self) -> float | None:
        return self._rttvar

    @property
    def backoff_count(self) -> int:
        """How many times the timer has been backed off since the last sample/reset."""
        return self._backoff

    @property
    def rto(self) -> float:
        """The current timeout: base RTO doubled once per backoff, clamped."""
        # §5.5 doubles the RTO actually in use, so the floor applies before backoff.
        return min(self._floored_base() * (1 << self._backoff), self.max_rto)

    def _floored_base(self) -> float:
        # RFC 6298 §2.4 asks for a 1 s floor; like Linux (TCP_RTO_MIN) we use a
        # configurable floor, 200 ms by default, because 1 s cripples LAN recovery.
        # §2.5 allows the ceiling (max_rto).
        return max(self._base_rto, self.min_rto)

    def sample(self, rtt: float) -> None:
        """Feed one RTT measurement in seconds.

        Non-finite or negative samples (a clock step or a forged timestamp echo) are
        ignored rather than poisoning the estimator.
        """
        if not math.isfinite(rtt) or rtt < 0:
            return
        if self._srtt is None or self._rttvar is None:
            # RFC 6298 §2.2: first measurement R: SRTT <- R, RTTVAR <- R/2.
            self._srtt = rtt
            self._rttvar = rtt / 2
        else:
            # RFC 6298 §2.3: RTTVAR is updated first, with the *old* SRTT.
            self._rttvar = (1 - BETA) * self._rttvar + BETA * abs(self._srtt - rtt)
            self._srtt = (1 - ALPHA) * self._srtt + ALPHA * rtt
        # RFC 6298 §2.2/§2.3: RTO <- SRTT + max(G, K*RTTVAR).
        self._base_rto = self._srtt + max(self.granularity, K * self._rttvar)
        self.samples += 1
        # RFC 6298 §5 (note after rule 5.7): a new measurement recomputes RTO per §2,
        # "collapsing" any exponential backoff.
        self._backoff = 0

    def backoff(self) -> None:
        """RFC 6298 §5.5: on timer expiry, RTO <- RTO * 2 (capped at max_rto)."""
        if self._backoff < _MAX_BACKOFF_SHIFT and (
            self._floored_base() * (1 << self._backoff) < self.max_rto
        ):
            self._backoff += 1

    def reset_backoff(self) -> None:
        """Drop the backoff (e.g. an ACK for new data arrived, RFC 6298 §5.3/§5.7)."""
        self._backoff = 0

    # -- hand-off to the C data plane (joyride/dataplane; docs/dataplane.md) ----------

    def save_hot(self, tcb: Any) -> None:
        """Write the estimator into ``tcb`` (a ``struct dp_tcb``): C runs it meanwhile."""
        tcb.srtt = -1.0 if self._srtt is None else self._srtt
        tcb.rttvar = 0.0 if self._rttvar is None else self._rttvar
        tcb.base_rto = self._base_rto
        tcb.min_rto = self.min_rto
        tcb.max_rto = self.max_rto
        tcb.rto_granularity = self.granularity
        tcb.rto_backoff = self._backoff
        tcb.rtt_samples = self.samples

    def load_hot(self, tcb: Any) -> None:
        """Take the estimator back from ``tcb`` (the inverse of ``save_hot``)."""
        srtt = float(tcb.srtt)
        self._srtt = None if srtt < 0 else srtt
        self._rttvar = None if srtt < 0 else float(tcb.rttvar)
        self._base_rto = float(tcb.base_rto)
        self._backoff = int(tcb.rto_backoff)
        self.samples = int(tcb.rtt_samples)

    def syn_timed_out(self) -> None:
        """RFC 6298 §5.7: the SYN (or SYN-ACK) was retransmitted.

        If no RTT sample has been taken during the handshake, the RTO used once data
        transmission begins must be at least 3 seconds.
        """
        if self._srtt is None:
            self._base_rto = max(self._base_rto, SYN_FALLBACK_RTO)
