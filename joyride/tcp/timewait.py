"""A compact TIME-WAIT record: what a closed connection must remember for 2*MSL.

Once both FINs are exchanged and the application has let go of the connection, only
a few numbers still matter (RFC 9293 §3.6, §3.10.7.4 TIME-WAIT): the 4-tuple, the
sequence numbers both sides ended at (to recognise a retransmitted FIN and to ACK it
again), TS.Recent and our timestamp offset when timestamps were negotiated (PAWS,
RFC 7323 §5, and RFC 6191 reuse), the window to advertise, and the expiry. Linux
keeps the same in ``struct tcp_timewait_sock`` instead of the full socket; a
``TcpConnection`` with its buffers, scoreboard and timers costs kilobytes, this
record about two hundred bytes.

Sans-I/O like the connection: ``receive(seg, now)`` answers a ``TwVerdict`` (what
the owner must do with the record) and the segment to send, if any. The rules are
Linux's ``tcp_timewait_state_process`` with ``tcp_rfc1337 = 0``:

* PAWS (RFC 7323 §5.3 R1) rejects a non-RST segment older than TS.Recent: it is
  answered with an ACK and the 2*MSL timer restarts.
* A bare ACK exactly at RCV.NXT restarts the timer (it is the peer's ACK of our FIN
  arriving late); TS.Recent follows it.
* A RST exactly at RCV.NXT ends TIME-WAIT early ("TIME-WAIT assassination",
  RFC 1337 hazard H1, accepted as Linux does by default); any other RST is dropped.
* A SYN without ACK may open a new incarnation of the 4-tuple when it is provably
  new (RFC 6191 §2): by its timestamp when both incarnations use timestamps, else by
  its sequence number beyond RCV.NXT. The owner removes the record and hands the SYN
  to the listener.
* Everything else (a retransmitted FIN, stray data, an old SYN) is answered with an
  ACK of SND.NXT/RCV.NXT (RFC 9293 §3.10.7.4: "the only thing that can arrive in
  this state is a retransmission of the remote FIN. Acknowledge it, and restart the
  2 MSL timeout"). Segments carrying an ACK restart the timer; a SYN without ACK
  does not (it may be a new connection's, Linux's rule). ACKs answering segments
  without payload are rate-limited per record (RFC 5961 §7 spirit, Linux's
  ``tcp_invalid_ratelimit``), so two stacks cannot ping-pong ACKs forever.
"""

from __future__ import annotations

import enum
from typing import Final

from joyride.tcp.counters import Counters
from joyride.tcp.options import PAWS_IDLE, ts_before, ts_clock
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpFlags, TcpOptions, TcpSegment

# Linux's net.ipv4.tcp_invalid_ratelimit: at most one ACK per 500 ms answers
# out-of-window segments without payload (tcp_oow_rate_limited).
OOW_ACK_INTERVAL: Final = 0.5

_SYN: Final = TcpFlags.SYN
_ACK: Final = TcpFlags.ACK
_RST: Final = TcpFlags.RST
_FIN: Final = TcpFlags.FIN


class TwVerdict(enum.Enum):
    """What the owner of a record does after a segment."""

    KEEP = "keep"  # the record stays (an ACK may have to be sent)
    CLOSE = "close"  # forget the record (RST at RCV.NXT)
    REOPEN = "reopen"  # forget the record and give the SYN to the listener (RFC 6191)


class TimeWait:
    """One 4-tuple in TIME-WAIT (see the module docstring)."""

    __slots__ = (
        "_last_oow_ack",
        "duration",
        "expires",
        "local_ip",
        "local_port",
        "rcv_nxt",
        "remote_ip",
        "remote_port",
        "snd_nxt",
        "ts_offset",
        "ts_recent",
        "ts_recent_age",
        "window",
    )

    def __init__(
        self,
        local_ip: bytes,
        local_port: int,
        remote_ip: bytes,
        remote_port: int,
        *,
        snd_nxt: Seq,
        rcv_nxt: Seq,
        window: int,
        ts_recent: int | None,
        ts_recent_age: float,
        ts_offset: int,
        now: float,
        duration: float,
        expires: float | None = None,
    ) -> None:
        self.local_ip = local_ip
        self.local_port = local_port
        self.remote_ip = remote_ip
        self.remote_port = remote_port
        self.snd_nxt = snd_nxt  # our FIN + 1: everything we sent is acknowledged
        self.rcv_nxt = rcv_nxt  # the peer's FIN + 1
        self.window = window  # the (already scaled-down) window field we advertise
        self.ts_recent = ts_recent  # None: timestamps were not negotiated
        self.ts_recent_age = ts_recent_age
        self.ts_offset = ts_offset  # RFC 7323 §7.1 per-connection TSval offset
        self.duration = duration  # 2*MSL (TcpConfig.time_wait)
        self.expires = now + duration if expires is None else expires
        self._last_oow_ack = float("-inf")

    @property
    def key(self) -> tuple[bytes, int, bytes, int]:
        return (self.local_ip, self.local_port, self.remote_ip, self.remote_port)

    def expired(self, now: float) -> bool:
        return now >= self.expires

    def ack(self, now: float) -> TcpSegment:
        """The ACK of SND.NXT / RCV.NXT this record answers with."""
        ts = None
        if self.ts_recent is not None:
            ts = (ts_clock(now, self.ts_offset), self.ts_recent)
        return TcpSegment(
            self.local_port, self.remote_port, self.snd_nxt, self.rcv_nxt, _ACK,
            self.window, options=TcpOptions(timestamps=ts),
        )

    def _restart(self, now: float) -> None:
        self.expires = now + self.duration

    def receive(
        self, seg: TcpSegment, now: float, counters: Counters | None = None
    ) -> tuple[TwVerdict, TcpSegment | None]:
        """SEGMENT ARRIVES in TIME-WAIT. Never raises; drops are counted in
        ``counters`` (``tw_*`` reasons) when given."""
        flags = seg.flags
        is_rst = bool(flags & _RST)
        ts = seg.options.timestamps
        # RFC 7323 §5.3 R1: PAWS (RSTs are exempt); §5.5: a TS.Recent idle for 24
        # days is no longer a reference.
        paws_reject = (
            self.ts_recent is not None
            and ts is not None
            and not is_rst
            and ts_before(ts[0], self.ts_recent)
            and now - self.ts_recent_age <= PAWS_IDLE
        )
        if not paws_reject and seg.seq == self.rcv_nxt and (seg.seg_len == 0 or is_rst):
            # In window: only a bare ACK or a RST can be here.
            if is_rst:
                # RFC 1337 H1 is accepted as Linux does by default (tcp_rfc1337=0).
                _count(counters, "tw_killed_by_rst")
                return TwVerdict.CLOSE, None
            self._restart(now)
            if ts is not None and self.ts_recent is not None:
                self.ts_recent, self.ts_recent_age = ts[0], now
            return TwVerdict.KEEP, None

        new_syn = flags & _SYN and not flags & (_RST | _ACK) and not paws_reject
        if new_syn and self._new_incarnation(seg):
            _count(counters, "tw_reuse")
            return TwVerdict.REOPEN, None

        if paws_reject:
            _count(counters, "tw_drop_paws")
        if is_rst:
            _count(counters, "tw_drop_rst")
            return TwVerdict.KEEP, None
        # RFC 9293 §3.10.7.4: ACK it and restart 2*MSL. An ACK-less SYN may be a new
        # connection's with a random ISN below RCV.NXT: do not extend for it (Linux).
        if paws_reject or flags & _ACK:
            self._restart(now)
        if flags & _FIN:
            _count(counters, "tw_fin_acked")
        if _rate_limited(seg):
            if now - self._last_oow_ack < OOW_ACK_INTERVAL:
                _count(counters, "tw_ack_ratelimited")
                return TwVerdict.KEEP, None
            self._last_oow_ack = now
        _count(counters, "tw_ack_sent")
        return TwVerdict.KEEP, self.ack(now)

    def _new_incarnation(self, syn: TcpSegment) -> bool:
        """RFC 6191 §2: timestamps decide when both incarnations use them; otherwise
        the SYN must start beyond everything the old incarnation received."""
        ts = syn.options.timestamps
        if self.ts_recent is not None and ts is not None:
            return ts_before(self.ts_recent, ts[0])
        return syn.seq > self.rcv_nxt


def _rate_limited(seg: TcpSegment) -> bool:
    """Linux's tcp_oow_rate_limited: segments with payload (or FIN) and no SYN cannot
    be part of an ACK loop and are always answered; the rest are rate-limited."""
    return seg.seg_len == 0 or bool(seg.flags & _SYN)


def _count(counters: Counters | None, reason: str) -> None:
    if counters is not None:
        counters[reason] += 1
