"""Sender loss detection and recovery for one connection (RFC 5681 §3.2, RFC 3042,
RFC 6582 NewReno, RFC 6675 SACK recovery, RFC 6298 §5 RTO effects).

``LossRecovery`` owns the recovery variables and decides; the connection owns the
sequence space and the send buffer, and emits. Per ACK the connection calls
``on_ack``, which counts duplicate ACKs, updates the SACK scoreboard, drives the
congestion controller, enters and leaves fast recovery, and answers the segment to
retransmit at once, if any. While in SACK recovery the connection asks ``next_seg``
what to send (RFC 6675 §5 step (C)) and reports each retransmission back through
``retransmitted``; in NewReno recovery it resends the head while ``rexmit_head``.

Variables (RFC names): ``recover`` is RFC 6582 "recover" and RFC 6675 RecoveryPoint
(exclusive, one past HighData); ``high_rxt`` is one past HighRxt; ``rescue_rxt`` is
RescueRxt, the highest octet a rescue covered (None: undefined). HighACK is
SND.UNA - 1.

Beyond RFC 6675 (issue 15):

* PRR (RFC 6937): during SACK recovery cwnd is set on every ACK to pipe + sndcnt,
  from the data delivered since recovery began (``prr_delivered``), the data sent
  (``prr_out``) and RecoverFS, instead of dropping to ssthresh at once.
* Spurious retransmission detection and undo. A *recovery episode* begins with a
  fast retransmit or an RTO: the cwnd and ssthresh it replaces are saved, and every
  retransmission in it is recorded. The episode is found spurious by the timestamp
  test (RFC 3522 Eifel: the first ACK of new data after the retransmission echoes a
  TSval older than the retransmission's) or because every retransmitted octet came
  back D-SACKed (RFC 3708 §3); then cwnd and ssthresh are restored (RFC 4015 §3.2,
  as Linux's tcp_undo_cwnd_reduction: the larger of now and before). DupThresh is
  not raised after a spurious fast retransmit (Linux's tcp_update_reordering): in
  the simulator that delayed the detection of real losses under mixed loss and
  reordering enough to cost more than it saved; that adaptation is RACK's (RFC 8985
  reordering window, below).
  Undo stays possible for a short while after recovery ends, as D-SACKs of
  the last retransmissions arrive after the ACK that ends it; the C data plane
  carries the episode's deadline and declines a D-SACK (docs/dataplane.md).
* RACK (RFC 8985 §6), once reordering has been seen (a D-SACK, a hole filled by
  the original transmission, an undone recovery): loss is then decided by time,
  not by DupThresh. An unSACKed segment is lost when a segment sent after it was
  delivered and RACK.rtt + RACK.reo_wnd have passed since it was sent; the
  reordering window is min_RTT/4, scaled by the D-SACK rounds seen (§6.2 step 4),
  never above SRTT. Until reordering is seen RFC 6675's IsLost() decides, as RFC
  8985 §6.2 step 4 makes RACK.reo_wnd 0 then (DupThresh's verdict). Send times
  are kept per send call, for data never retransmitted; while the C data plane runs
  the connection it keeps them (at most ``HOT_TX_RECORDS``), the scoreboard and
  RACK's state, and hands the connection back when recovery begins or the reordering
  timer is due (``save_hot``, ``load_hot``, ``enter_from_c``).
* Lost retransmissions (RFC 8985 §6.2: a retransmission is timed like any segment):
  every retransmission of fast recovery is logged with its send time
  (``_rexmit_log``), and one not delivered while a segment sent after it was, RACK.rtt
  + RACK.reo_wnd after it went, is lost again, whatever the mode of detection of
  originals: it is sent again first (``next_seg``) and leaves the pipe meanwhile. RFC
  6675 alone leaves such a loss to the RTO.
* F-RTO (RFC 5682 §2) after a timeout that begins an episode (``frto``): the first
  ACK after the retransmission, if it acknowledges that retransmission and not all
  of what was outstanding, lets up to two new segments go instead of more
  retransmissions; if the next ACK then acknowledges data that was never
  retransmitted, the timeout was spurious and is undone as RFC 4015 says (the
  episode's undo, above); a duplicate ACK instead returns to the conventional RTO
  recovery (go-back-N in slow start). The connection sends (it owns the buffer).
* Tail loss probes (RFC 8985 §7). While data is outstanding, nothing is SACKed and
  no recovery (fast or RTO) is under way, the connection keeps a probe timeout
  (PTO, ``pto``: 2*SRTT, plus TLP.max_ack_delay when one segment is in flight, never
  later than the RTO) re-armed by every ACK of new data and every send of new data.
  When it fires, one probe goes (``tlp_sent``): a new segment if the peer's window
  admits one, else the highest segment sent again; at most one probe per flight
  (``tlp_end_seq``, as Linux since 2020). The ACKs that follow decide (§7.4,
  ``_tlp_ack``): a D-SACK of the probe or a plain duplicate ACK says nothing was
  lost; an ACK beyond the probe's end without that says the probe repaired a loss,
  and congestion control reacts once (Linux's CWR: ssthresh and cwnd reduced).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any, Final

from joyride.tcp.congestion import CongestionControl, cwnd_limited
from joyride.tcp.counters import Counters
from joyride.tcp.options import ts_before
from joyride.tcp.scoreboard import SackScoreboard
from joyride.wire.seq import Seq

#: Retransmitted ranges remembered per episode for the D-SACK test; beyond that the
#: episode can only be found spurious by timestamps.
MAX_UNDO_RANGES: Final = 64
#: Send-time records kept for RACK (one per distinct send time of outstanding data).
MAX_TX_RECORDS: Final = 8192
#: ... of them, while the C data plane runs the connection (``DP_TX_RECORDS``); the
#: oldest go first, as beyond MAX_TX_RECORDS here.
HOT_TX_RECORDS: Final = 32
#: SACKed ranges the C data plane keeps as a sender (``DP_SACK_RANGES``); with more
#: the connection stays here.
HOT_SACK_RANGES: Final = 8
#: RFC 8985 §6.2 step 4: the reordering window's multiplier resets after this many
#: recoveries without a new D-SACK round.
REO_WND_PERSIST: Final = 16
#: RFC 8985 §7.2 TLP.max_ack_delay: the peer's delayed-ACK time, which the sender
#: cannot know; the worst case, 200 ms (RFC 8985's WCDelAckT; Linux adds TCP_RTO_MIN).
TLP_MAX_ACK_DELAY: Final = 0.2
#: Linux's TCP_TIMEOUT_MIN (2 ms) added to 2*SRTT when more than one segment is in
#: flight; RFC 8985 §7.2 adds nothing. Where SRTT is tens of microseconds (veth) a
#: probe at 2*SRTT would fire at every scheduling delay of the peer.
TLP_MIN_EXTRA: Final = 0.002
#: RFC 8985 §7.2: the PTO before any RTT sample.
TLP_INITIAL_PTO: Final = 1.0
#: Episode kinds.
EPISODE_NONE: Final = 0
EPISODE_FAST: Final = 1  # fast retransmit / fast recovery
EPISODE_RTO: Final = 2  # retransmission timeout


class LossRecovery:
    """Duplicate-ACK counting, fast retransmit / fast recovery and SACK recovery."""

    __slots__ = (
        "_cc",
        "_counters",
        "_dsack_round",
        "_dupthresh",
        "_lt_bytes",
        "_prior_cwnd",
        "_prior_ssthresh",
        "_reo_persist",
        "_rexmit_log",
        "_rexmit_lost",
        "_rexmit_ranges",
        "_tx_ends",
        "_tx_times",
        "_undo_deadline",
        "_undo_dsack_ok",
        "board",
        "dupacks",
        "episode",
        "frto",
        "high_rxt",
        "in_recovery",
        "mss",
        "prr_delivered",
        "prr_out",
        "rack_end_seq",
        "rack_min_rtt",
        "rack_rtt",
        "rack_timeout",
        "rack_xmit_ts",
        "recover",
        "recover_fs",
        "reo_wnd_mult",
        "reordering_seen",
        "rescue_rxt",
        "resume_at_snd_max",
        "retrans_ts",
        "rexmit_head",
        "sack_ok",
        "tlp_end_seq",
        "tlp_is_retrans",
        "undo_marker",
    )

    def __init__(
        self, cc: CongestionControl, counters: Counters, *, mss: int, dupthresh: int, iss: Seq
    ) -> None:
        self._cc = cc
        self._counters = counters
        self._dupthresh = dupthresh
        self.mss = mss
        self.sack_ok = False
        self.board = SackScoreboard(mss, dupthresh)
        self.dupacks = 0
        self._lt_bytes = 0  # RFC 3042 limited-transmit bytes since the last new ACK
        self.in_recovery = False
        self.recover = iss
        self.high_rxt = iss
        self.rescue_rxt: Seq | None = None
        self.rexmit_head = False  # NewReno: retransmit the segment at SND.UNA
        # RFC 6937 PRR state (meaningful in SACK recovery only).
        self.prr_delivered = 0
        self.prr_out = 0
        self.recover_fs = 0
        # Spurious-retransmission detection and undo (see the module docstring).
        self.episode = EPISODE_NONE
        self.undo_marker: Seq | None = None  # SND.UNA when the episode began
        self.retrans_ts: int | None = None  # RFC 3522 RetransmitTS
        self._rexmit_ranges: list[list[int]] = []  # [start, end) offsets from the marker
        self._undo_dsack_ok = True
        self._undo_deadline = 0.0
        self._prior_cwnd = 0
        self._prior_ssthresh = 0
        #: Set by an undo of an RTO: the connection resumes at SND.MAX (RFC 4015 §3.2).
        self.resume_at_snd_max = False
        #: RFC 5682 F-RTO: 0 off; 1 the RTO's retransmission went, the first ACK after
        #: it decides (step 2); 2 new data went, the second ACK decides (step 3).
        self.frto = 0
        # RFC 8985 RACK (see the module docstring).
        self._tx_ends: list[Seq] = []  # end of each send call's data, in send order
        self._tx_times: list[float] = []  # and its time
        self.rack_xmit_ts: float | None = None  # RACK.xmit_ts
        self.rack_end_seq: Seq | None = None  # RACK.end_seq (set with RACK.xmit_ts)
        self.rack_rtt = 0.0  # RACK.rtt
        self.rack_min_rtt: float | None = None  # RACK.min_RTT
        self.reordering_seen = False  # RACK.reordering_seen
        self.reo_wnd_mult = 1  # RACK.reo_wnd_mult
        self._dsack_round: Seq | None = None  # RACK.dsack_round
        self._reo_persist = REO_WND_PERSIST  # RACK.reo_wnd_persist
        #: When the RACK reordering timer (§6.3) is due, None when not armed.
        self.rack_timeout: float | None = None
        # Retransmissions of this recovery, in send order: [start, end, time]; and the
        # ranges found lost again, to send first (module docstring).
        self._rexmit_log: list[tuple[Seq, Seq, float]] = []
        self._rexmit_lost: list[tuple[Seq, Seq]] = []
        # RFC 8985 §7.1 TLP state: SND.NXT after the outstanding probe (None: none),
        # and whether that probe was a retransmission.
        self.tlp_end_seq: Seq | None = None
        self.tlp_is_retrans = False

    def configure(self, mss: int, sack_ok: bool) -> None:
        """After the handshake: the send MSS and whether SACK was negotiated."""
        self.mss = mss
        self.sack_ok = sack_ok
        self.board = SackScoreboard(mss, self._dupthresh)

    def set_mss(self, mss: int) -> None:
        """A smaller path MTU mid-connection (``TcpConnection.path_too_big``): the
        scoreboard keeps its ranges and counts in the new MSS."""
        self.mss = mss
        self.board.mss = mss

    @property
    def undo_pending(self) -> bool:
        """A recovery episode may still be found spurious and undone."""
        return self.undo_marker is not None

    @property
    def sacked_bytes(self) -> int:
        return self.board.sacked_bytes

    @property
    def hot_ok(self) -> bool:
        """Nothing is under way that the C data plane does not carry on (docs/dataplane.md):
        no recovery, no NewReno head retransmission, no timestamp verdict owed on the
        first ACK after a retransmission (RFC 3522 §2), no F-RTO (RFC 5682 §2), no loss
        probe outstanding. What C carries (``save_hot``): the SACKed ranges (at most
        ``HOT_SACK_RANGES``, the caller's test), duplicate ACKs and limited transmit
        with SACK in use, RACK's state and reordering timer, and an open undo episode
        (C declines a D-SACK, so one always reaches on_ack here)."""
        return (not self.in_recovery and not self.rexmit_head and self.retrans_ts is None
                and self.frto == 0 and self.tlp_end_seq is None
                and (self.sack_ok or (self.dupacks == 0 and self._lt_bytes == 0)))

    def save_hot(self, tcb: Any) -> None:
        """What the C data plane needs (``struct dp_tcb``): of an open undo episode, its
        deadline, for the rule on_ack applies to every ACK (an ACK after it ends the
        episode: its D-SACKs would have come back by then); RACK's send-time records
        (the newest ``HOT_TX_RECORDS``) and state, the scoreboard, the duplicate ACKs
        and limited transmit's bytes, which C keeps as LossRecovery.on_ack would
        (``tx_note``, ``sack_ack``)."""
        tcb.undo_open = int(self.undo_marker is not None)
        tcb.undo_until = self._undo_deadline
        tcb.undo_expired = 0
        ends, times = self._tx_ends[-HOT_TX_RECORDS:], self._tx_times[-HOT_TX_RECORDS:]
        for i, (end, at) in enumerate(zip(ends, times, strict=True)):
            tcb.tx[i].end = int(end)
            tcb.tx[i].at = at
        tcb.tx_count = len(ends)
        tcb.rack_xmit_ts = -1.0 if self.rack_xmit_ts is None else self.rack_xmit_ts
        tcb.rack_end_seq = 0 if self.rack_end_seq is None else int(self.rack_end_seq)
        tcb.rack_rtt = self.rack_rtt
        tcb.rack_min_rtt = -1.0 if self.rack_min_rtt is None else self.rack_min_rtt
        self.board.save_hot(tcb)
        tcb.dupacks = self.dupacks
        tcb.lt_bytes = self._lt_bytes
        tcb.dupthresh = self._dupthresh
        tcb.reo_wnd_mult = self.reo_wnd_mult
        tcb.reordering_seen = int(self.reordering_seen)
        tcb.rack_timeout = 0.0 if self.rack_timeout is None else self.rack_timeout
        tcb.enter_pending = 0

    def load_hot(self, tcb: Any) -> None:
        """Back from C: the episode ends if an ACK C took came after its deadline.
        C ran the flow outside any recovery (hot_ready), so no recovery point lies
        ahead: RecoveryPoint comes to SND.UNA (see ``_follow_una``). RACK's records
        and state are C's."""
        if tcb.undo_open and tcb.undo_expired:
            self._end_episode()
        self.recover = Seq(int(tcb.snd_una))
        records = tcb.tx[0:int(tcb.tx_count)]
        self._tx_ends = [Seq(int(r.end)) for r in records]
        self._tx_times = [float(r.at) for r in records]
        xmit, min_rtt = float(tcb.rack_xmit_ts), float(tcb.rack_min_rtt)
        self.rack_xmit_ts = None if xmit < 0 else xmit
        self.rack_end_seq = None if xmit < 0 else Seq(int(tcb.rack_end_seq))
        self.rack_rtt = float(tcb.rack_rtt)
        self.rack_min_rtt = None if min_rtt < 0 else min_rtt
        self.board.load_hot(tcb)
        self.dupacks = int(tcb.dupacks)
        self._lt_bytes = int(tcb.lt_bytes)
        if tcb.reordering_seen:
            self._reordering()
        timeout = float(tcb.rack_timeout)
        self.rack_timeout = timeout if timeout > 0 else None

    def enter_from_c(self, snd_una: Seq, snd_max: Seq, srtt: float | None, now: float,
                     delivered: int) -> tuple[Seq, int] | None:
        """The C data plane took an ACK on which ``on_ack`` enters recovery and handed
        the connection back (after ``load_hot``): RACK's verdict at that moment again
        (``rack_detect`` is a function of the state C kept), then recovery begins as
        on_ack begins it; answers as on_ack does."""
        self.rack_detect(srtt, now)
        return self._enter(snd_una, snd_max, now, delivered)

    # ------------------------------------------------------------------ per ACK

    def _follow_una(self, snd_una: Seq) -> None:
        """Outside recovery, once SND.UNA has passed RecoveryPoint (RFC 6582 "recover",
        RFC 6675), the point comes along with it. Its rules only ask whether SND.UNA is
        below it, and sequence numbers compare modulo 2^32: a point left behind would
        read as ahead of SND.UNA again 2^31 bytes later (two seconds at 10 Gbit/s), and
        then no fast recovery could start, no loss probe go, and C never take the flow."""
        if not self.in_recovery and not snd_una < self.recover:
            self.recover = snd_una

    def on_ack(
        self,
        snd_una: Seq,
        snd_max: Seq,
        acked: int,
        dupack: bool,
        sack_blocks: Iterable[tuple[Seq, Seq]],
        flight_before: int,
        srtt: float | None,
        now: float,
        *,
        tsecr: int | None = None,
        seg_ack: Seq | None = None,
        cwnd_used: int | None = None,
    ) -> tuple[Seq, int] | None:
        """One acceptable ACK, after SND.UNA moved to ``snd_una`` (``acked`` bytes).
        ``tsecr`` is the ACK's TSecr when timestamps are in use (RFC 7323);
        ``seg_ack`` its SEG.ACK (SND.UNA when not given), which a D-SACK lies below;
        ``cwnd_used`` the most of cwnd this window of data used (``flight_before``
        when not given), which decides whether the ACK may grow cwnd.

        Returns (start, length) to retransmit at once when this ACK starts SACK
        recovery (RFC 6675 §5 step (4.3)); None otherwise.
        """
        self._follow_una(snd_una)
        blocks = tuple(sack_blocks)
        sacked_new = 0
        board = self.board
        sacked_before = board.sacked_bytes
        fack_before = board.high_sacked
        dsack = False
        if self.sack_ok:
            if blocks:
                dsack = self._on_dsack(blocks, snd_una if seg_ack is None else seg_ack)
            # RFC 6675 §5: update the scoreboard from every ACK, with or without SACK
            # blocks, so that data the cumulative ACK now covers leaves it at once.
            sacked_new = board.update(snd_una, blocks, snd_max)
            self._rack_ack(snd_una, acked, sacked_new, fack_before, dsack, srtt, now)
            if self.tlp_end_seq is not None:
                self._tlp_ack(snd_una, dupack, blocks, dsack, flight_before, now)
        if self.undo_marker is not None and acked > 0 and self.retrans_ts is not None and tsecr:
            # RFC 3522 §2 steps (2)-(3): the first acceptable ACK after the
            # retransmission decides: a TSecr older than RetransmitTS echoes the
            # original transmission, so the retransmission was spurious.
            spurious = ts_before(tsecr, self.retrans_ts)
            self.retrans_ts = None
            if spurious:
                self._counters["spurious_detected_timestamps"] += 1
                self._undo(snd_una, now)
        if (self.undo_marker is not None and dsack and self._undo_dsack_ok
                and not self._rexmit_ranges and self._undo_has_rexmits()):
            # RFC 3708 §3: every retransmission of the episode came back D-SACKed.
            self._counters["spurious_detected_dsack"] += 1
            self._undo(snd_una, now)
        if (self.undo_marker is not None and not self.in_recovery
                and now > self._undo_deadline):
            self._end_episode()  # the D-SACKs would have come back by now
        cc, mss = self._cc, self.mss
        if self.in_recovery:
            if snd_una >= self.recover:
                # Full ACK: leave recovery (RFC 6582 §3.2 step 3, RFC 6675 §5).
                self.in_recovery = False
                self.dupacks = 0
                if not self.sack_ok:
                    flight = snd_max - snd_una
                    cc.cwnd = min(cc.ssthresh, max(flight, mss) + mss)
                else:
                    cc.cwnd = cc.ssthresh  # RFC 6937 §3: on exit, cwnd = ssthresh
                cc.on_recovery_exit(now)
                self._counters["recovery_exits"] += 1
                self._rexmit_log.clear()
                self._rexmit_lost.clear()
            elif self.sack_ok:
                # RFC 6937 §3: DeliveredData = change in SND.UNA + change in SACKed.
                delivered = acked + self.board.sacked_bytes - sacked_before
                if delivered > 0:
                    self._prr_update(snd_una, snd_max, delivered)
            elif acked > 0:
                # RFC 6582 §3.2 step 3 partial ACK: resend the next hole, deflate.
                self.rexmit_head = True
                cc.cwnd = max(cc.cwnd - acked + (mss if acked >= mss else 0), mss)
            elif dupack:
                cc.cwnd += mss  # RFC 5681 §3.2 step 4: inflation per extra dupack
            return None

        if acked > 0:
            self.dupacks = 0
            self._lt_bytes = 0
            used = flight_before if cwnd_used is None else cwnd_used
            if cwnd_limited(used, cc.cwnd):
                # RFC 9438 §4.2: CUBIC looks one smoothed RTT ahead.
                cc.on_ack(now, acked, srtt, flight_before)
        elif dsack and sacked_new == 0:
            # RFC 2883 §4-5: the ACK a duplicate segment triggers reports that
            # duplicate, not a hole: it is no evidence of loss (nor is it for Linux).
            return None
        elif dupack or (self.sack_ok and sacked_new > 0 and acked == 0):
            self.dupacks += 1
        else:
            return None
        if snd_una < self.recover or snd_max == snd_una:
            return None  # RFC 6582 §3.2 step 2 / RFC 6675 §5.1: not before RecoveryPoint
        if self.sack_ok and self.board.rack_mode:
            # RFC 8985 §6: time decides, not the number of duplicate ACKs.
            enter = self.board.is_lost(snd_una)
        else:
            enter = self.dupacks >= self._dupthresh
            if self.sack_ok and not enter:
                enter = self.board.is_lost(snd_una)
        if not enter:
            return None
        delivered = acked + self.board.sacked_bytes - sacked_before
        return self._enter(snd_una, snd_max, now, max(delivered, 0))

    def _enter(
        self, snd_una: Seq, snd_max: Seq, now: float, delivered: int
    ) -> tuple[Seq, int] | None:
        """Fast retransmit / fast recovery (RFC 5681 §3.2, RFC 6675 §5 step 4)."""
        cc, mss = self._cc, self.mss
        self._counters["fast_retransmits"] += 1
        self.in_recovery = True
        self.tlp_end_seq = None  # RFC 8985 §7.4: recovery takes over (Linux: CWR/Recovery)
        # RFC 8985 §6.2 step 4: after 16 recoveries without a D-SACK round, the
        # reordering window's multiplier starts again from 1.
        self._reo_persist -= 1
        if self._reo_persist <= 0:
            self.reo_wnd_mult = 1
            self._reo_persist = REO_WND_PERSIST
        self.recover = snd_max
        self._rexmit_log.clear()
        self._rexmit_lost.clear()
        # A new episode for undo (RFC 3708 §3, RFC 4015 §3.2): what is replaced.
        self._begin_episode(EPISODE_FAST, snd_una)
        # RFC 5681 §3.2 step 2: data sent by limited transmit is left out of FlightSize.
        flight = max(snd_max - snd_una - self._lt_bytes, mss)
        self._lt_bytes = 0
        cc.on_congestion(now, flight)
        if not self.sack_ok:
            # RFC 5681 §3.2 steps 2-3: retransmit, cwnd = ssthresh + 3*SMSS.
            self.rexmit_head = True
            cc.cwnd = cc.ssthresh + self._dupthresh * mss
            return None
        self.high_rxt = snd_una
        # RFC 6937 §3, at the beginning of recovery: prr_delivered = prr_out = 0 and
        # RecoverFS = SND.NXT - SND.UNA; the ACK that starts recovery is the first
        # "on every ACK" (as Linux), and the retransmission of (4.3) counts in prr_out.
        self.prr_delivered = 0
        self.prr_out = 0
        self.recover_fs = max(snd_max - snd_una, mss)
        if delivered > 0:
            self._prr_update(snd_una, snd_max, delivered)
        # RFC 6675 §5 step (4.3): retransmit the first lost segment right away, and set
        # HighRxt and RescueRxt to its highest octet, so that neither it nor a
        # premature rescue goes out again before the peer reports on it.
        nxt = self.board.next_seg(snd_una, snd_max, self.high_rxt, False)
        start, length = nxt if nxt and nxt[0] != snd_max else (snd_una, mss)
        self.high_rxt = Seq.max(self.high_rxt, start + length)
        self.rescue_rxt = start + length - 1
        return start, length

    # ------------------------------------------------------------------ PRR

    def _prr_update(self, snd_una: Seq, snd_max: Seq, delivered: int) -> None:
        """RFC 6937 §3, on every ACK during (SACK) recovery: cwnd = pipe + sndcnt.
        Only for an ACK that delivered data (as Linux's tcp_cwnd_reduction): one
        that delivered nothing (a window update, a segment carrying data) would only
        move cwnd down to pipe, send nothing, and make the outcome depend on which
        path (fast or slow) took that segment."""
        cc = self._cc
        self.prr_delivered += delivered
        pipe = self._pipe(snd_una, snd_max)
        ssthresh = cc.ssthresh
        if pipe > ssthresh:
            # Proportional Rate Reduction: sndcnt = CEIL(prr_delivered * ssthresh /
            # RecoverFS) - prr_out.
            sndcnt = -(-self.prr_delivered * ssthresh // self.recover_fs) - self.prr_out
        else:
            # PRR-SSRB (slow start reduction bound): limit = MAX(prr_delivered -
            # prr_out, DeliveredData) + MSS; sndcnt = MIN(ssthresh - pipe, limit).
            limit = max(self.prr_delivered - self.prr_out, delivered) + self.mss
            sndcnt = min(ssthresh - pipe, limit)
        cc.cwnd = pipe + max(sndcnt, 0)

    def _pipe(self, snd_una: Seq, snd_max: Seq) -> int:
        """RFC 6675 SetPipe(), less the retransmissions found lost (they left the
        network; SetPipe counts every octet below HighRxt as retransmitted once)."""
        pipe = self.board.pipe(snd_una, snd_max, self.high_rxt)
        if self._rexmit_lost:
            pipe = max(pipe - self._lost_rexmit_bytes(), 0)
        return pipe

    def sent(self, n: int) -> None:
        """``n`` bytes went out (new or retransmitted): RFC 6937 §3 "On any data
        transmission or retransmission: prr_out += (data sent)"."""
        if self.in_recovery:
            self.prr_out += n

    # ------------------------------------------------------------------ undo

    def _begin_episode(self, kind: int, snd_una: Seq) -> None:
        cc = self._cc
        self.episode = kind
        self.undo_marker = snd_una
        self.retrans_ts = None
        self._rexmit_ranges = []
        self._undo_dsack_ok = True
        self._undo_deadline = 0.0
        # RFC 4015 §3.2 (1): remember the state the reduction replaces (pipe_prev is
        # max(FlightSize, ssthresh); Linux saves cwnd and ssthresh, as here).
        self._prior_cwnd = cc.cwnd
        self._prior_ssthresh = cc.ssthresh

    def _end_episode(self) -> None:
        self.frto = 0
        self.episode = EPISODE_NONE
        self.undo_marker = None
        self.retrans_ts = None
        self._rexmit_ranges = []

    def _undo_has_rexmits(self) -> bool:
        return self._undo_deadline > 0.0  # set by the first retransmission

    def on_retransmit(self, seq: Seq, n: int, tsval: int | None, hold: float,
                      now: float) -> None:
        """[seq, seq+n) was retransmitted at ``now`` carrying ``tsval`` (None without
        timestamps). ``hold``: how long D-SACKs for it may take to come back."""
        marker = self.undo_marker
        if marker is None or n <= 0:
            return
        if self.retrans_ts is None and not self._undo_has_rexmits() and tsval is not None:
            self.retrans_ts = tsval  # RFC 3522 §2 step (1): RetransmitTS
        self._undo_deadline = now + hold
        lo = seq - marker
        hi = lo + n
        if lo < 0:
            self._undo_dsack_ok = False  # not of this episode: no D-SACK verdict
            return
        ranges = self._rexmit_ranges
        if ranges and ranges[-1][1] == lo:
            ranges[-1][1] = hi
        elif len(ranges) >= MAX_UNDO_RANGES:
            self._undo_dsack_ok = False
        else:
            ranges.append([lo, hi])

    def _on_dsack(self, blocks: tuple[tuple[Seq, Seq], ...], seg_ack: Seq) -> bool:
        """RFC 2883 §5 / RFC 3708 §2: the first SACK block is a D-SACK when it lies
        below the ACK's own cumulative ACK (not SND.UNA: a reordered older ACK has
        ordinary SACK blocks below SND.UNA) or inside the second block. Its octets are taken off
        the episode's retransmitted ranges (RFC 3708 §3). True if it was one."""
        left, right = blocks[0]
        if not left < right:
            return False
        below = right <= seg_ack
        inside = len(blocks) > 1 and blocks[1][0] <= left and right <= blocks[1][1]
        if not (below or inside):
            return False
        self._counters["dsack_received"] += 1
        marker = self.undo_marker
        if marker is None or not self._rexmit_ranges:
            return True
        lo, hi = left - marker, right - marker
        kept: list[list[int]] = []
        for a, b in self._rexmit_ranges:
            if hi <= a or b <= lo:
                kept.append([a, b])
                continue
            if a < lo:
                kept.append([a, lo])
            if hi < b:
                kept.append([hi, b])
        self._rexmit_ranges = kept
        return True

    def frto_spurious(self, snd_una: Seq, now: float) -> None:
        """RFC 5682 §2 step 3b: the timeout was spurious: undo it (RFC 4015 §3.2)."""
        self._counters["spurious_detected_frto"] += 1
        self._undo(snd_una, now)

    def _undo(self, snd_una: Seq, now: float) -> None:
        """The episode was spurious: restore cwnd and ssthresh (RFC 4015 §3.2; as
        Linux's tcp_undo_cwnd_reduction, never below what they are now)."""
        cc = self._cc
        kind = self.episode
        if self.in_recovery:
            self.in_recovery = False
            self.dupacks = 0
            self.rexmit_head = False  # NewReno: nothing more to resend
            cc.on_recovery_exit(now)
            self.recover = snd_una  # a real loss may start recovery again
            self._rexmit_log.clear()
            self._rexmit_lost.clear()
        cc.cwnd = max(cc.cwnd, self._prior_cwnd)
        cc.ssthresh = max(cc.ssthresh, self._prior_ssthresh)
        counters = self._counters
        self._reordering()  # what looked lost was only late
        if kind == EPISODE_RTO:
            counters["undo_rto"] += 1
            # RFC 4015 §3.2: after a spurious timeout, resume with new data rather
            # than go back N (the connection sets SND.NXT = SND.MAX).
            self.resume_at_snd_max = True
        else:
            counters["undo_fast_recovery"] += 1
        self._end_episode()

    # ------------------------------------------------------------------ RACK

    def note_sent(self, end: Seq, now: float, snd_una: Seq) -> None:
        """New data up to ``end`` went out at ``now`` (RACK needs its send time);
        records below ``snd_una`` go."""
        if not self.sack_ok:
            return  # RACK needs SACK (RFC 8985 §2)
        ends, times = self._tx_ends, self._tx_times
        if ends and not ends[0] > snd_una:
            k = bisect.bisect_left(ends, snd_una)
            del ends[:k], times[:k]
        if ends:
            if not end > ends[-1]:
                return
            if times[-1] == now:
                ends[-1] = end  # the same send time: one record
                return
            if len(ends) >= MAX_TX_RECORDS:
                del ends[0], times[0]
        ends.append(end)
        times.append(now)

    def tx_records(self) -> list[tuple[Seq, float]]:
        """RACK's send-time records, oldest first: (end, when)."""
        return list(zip(self._tx_ends, self._tx_times, strict=True))

    def _tx_time(self, octet: Seq) -> float | None:
        """When the octet ``octet`` was (first) sent, if recorded."""
        i = bisect.bisect_right(self._tx_ends, octet)
        return self._tx_times[i] if i < len(self._tx_times) else None

    def _reordering(self) -> None:
        if not self.reordering_seen:
            self.reordering_seen = True
            self._counters["rack_reordering_seen"] += 1

    def _rack_ack(self, snd_una: Seq, acked: int, sacked_new: int, fack_before: Seq | None,
                  dsack: bool, srtt: float | None, now: float) -> None:
        """RFC 8985 §6.2 on every ACK with SACK in use: update RACK's state from
        what was delivered, then detect losses (§6.2 step 5)."""
        ends = self._tx_ends
        # Records wholly acknowledged are no longer of interest; the one ending at
        # SND.UNA still times the octet just below it (delivered by this ACK).
        k = bisect.bisect_left(ends, snd_una)
        if k:
            del ends[:k], self._tx_times[:k]
        board = self.board
        # Steps 1-2: the most recently sent segment this ACK delivered; one that was
        # retransmitted is ambiguous and is skipped (only originals are timed).
        top: Seq | None = None
        if sacked_new > 0:
            high = board.high_sacked
            if high is not None and (fack_before is None or high > fack_before):
                top = high - 1
            elif self.undo_marker is None:
                # Step 3: a segment below RACK.fack delivered now, never resent.
                self._reordering()
        elif acked > 0:
            top = snd_una - 1
            if (fack_before is not None and fack_before > snd_una - acked
                    and self.undo_marker is None):
                # The hole below SACKed data was filled by the original transmission:
                # reordered, not lost (step 3).
                self._reordering()
        if top is not None and not (self.in_recovery and top < self.high_rxt):
            sent = self._tx_time(top)
            if sent is not None and (self.rack_xmit_ts is None or sent >= self.rack_xmit_ts):
                # RACK.end_seq: of the segment sent last (a tie in time goes to the
                # higher sequence, RFC 8985 §6.2 RACK_sent_after).
                end = top + 1
                if (self.rack_end_seq is None or sent != self.rack_xmit_ts
                        or end > self.rack_end_seq):
                    self.rack_end_seq = end
                self.rack_xmit_ts = sent
                self.rack_rtt = now - sent
                if self.rack_min_rtt is None or self.rack_rtt < self.rack_min_rtt:
                    self.rack_min_rtt = self.rack_rtt
        if dsack:
            # Step 4: a D-SACK round widens the reordering window, once per round.
            self._reordering()
            if self._dsack_round is None or snd_una >= self._dsack_round:
                self._dsack_round = ends[-1] if ends else snd_una
                self.reo_wnd_mult += 1
                self._reo_persist = REO_WND_PERSIST
        # RFC 8985 §7.4.1: after a loss probe RACK decides what the probe's ACK says
        # is lost, reordering seen or not.
        board.rack_mode = self.reordering_seen or self.tlp_end_seq is not None
        self.rack_detect(srtt, now)

    def reo_wnd(self, srtt: float | None) -> float:
        """RFC 8985 §6.2 step 4: RACK.reo_wnd = min(min_RTT / 4 * reo_wnd_mult,
        SRTT); before reordering was seen, 0 in recovery or with DupThresh segments
        SACKed (RACK only decides then after a loss probe: RFC 6675 otherwise)."""
        if not self.reordering_seen and (
                self.in_recovery or self.board.sacked_bytes >= self._dupthresh * self.mss):
            return 0.0
        wnd = (self.rack_min_rtt or 0.0) / 4 * self.reo_wnd_mult
        return min(wnd, srtt) if srtt is not None else wnd

    def rack_detect(self, srtt: float | None, now: float) -> None:
        """RFC 8985 §6.2 step 5: an unSACKed segment sent before RACK.xmit_ts is lost
        once RACK.rtt + RACK.reo_wnd have passed since it was sent; for the first one
        not yet past that the reordering timer (§6.3) is set to when it will be."""
        board = self.board
        self.rack_timeout = None
        xmit = self.rack_xmit_ts
        if xmit is None:
            board.rack_lost_below = None
            return
        wait = self.rack_rtt + self.reo_wnd(srtt)
        # (A local, not the attribute: mypyc keeps the narrowing to None of the
        # assignment above across the calls that set it.)
        timeout = self._detect_lost_rexmits(xmit, wait, now) if self._rexmit_log else None
        self.rack_timeout = timeout
        if not board.rack_mode:
            board.rack_lost_below = None
            return
        ends, times = self._tx_ends, self._tx_times
        # Send times grow along the sequence space (originals only), so the lost
        # octets are the unSACKed ones below the first record still in time; never
        # above RACK.end_seq: what went in the same send as the segment delivered, after
        # it, was sent later (RFC 8985 §6.2 RACK_sent_after breaks the tie by sequence).
        i, n = 0, len(ends)
        while i < n and times[i] <= xmit and times[i] + wait <= now:
            i += 1
        lost: Seq | None = ends[i - 1] if i else None
        end_seq = self.rack_end_seq
        if lost is not None and end_seq is not None and end_seq < lost:
            lost = end_seq
        board.rack_lost_below = lost
        if i < n and times[i] <= xmit and board.sacked_bytes:
            # A hole below SACKed data waits for the window to pass.
            at = times[i] + wait
            if timeout is None or at < timeout:
                self.rack_timeout = at

    def note_retransmit(self, seq: Seq, n: int, now: float) -> None:
        """[seq, seq+n) was retransmitted at ``now`` (logged during fast recovery with
        SACK, for the detection of lost retransmissions)."""
        if not (self.in_recovery and self.sack_ok) or n <= 0:
            return
        log = self._rexmit_log
        if len(log) >= MAX_TX_RECORDS:
            del log[0]
        log.append((seq, seq + n, now))

    def _detect_lost_rexmits(self, xmit: float, wait: float, now: float) -> float | None:
        """RFC 8985 §6.2 step 5 for retransmissions: one sent no later than RACK.xmit_ts
        (a segment sent after it was delivered; a tie is broken by sequence, and new
        data lies above every retransmission) and not delivered RACK.rtt +
        RACK.reo_wnd after it went is lost; for the first one not yet past that, the
        reordering timer (§6.3): when it is due, returned (None: not needed)."""
        board = self.board
        timeout: float | None = None
        kept: list[tuple[Seq, Seq, float]] = []
        for left, right, sent in self._rexmit_log:
            if board.unsacked(left, right) == 0:
                continue  # delivered
            if sent > xmit:
                kept.append((left, right, sent))
            elif sent + wait <= now:
                self._rexmit_lost.append((left, right))
                self._counters["rack_lost_retransmissions"] += 1
            else:
                kept.append((left, right, sent))
                at = sent + wait
                if timeout is None or at < timeout:
                    timeout = at
        self._rexmit_log = kept
        return timeout

    def _lost_rexmit_bytes(self) -> int:
        board = self.board
        return sum(board.unsacked(left, right) for left, right in self._rexmit_lost)

    def _next_lost_rexmit(self, snd_una: Seq) -> tuple[Seq, int] | None:
        """The first octets of a retransmission found lost, to send again (at most one
        SMSS; the rest stays queued), or None."""
        lost, board = self._rexmit_lost, self.board
        while lost:
            left, right = lost[0]
            left = board.first_unsacked(Seq.max(left, snd_una))
            if not left < right:
                del lost[0]
                continue
            n = min(right - left, self.mss)
            if left + n < right:
                lost[0] = (left + n, right)
            else:
                del lost[0]
            return left, n
        return None

    def on_rack_timer(self, snd_una: Seq, snd_max: Seq, srtt: float | None,
                      now: float) -> tuple[Seq, int] | None:
        """RFC 8985 §6.3: the reordering timer fired: detect again, and start
        recovery if SND.UNA's segment is now lost (answers as ``on_ack``)."""
        self.rack_detect(srtt, now)
        if self.in_recovery or snd_una < self.recover or snd_max == snd_una:
            return None
        if not self.board.is_lost(snd_una):
            return None
        return self._enter(snd_una, snd_max, now, 0)

    # ------------------------------------------------------------------ sending

    def limited_transmit_allowance(self) -> int:
        """RFC 3042 §2 limited transmit: on each of the first two duplicate ACKs one new
        segment may go, so outstanding data reaches at most cwnd + 2*SMSS (cwnd itself
        unchanged; the receiver's window still applies). It keeps the ACK clock going
        when a small window would otherwise wait for an RTO."""
        dupacks = self.dupacks
        if dupacks == 0 or self.in_recovery or dupacks >= self._dupthresh:
            return 0
        return min(dupacks, 2) * self.mss

    def new_data_sent(self, n: int) -> None:
        """``n`` bytes of new data went out (for RFC 3042 accounting)."""
        if self.dupacks and not self.in_recovery:
            self._lt_bytes += n  # sent on a duplicate ACK
            self._counters["limited_transmit_segments"] += 1

    def next_seg(
        self, snd_una: Seq, snd_max: Seq, cwnd: int, new_data_ok: bool
    ) -> tuple[Seq, int] | None:
        """RFC 6675 §5 step (C): what to send next while cwnd - pipe >= 1 SMSS, or
        None. ``board.last_rule`` says which NextSeg rule chose it (2: new data)."""
        board = self.board
        if cwnd - self._pipe(snd_una, snd_max) < self.mss:
            return None
        if self._rexmit_lost:
            lost = self._next_lost_rexmit(snd_una)
            if lost is not None:
                board.last_rule = 1  # a lost segment: NextSeg (1)'s kind (HighRxt stays)
                return lost
        # RFC 6675 §4 NextSeg (2) applies only when unsent data exists and the peer's
        # window admits it (``new_data_ok``); otherwise rules (3) and (4) get a turn.
        return board.next_seg(
            snd_una, snd_max, self.high_rxt, self._rescue_ok(snd_una), new_data_ok=new_data_ok
        )

    def retransmitted(self, start: Seq, length: int) -> None:
        """The segment ``next_seg`` chose (rules 1, 3, 4) was retransmitted."""
        if self.board.last_rule == 4:
            # RFC 6675 §5 (C.3): a rescue sets RescueRxt = RecoveryPoint and leaves
            # HighRxt alone. Ask the scoreboard which rule fired: a rescue can start
            # below the highest SACK when the top SACK block reaches SND.MAX.
            self.rescue_rxt = self.recover - 1
        else:
            self.high_rxt = Seq.max(self.high_rxt, start + length)  # (C.2)

    def _rescue_ok(self, snd_una: Seq) -> bool:
        """RFC 6675 §4 NextSeg (4): a rescue only while HighACK > RescueRxt (or
        RescueRxt undefined); HighACK is the highest octet cumulatively ACKed."""
        rescue = self.rescue_rxt
        return rescue is None or snd_una - 1 > rescue

    # ------------------------------------------------------------------ timeouts

    def on_rto(self, snd_max: Seq, flight: int, now: float, *,
               snd_una: Seq | None = None, frto: bool = False) -> None:
        """RFC 6298 §5.5-5.6 as seen by recovery: loss window, scoreboard discarded.
        ``frto``: F-RTO may follow (RFC 5682 §2 step 1) if this timeout begins an
        episode (not a backed-off one, nor one in fast recovery)."""
        self.frto = 0
        if snd_una is not None and not (
            self.episode == EPISODE_RTO and self.undo_marker == snd_una
        ) and not self.in_recovery:
            # A new episode, unless this is a backed-off RTO of the same one or the
            # timeout struck during fast recovery (undo then returns to the state
            # before that recovery, as Linux's tcp_enter_loss).
            self._begin_episode(EPISODE_RTO, snd_una)
            if frto:
                self.frto = 1
        elif self.undo_marker is not None:
            self.episode = EPISODE_RTO
        self._cc.on_rto(now, flight)  # RFC 5681 eq. 4, cwnd = 1 SMSS
        self.board.clear()  # RFC 6675 §5.1 (and RFC 2018 §8: SACK may renege)
        self.board.rack_lost_below = None
        self.rack_timeout = None
        self.tlp_end_seq = None  # RFC 8985 §7: RTO recovery, no probe outstanding
        self._rexmit_log.clear()
        self._rexmit_lost.clear()
        self.in_recovery = False
        self.recover = snd_max  # no new recovery before this is ACKed (RFC 6582 §4)
        self.dupacks = 0
        self._lt_bytes = 0
        self.rexmit_head = False

    def clear(self) -> None:
        self.board.clear()
        self._end_episode()
        self._tx_ends.clear()
        self._tx_times.clear()
        self.rack_timeout = None
        self.tlp_end_seq = None
        self._rexmit_log.clear()
        self._rexmit_lost.clear()

    # ------------------------------------------------------------------ TLP

    def tlp_allowed(self, snd_una: Seq) -> bool:
        """RFC 8985 §7.2: a loss probe may be scheduled: SACK in use (§2), neither
        fast recovery nor RTO recovery under way (SND.UNA has passed the recovery
        point), nothing delivered out of order (no SACKed data, no duplicate ACKs),
        and no probe of this flight outstanding (at most one, as Linux)."""
        return (self.sack_ok and not self.in_recovery and not self.rexmit_head
                and self.dupacks == 0 and self.board.sacked_bytes == 0
                and self.tlp_end_seq is None and not snd_una < self.recover)

    def pto(self, srtt: float | None, flight: int, now: float, rto_at: float | None) -> float:
        """RFC 8985 §7.2 TLP_calc_PTO, as a deadline: now + 2*SRTT, + TLP.max_ack_delay
        with one segment in flight (else Linux's 2 ms), 1 s before any RTT sample;
        never later than the RTO's expiration."""
        if srtt is None:
            pto = TLP_INITIAL_PTO
        else:
            pto = 2 * srtt + (TLP_MAX_ACK_DELAY if flight <= self.mss else TLP_MIN_EXTRA)
        at = now + pto
        if rto_at is not None and at > rto_at:
            at = rto_at
        return at

    def tlp_sent(self, end: Seq, is_retrans: bool) -> None:
        """RFC 8985 §7.3: a probe went; ``end`` is SND.NXT after it."""
        self.tlp_end_seq = end
        self.tlp_is_retrans = is_retrans
        if is_retrans:
            self._counters["tlp_probes_retransmitted"] += 1
        else:
            self._counters["tlp_probes_new_data"] += 1

    def _tlp_ack(self, snd_una: Seq, dupack: bool,
                 blocks: tuple[tuple[Seq, Seq], ...], dsack: bool, flight_before: int,
                 now: float) -> None:
        """RFC 8985 §7.4 TLP_process_ack: what the ACKs say about the probe."""
        end = self.tlp_end_seq
        if end is None or snd_una < end:
            return
        if not self.tlp_is_retrans:
            self.tlp_end_seq = None  # a probe of new data was delivered
        elif dsack and blocks[0][1] == end:
            # §7.4.1: the probe's D-SACK: the original arrived too, nothing was lost.
            self.tlp_end_seq = None
            self._counters["tlp_no_loss"] += 1
        elif snd_una > end:
            # §7.4.2: the probe repaired a loss (no D-SACK came for it): react as to a
            # congestion event, once, as Linux (tcp_process_tlp_ack: CWR).
            self.tlp_end_seq = None
            self._counters["tlp_loss_repaired"] += 1
            if not self.in_recovery:
                cc = self._cc
                cc.on_congestion(now, max(flight_before, self.mss))
                cc.on_recovery_exit(now)
        elif dupack and not blocks:
            # A duplicate ACK without SACK: the probe arrived after the original.
            self.tlp_end_seq = None
            self._counters["tlp_no_loss"] += 1
