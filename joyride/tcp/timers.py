"""Connection timers as data (smoltcp's ``Timer``): a deadline per kind, no callbacks.

The connection arms and cancels deadlines; the caller asks ``next_deadline()`` and
calls back ``on_timer(now)`` at or after it. Nothing here reads a clock.
"""

from __future__ import annotations

from joyride.tcp.state import FastEnum


class Timer(FastEnum):
    RETRANSMIT = "retransmit"  # RFC 6298 RTO, also SYN / SYN-ACK / FIN retransmission
    PERSIST = "persist"  # RFC 9293 §3.8.6.1 zero-window probe, §3.8.6.2.1 SWS override
    DELAYED_ACK = "delayed_ack"  # RFC 9293 §3.8.6.3
    KEEPALIVE = "keepalive"  # RFC 9293 §3.8.4
    TIME_WAIT = "time_wait"  # RFC 9293 §3.3.2, 2*MSL
    FIN_WAIT_2 = "fin_wait_2"  # orphan FIN-WAIT-2 bound (Linux tcp_fin_timeout)
    REORDER = "reorder"  # RFC 8985 §6.3 RACK reordering timer
    PTO = "pto"  # RFC 8985 §7.2 tail loss probe timeout


class Timers:
    """At most one deadline per ``Timer`` kind."""

    __slots__ = ("_deadlines",)

    def __init__(self) -> None:
        self._deadlines: dict[Timer, float] = {}

    def set(self, timer: Timer, at: float) -> None:
        self._deadlines[timer] = at

    def set_if_unset(self, timer: Timer, at: float) -> None:
        self._deadlines.setdefault(timer, at)

    def cancel(self, timer: Timer) -> None:
        self._deadlines.pop(timer, None)

    def cancel_all(self) -> None:
        self._deadlines.clear()

    def is_set(self, timer: Timer) -> bool:
        return timer in self._deadlines

    def deadline(self, timer: Timer) -> float | None:
        return self._deadlines.get(timer)

    def next_deadline(self) -> float | None:
        # A loop, not min(): asked once per connection per transmit step, over one to
        # three entries, where the compiled loop beats the generic builtin call.
        earliest: float | None = None
        for at in self._deadlines.values():
            if earliest is None or at < earliest:
                earliest = at
        return earliest

    def expired(self, now: float) -> list[Timer]:
        """The kinds due at ``now``, removed from the table, earliest first."""
        due = sorted((at, t.value, t) for t, at in self._deadlines.items() if at <= now)
        for _, _, t in due:
            del self._deadlines[t]
        return [t for _, _, t in due]
