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
"""

from __future__ import annotations

from collections.abc import Iterable

from joyride.tcp.congestion import CongestionControl, cwnd_limited
from joyride.tcp.counters import Counters
from joyride.tcp.scoreboard import SackScoreboard
from joyride.wire.seq import Seq


class LossRecovery:
    """Duplicate-ACK counting, fast retransmit / fast recovery and SACK recovery."""

    __slots__ = (
        "_cc",
        "_counters",
        "_dupthresh",
        "_lt_bytes",
        "board",
        "dupacks",
        "high_rxt",
        "in_recovery",
        "mss",
        "recover",
        "rescue_rxt",
        "rexmit_head",
        "sack_ok",
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

    def configure(self, mss: int, sack_ok: bool) -> None:
        """After the handshake: the send MSS and whether SACK was negotiated."""
        self.mss = mss
        self.sack_ok = sack_ok
        self.board = SackScoreboard(mss, self._dupthresh)

    @property
    def sacked_bytes(self) -> int:
        return self.board.sacked_bytes

    @property
    def quiet(self) -> bool:
        """No loss is being detected or repaired: nothing here would act on the next
        advancing ACK beyond clearing what is already clear (the C data plane may run
        the connection, docs/dataplane.md)."""
        return (not self.in_recovery and self.dupacks == 0 and self._lt_bytes == 0
                and not self.rexmit_head and self.board.sacked_bytes == 0)

    # ------------------------------------------------------------------ per ACK

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
    ) -> tuple[Seq, int] | None:
        """One acceptable ACK, after SND.UNA moved to ``snd_una`` (``acked`` bytes).

        Returns (start, length) to retransmit at once when this ACK starts SACK
        recovery (RFC 6675 §5 step (4.3)); None otherwise.
        """
        sacked_new = 0
        if self.sack_ok:
            # RFC 6675 §5: update the scoreboard from every ACK, with or without SACK
            # blocks, so that data the cumulative ACK now covers leaves it at once.
            sacked_new = self.board.update(snd_una, sack_blocks, snd_max)
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
                    cc.cwnd = cc.ssthresh
                cc.on_recovery_exit(now)
                self._counters["recovery_exits"] += 1
            elif acked > 0 and not self.sack_ok:
                # RFC 6582 §3.2 step 3 partial ACK: resend the next hole, deflate.
                self.rexmit_head = True
                cc.cwnd = max(cc.cwnd - acked + (mss if acked >= mss else 0), mss)
            elif dupack and not self.sack_ok:
                cc.cwnd += mss  # RFC 5681 §3.2 step 4: inflation per extra dupack
            return None

        if acked > 0:
            self.dupacks = 0
            self._lt_bytes = 0
            if cwnd_limited(flight_before, cc.cwnd):
                # RFC 9438 §4.2: CUBIC looks one smoothed RTT ahead.
                cc.on_ack(now, acked, srtt, flight_before)
        elif dupack or (self.sack_ok and sacked_new > 0 and acked == 0):
            self.dupacks += 1
        else:
            return None
        if snd_una < self.recover or snd_max == snd_una:
            return None  # RFC 6582 §3.2 step 2 / RFC 6675 §5.1: not before RecoveryPoint
        enter = self.dupacks >= self._dupthresh
        if self.sack_ok and not enter:
            enter = self.board.is_lost(snd_una)
        if not enter:
            return None
        return self._enter(snd_una, snd_max, now)

    def _enter(self, snd_una: Seq, snd_max: Seq, now: float) -> tuple[Seq, int] | None:
        """Fast retransmit / fast recovery (RFC 5681 §3.2, RFC 6675 §5 step 4)."""
        cc, mss = self._cc, self.mss
        self._counters["fast_retransmits"] += 1
        self.in_recovery = True
        self.recover = snd_max
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
        # RFC 6675 §5 step (4.3): retransmit the first lost segment right away, and set
        # HighRxt and RescueRxt to its highest octet, so that neither it nor a
        # premature rescue goes out again before the peer reports on it.
        nxt = self.board.next_seg(snd_una, snd_max, self.high_rxt, False)
        start, length = nxt if nxt and nxt[0] != snd_max else (snd_una, mss)
        self.high_rxt = Seq.max(self.high_rxt, start + length)
        self.rescue_rxt = start + length - 1
        return start, length

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
        if cwnd - board.pipe(snd_una, snd_max, self.high_rxt) < self.mss:
            return None
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

    def on_rto(self, snd_max: Seq, flight: int, now: float) -> None:
        """RFC 6298 §5.5-5.6 as seen by recovery: loss window, scoreboard discarded."""
        self._cc.on_rto(now, flight)  # RFC 5681 eq. 4, cwnd = 1 SMSS
        self.board.clear()  # RFC 6675 §5.1 (and RFC 2018 §8: SACK may renege)
        self.in_recovery = False
        self.recover = snd_max  # no new recovery before this is ACKed (RFC 6582 §4)
        self.dupacks = 0
        self._lt_bytes = 0
        self.rexmit_head = False

    def clear(self) -> None:
        self.board.clear()
