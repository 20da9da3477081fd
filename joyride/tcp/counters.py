"""Drop and event counters keyed by short stable reason strings.

Counters are per connection, and a listener (or the engine) sums them with
``update``. The reasons used by the core are listed here so that dashboards and tests
have one place to look.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final


class Counters(dict[str, int]):
    """A ``collections.Counter`` reduced to what counting needs: a missing reason
    reads as 0 (and is not inserted), and ``update`` adds.

    Not ``Counter`` itself: its Python-level ``__delitem__`` makes CPython route every
    item assignment through a slot that looks ``__setitem__`` up by name, and the fast
    path assigns a few counters per segment. This class overrides neither, so
    ``counters[reason] += 1`` stays dict's C code.
    """

    __slots__ = ()

    def __missing__(self, key: str) -> int:
        return 0

    def update(self, other: Mapping[str, int] = {}, /, **more: int) -> None:  # type: ignore[override]
        for source in (other, more):
            for key, value in source.items():
                self[key] = self.get(key, 0) + value

# Receive-side drops (RFC 9293 §3.10.7 and friends).
DROP_REASONS: Final = frozenset(
    {
        "drop_closed",  # segment for a CLOSED connection (answered with RST)
        "drop_syn_sent_bad_ack",  # SYN-SENT: ACK outside (ISS, SND.NXT]
        "drop_syn_sent_rst_bad_ack",  # SYN-SENT: RST whose ACK is not acceptable
        "drop_syn_sent_no_syn",  # SYN-SENT: neither SYN nor RST
        "drop_paws",  # RFC 7323 §5.3 PAWS: TSval older than TS.Recent
        "drop_out_of_window",  # RFC 9293 §3.10.7.4 acceptability test failed
        "drop_rst_out_of_window",  # RFC 5961 §3.2: RST outside the window
        "drop_rst_challenged",  # RFC 5961 §3.2: in-window RST not at RCV.NXT
        "drop_syn_challenged",  # RFC 5961 §4: SYN in a synchronized state
        "drop_no_ack",  # segment without ACK in a synchronized state
        "drop_ack_unsent",  # RFC 5961 §5.2 / RFC 9293: ACK for data never sent
        "drop_ack_too_old",  # RFC 5961 §5.2: ACK below SND.UNA - MAX.SND.WND
        "drop_syn_received_bad_ack",  # SYN-RECEIVED: unacceptable ACK (RST sent)
        "drop_data_after_fin",  # data or FIN beyond the peer's FIN
        "drop_data_not_receiving",  # text in a state that does not take any
        "drop_data_after_close",  # data after the application closed (RST sent)
        "drop_reassembly_full",  # out-of-order store refused the data
        "drop_window_trimmed",  # bytes cut because they lay outside the window
    }
)

# TIME-WAIT records (``joyride.tcp.timewait``) and the engine's table of them.
TIME_WAIT_COUNTERS: Final = frozenset(
    {
        "tw_created",  # a connection in TIME-WAIT was replaced by its compact record
        "tw_expired",  # a record reached 2*MSL and was removed
        "tw_overflow",  # the table was full: the record nearest its deadline was dropped
        "tw_reuse",  # RFC 6191: a new SYN reopened the 4-tuple (the listener takes it)
        "tw_killed_by_rst",  # an in-window RST ended the record (Linux, tcp_rfc1337=0)
        "tw_drop_paws",  # RFC 7323 §5.3: a segment with an old timestamp
        "tw_drop_rst",  # a RST that was not at RCV.NXT
        "tw_fin_acked",  # a retransmitted FIN of the peer, answered with an ACK
        "tw_ack_sent",  # RFC 9293 §3.10.7.4: an ACK re-sent for a segment
        "tw_ack_ratelimited",  # the same ACK, held back (Linux's tcp_oow_rate_limited)
    }
)

# How the initial slow start ended (``joyride.tcp.hystart``: HyStart++, RFC 9406, and
# Linux's ACK train); per connection, summed into ``joyride stats``.
CONGESTION_COUNTERS: Final = frozenset(
    {
        "hystart_css_entered",  # §4.2: the round's minimum RTT rose: conservative slow start
        "hystart_css_abandoned",  # §4.2: it fell back (jitter): slow start resumed
        "hystart_slow_start_exits",  # §4.2: CSS_ROUNDS rounds in CSS: ssthresh = cwnd
        "hystart_ack_train_exits",  # Linux's HyStart: an ACK train past min RTT / 2
    }
)

# Loss recovery events beyond RFC 6675 (``joyride.tcp.recovery``, issue 15); per
# connection, summed into ``joyride stats`` with every other connection counter.
RECOVERY_COUNTERS: Final = frozenset(
    {
        "dsack_sent",  # RFC 2883: an ACK carried a D-SACK block for a duplicate we got
        "dsack_received",  # RFC 2883 §5 / RFC 3708 §2: the peer reported a duplicate
        "spurious_detected_timestamps",  # RFC 3522 Eifel: TSecr older than RetransmitTS
        "spurious_detected_dsack",  # RFC 3708 §3: every retransmission came back D-SACKed
        "spurious_detected_frto",  # RFC 5682 §2 step 3b: F-RTO found the RTO spurious
        "undo_fast_recovery",  # cwnd/ssthresh restored after a spurious fast retransmit
        "undo_rto",  # cwnd/ssthresh restored after a spurious RTO (RFC 4015 §3.2)
        "rack_reordering_seen",  # RFC 8985 §6.2: reordering seen, RACK decides losses
        "rack_timer_fired",  # RFC 8985 §6.3: the reordering timer expired
        "rack_lost_retransmissions",  # RFC 8985 §6.2: a retransmission was lost again
        "tlp_probes_new_data",  # RFC 8985 §7.3: a loss probe sent new data
        "tlp_probes_retransmitted",  # RFC 8985 §7.3: a loss probe resent the last segment
        "tlp_no_loss",  # RFC 8985 §7.4: the probe's D-SACK or a duplicate ACK: no loss
        "tlp_loss_repaired",  # RFC 8985 §7.4: the probe repaired a loss (cwnd reduced)
    }
)
