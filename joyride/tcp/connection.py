"""One TCP connection as a sans-I/O state machine (RFC 9293 and friends).

Shape (aioquic / h11 / smoltcp): the caller feeds parsed segments with the current
time, drains segments to transmit, asks when the next timer is due, and calls back
at that time. The connection never reads a clock or touches a socket.

    conn.receive(seg, now)           # RFC 9293 §3.10.7 SEGMENT ARRIVES
    conn.segments_to_send(now)       # everything the connection wants on the wire
    conn.poll_at() / on_timer(now)   # RTO, loss probe, persist, delayed ACK, keepalive, ...
    conn.send(data) / recv(n) / shutdown_write() / close() / abort()
    conn.events()                    # TcpEvent.ESTABLISHED, DATA, EOF, RESET, CLOSED

Rules, in the order RFC 9293 §3.10.7.4 applies them to a synchronized connection:

1. PAWS (RFC 7323 §5.3), then the acceptability test on SEG.SEQ; unacceptable
   segments are answered with an ACK and dropped (a zero receive window still takes
   valid ACKs and RSTs).
2. RST: exactly at RCV.NXT resets; elsewhere in the window draws a rate-limited
   challenge ACK (RFC 5961 §3.2).
3. SYN in a synchronized state draws a challenge ACK (RFC 5961 §4).
4. ACK: above SND.MAX is answered and dropped; below SND.UNA - MAX.SND.WND is dropped
   (RFC 5961 §5.2). New ACKs free the send buffer, sample the RTT (Karn), drive
   congestion control and loss recovery (RFC 5681, 6582, 6675), update the send
   window (SND.WL1/WL2), and advance FIN-WAIT-1 / CLOSING / LAST-ACK.
5. Text is delivered in order, out-of-order text goes to the bounded reassembler
   and is SACKed (RFC 2018); the FIN is processed once everything before it arrived.

Every segment that is dropped increments ``counters[reason]``; nothing raises.

Collaborators, one job each: ``options`` (SYN option negotiation, timestamp clock),
``recovery`` (duplicate ACKs, fast retransmit/recovery, SACK NextSeg, limited
transmit), ``congestion`` (cwnd), ``rtt`` (RTO), ``buffers``, ``reassembly``,
``timers``. The C data plane (``joyride/dataplane``) runs the hot half of the same TCB
while it owns the connection (``export_hot``/``import_hot``), transcribing these rules.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections import deque
from typing import Any, Final

from joyride.tcp.buffers import ReceiveBuffer, SendBuffer
from joyride.tcp.config import TcpConfig
from joyride.tcp.congestion import CongestionControl, Cubic, NewReno, make_congestion_control
from joyride.tcp.counters import Counters
from joyride.tcp.failure import ConnectionFailure
from joyride.tcp.hystart import (
    ACK_TRAIN_EXITED,
    CSS_ABANDONED,
    CSS_ENTERED,
    SLOW_START_EXITED,
)
from joyride.tcp.isn import IsnGenerator
from joyride.tcp.options import (
    PAWS_IDLE,
    TS_OPTION_LEN,
    Negotiated,
    negotiate,
    syn_options,
    ts_before,
    ts_clock,
    ts_rtt,
)
from joyride.tcp.pmtu import PmtuSearch
from joyride.tcp.reassembly import MAX_WINDOW, Reassembler
from joyride.tcp.recovery import (
    EPISODE_RTO,
    HOT_SACK_RANGES,
    TLP_MAX_ACK_DELAY,
    LossRecovery,
)
from joyride.tcp.rtt import RttEstimator
from joyride.tcp.state import RECEIVING_STATES, TcpEvent, TcpState
from joyride.tcp.timers import Timer, Timers
from joyride.tcp.timewait import TimeWait
from joyride.wire.addr import narrow
from joyride.wire.seq import HALF, MASK, Seq
from joyride.wire.tcp import TcpFlags, TcpOptions, TcpSegment

_ACK: Final = TcpFlags.ACK
_ACK_EVERY: Final = 2  # RFC 5681 §4.2 / RFC 9293 §3.8.6.3: ACK every 2nd full segment
#: Out-of-order ranges the C data plane holds (joyride/dataplane/dataplane.h:
#: DP_OOO_RANGES; a test holds the two equal): a connection with more stays here.
HOT_OOO_RANGES: Final = 16


def rst_for(seg: TcpSegment) -> TcpSegment | None:
    """The reset answering ``seg`` when no connection wants it (RFC 9293 §3.10.7.1).

    If the segment has an ACK the reset takes its sequence number from SEG.ACK,
    otherwise it has sequence 0 and acknowledges everything the segment occupied. An
    incoming RST is never answered.
    """
    if seg.flags & TcpFlags.RST:
        return None
    if seg.flags & TcpFlags.ACK:
        return TcpSegment(seg.dst_port, seg.src_port, seg.ack, Seq(0), TcpFlags.RST, 0)
    return TcpSegment(
        seg.dst_port, seg.src_port, Seq(0), seg.seq + seg.seg_len, TcpFlags.RST | _ACK, 0
    )


# ``struct dp_tcb.tcp_state`` (joyride/dataplane/dataplane.h: enum dp_tcp_state).
_HOT_STATES: Final = (
    TcpState.ESTABLISHED, TcpState.SYN_RECEIVED, TcpState.FIN_WAIT_1, TcpState.FIN_WAIT_2,
    TcpState.CLOSE_WAIT, TcpState.CLOSING, TcpState.LAST_ACK, TcpState.TIME_WAIT,
    TcpState.CLOSED, TcpState.SYN_SENT,
)


# The smallest MSS either family's paths must carry: RFC 9293 §3.7.1's default (IPv4
# hosts take 576-byte datagrams) and RFC 8200 §5's 1280-byte minimum link MTU (IPv6).
_MIN_MSS4: Final = 536
_MIN_MSS6: Final = 1220


def min_mss(ipv6: bool) -> int:
    """The smallest MSS (with options) a path may cut a connection to: IPv4's 536
    (RFC 9293 §3.7.1), IPv6's 1220 (RFC 8200 §5: its minimum MTU, 1280)."""
    return _MIN_MSS6 if ipv6 else _MIN_MSS4


def path_mss(mtu: int, ipv6: bool) -> int:
    """The MSS (with options) that fits a path MTU: less the IP header of the family
    and TCP's, never below the family's minimum."""
    return max(min_mss(ipv6), mtu - (40 if ipv6 else 20) - 20)


def names_segment_in_flight(seq: Seq, snd_una: Seq, snd_nxt: Seq) -> bool:
    """A "packet too big" is believed only for a segment in flight (RFC 5927 §4.1:
    SND.UNA <= seq < SND.NXT, as Linux's tcp_v4_err), so a blind attacker must guess
    the window; the C data plane's TCB is judged by the same rule before its flow
    moves (``Datapath.path_too_big``)."""
    return seq.in_window(snd_una, snd_nxt - snd_una)


class TcpConnection:
    """One connection's transmission control block and its state machine."""

    def __init__(
        self,
        config: TcpConfig,
        local_ip: bytes,
        local_port: int,
        remote_ip: bytes,
        remote_port: int,
        *,
        iss: Seq,
        now: float,
        ts_offset: int | None = None,
    ) -> None:
        self.config = config.for_address(local_ip)  # the MSS of local_ip's family
        self.local_ip = local_ip
        self.local_port = local_port
        self.remote_ip = remote_ip
        self.remote_port = remote_port
        self.counters: Counters = Counters()
        self.error: ConnectionFailure | None = None  # why it failed, once it did
        self._state = TcpState.CLOSED
        self._events: deque[TcpEvent] = deque()
        self._out: list[TcpSegment] = []
        self._timers = Timers()
        self._now = now

        # Send sequence space (RFC 9293 §3.3.1). SND.MAX is the highest sequence ever
        # sent: SND.NXT falls back to SND.UNA after an RTO (go-back-N) and climbs again.
        self._iss = iss
        self._snd_una = iss
        self._snd_nxt = iss
        self._snd_max = iss
        self._snd_wnd = 0
        self._max_snd_wnd = 0
        # How much of cwnd this window of data used (_note_cwnd_use).
        self._cwnd_use_max = 0
        self._cwnd_use_end = iss
        self._snd_wl1 = Seq(0)
        self._snd_wl2 = iss
        self._buf_seq = iss + 1  # sequence number of the send buffer's first byte
        self._fin_seq: Seq | None = None  # our FIN's sequence number once queued
        self._probe_end: Seq | None = None  # right edge of a zero-window probe

        # Receive sequence space.
        self._irs = Seq(0)
        self._rcv_nxt = Seq(0)
        self._rcv_adv = Seq(0)  # right edge of the window we last advertised
        self._peer_fin: Seq | None = None  # sequence of the peer's FIN, maybe early
        self._rcv_mss = min(config.default_peer_mss, config.mss)

        # Negotiated options.
        self._smss = config.default_peer_mss  # data bytes per segment we send
        self._snd_shift = 0  # RFC 7323 §2.3 Snd.Wind.Shift (applied to SEG.WND)
        self._rcv_shift = 0  # Rcv.Wind.Shift (applied to windows we advertise)
        self._negotiated: Negotiated | None = None  # once the peer's SYN was seen
        # RFC 4821 §7: searching for the MSS again after a cut (None: no cut, or the
        # search found the handshake's MSS again).
        self._pmtu: PmtuSearch | None = None
        self._ts_ok = False
        self._ts_offset = secrets.randbits(32) if ts_offset is None else ts_offset
        self._ts_recent = 0
        self._ts_recent_age = now
        self._last_ack_sent = Seq(0)
        self._sack_ok = False
        # RFC 2883 D-SACK to report in the next ACK: the duplicate range.
        self._dsack: tuple[Seq, Seq] | None = None

        self._send_buf = SendBuffer(config.send_buffer)
        self._recv_buf = ReceiveBuffer(config.receive_buffer, config.receive_buffer_max)
        self._reasm = Reassembler(config.receive_buffer_max, config.reassembly_max_ranges)
        self._rtt = RttEstimator(config.initial_rto, config.min_rto, config.max_rto)
        self._cc: CongestionControl = make_congestion_control(
            config.congestion_control, self._smss, hystart=config.hystart
        )

        # Loss recovery (RFC 5681 §3.2, RFC 3042, RFC 6582, RFC 6675).
        self._recovery = LossRecovery(
            self._cc, self.counters, mss=self._smss, dupthresh=config.dupthresh, iss=iss
        )
        self._retries = 0
        self._persist_backoff = 0
        # Karn's rule (RFC 6298 §3): time one segment at once, never a retransmitted one.
        self._rtt_seq: Seq | None = None
        self._rtt_time = 0.0

        # ACK policy.
        self._ack_now = False
        self._flushing = False  # _send_before_reset: Nagle lets the last bytes go
        # The owed ACK answers an out-of-order, duplicate or gap-filling segment (RFC
        # 5681 §4.2): it goes out before the next segment of the same batch is taken,
        # not coalesced with that one's (in-order data is, as GRO would merge it).
        self._ack_immediate = False
        self._last_ack_rcv_nxt = Seq(0)
        self._challenge_window = now
        self._challenge_count = 0

        self._app_closed = False
        self._dirty = False  # the application queued work since the last transmit
        self._write_blocked = False
        self._keepalive_sent = 0
        self._last_send = now
        # The hot half lives in the C data plane (export_hot .. import_hot): nothing
        # here is current meanwhile, and nothing may act on it.
        self._parked = False

    # ------------------------------------------------------------------ construction

    @classmethod
    def connect(
        cls,
        config: TcpConfig,
        local_ip: bytes,
        local_port: int,
        remote_ip: bytes,
        remote_port: int,
        now: float,
        isn_generator: IsnGenerator,
        *,
        ts_offset: int | None = None,
        iss: Seq | None = None,
    ) -> TcpConnection:
        """Active open (RFC 9293 §3.10.1): a connection in SYN-SENT with a SYN queued.
        ``iss``: its ISS when it must be a given one (a TIME-WAIT taken over), else the
        generator's (RFC 6528)."""
        if iss is None:
            iss = isn_generator.isn(local_ip, local_port, remote_ip, remote_port, now)
        conn = cls(
            config, local_ip, local_port, remote_ip, remote_port,
            iss=iss, now=now, ts_offset=ts_offset,
        )
        conn._state = TcpState.SYN_SENT
        return conn

    @classmethod
    def accept_syn(
        cls,
        config: TcpConfig,
        local_ip: bytes,
        remote_ip: bytes,
        syn: TcpSegment,
        iss: Seq,
        now: float,
        *,
        ts_offset: int | None = None,
    ) -> TcpConnection:
        """Passive open from a LISTEN socket (RFC 9293 §3.10.7.2): SYN-RECEIVED."""
        conn = cls(
            config, local_ip, syn.dst_port, remote_ip, syn.src_port,
            iss=iss, now=now, ts_offset=ts_offset,
        )
        conn._take_syn(syn, now)
        conn._state = TcpState.SYN_RECEIVED
        return conn

    @classmethod
    def from_cookie(
        cls,
        config: TcpConfig,
        local_ip: bytes,
        remote_ip: bytes,
        ack: TcpSegment,
        *,
        iss: Seq,
        mss: int,
        wscale: int | None,
        sack_permitted: bool,
        now: float,
        ts_offset: int = 0,
    ) -> TcpConnection:
        """An ESTABLISHED connection rebuilt from a valid SYN-cookie ACK.

        The SYN's options survive only as far as the cookie carried them: the MSS
        from the table, window scale and SACK-permitted from the timestamp bits.
        """
        conn = cls(
            config, local_ip, ack.dst_port, remote_ip, ack.src_port,
            iss=iss, now=now, ts_offset=ts_offset,
        )
        irs = ack.seq - 1
        syn = TcpSegment(
            ack.src_port, ack.dst_port, irs, Seq(0), TcpFlags.SYN, ack.window,
            options=TcpOptions(
                mss=mss,
                wscale=wscale,
                sack_permitted=sack_permitted,
                timestamps=(ack.options.timestamps[0], 0) if ack.options.timestamps else None,
            ),
        )
        conn._take_syn(syn, now)
        conn._snd_nxt = conn._snd_max = iss + 1
        # The SYN-ACK (sent statelessly by the listener) advertised this window.
        conn._rcv_adv = conn._rcv_nxt + min(config.receive_buffer, 0xFFFF)
        conn._state = TcpState.SYN_RECEIVED
        return conn

    # ------------------------------------------------------------------ properties

    @property
    def state(self) -> TcpState:
        return self._state

    @property
    def readable(self) -> bool:
        """Data to read, or EOF/reset to report (a read would not block)."""
        return len(self._recv_buf) > 0 or self.eof or self._state is TcpState.CLOSED

    @property
    def writable(self) -> bool:
        return self._can_send_state() and self._send_buf.free > 0

    @property
    def eof(self) -> bool:
        """The peer's FIN has been received in order."""
        return self._peer_fin is not None and self._rcv_nxt > self._peer_fin

    @property
    def snd_una(self) -> Seq:
        return self._snd_una

    @property
    def snd_nxt(self) -> Seq:
        return self._snd_nxt

    @property
    def rcv_nxt(self) -> Seq:
        return self._rcv_nxt

    @property
    def iss(self) -> Seq:
        return self._iss

    @property
    def mss(self) -> int:
        """Effective send MSS: data bytes per segment."""
        return self._smss

    @property
    def congestion(self) -> CongestionControl:
        return self._cc

    @property
    def rtt(self) -> RttEstimator:
        return self._rtt

    @property
    def recovery(self) -> LossRecovery:
        return self._recovery

    @property
    def send_window(self) -> int:
        return self._snd_wnd

    @property
    def bytes_in_flight(self) -> int:
        return self._snd_max - self._snd_una

    @property
    def send_queue(self) -> int:
        return len(self._send_buf)

    @property
    def recv_buffer(self) -> int:
        """The receive buffer's capacity: what autotuning has grown it to."""
        return self._recv_buf.capacity

    @property
    def recv_queue(self) -> int:
        return len(self._recv_buf)

    @property
    def in_recovery(self) -> bool:
        return self._recovery.in_recovery

    @property
    def sacked_bytes(self) -> int:
        """Bytes above SND.UNA the peer has SACKed (RFC 6675 scoreboard)."""
        return self._recovery.sacked_bytes

    @property
    def options(self) -> dict[str, object]:
        """What the handshake negotiated."""
        return {
            "mss": self._smss,
            "snd_wscale": self._snd_shift,
            "rcv_wscale": self._rcv_shift,
            "timestamps": self._ts_ok,
            "sack": self._sack_ok,
        }

    def events(self) -> list[TcpEvent]:
        """Drain the events since the last call, oldest first."""
        out = list(self._events)
        self._events.clear()
        return out

    def poll_at(self) -> float | None:
        """When ``on_timer`` must next be called (None: no timer armed)."""
        if self._out or self._ack_now or self._dirty:
            return self._now
        return self._timers.next_deadline()

    # ------------------------------------------------------------------ application

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Queue bytes; returns how many fitted (0 when full or not sending)."""
        if not self._can_send_state() or self._fin_seq is not None:
            return 0
        n = self._send_buf.write(data)
        self._dirty = self._dirty or n > 0
        if n < len(data):
            self._write_blocked = True
        return n

    def send_region(self) -> memoryview:
        """The send buffer's contiguous free space, for a writer that fills it in place
        (``sock.recv_into(region)``) and then calls ``send_commit``: ``send`` without
        the copy out of the writer's own buffer. Empty when nothing more may be queued
        (full, FIN queued, or not a sending state). The view shows the ring itself:
        use it before anything else touches this connection.
        """
        if not self._can_send_state() or self._fin_seq is not None:
            return memoryview(bytearray())
        ring, start, n = self._send_buf.free_region()
        if n == 0:
            self._write_blocked = True  # as a refused ``send``: WRITABLE follows ACKs
        return memoryview(ring)[start : start + n]

    def send_commit(self, n: int) -> None:
        """``n`` bytes were written at the start of the last ``send_region``: queue
        them (ValueError, and nothing queued, when ``n`` exceeds that region)."""
        if n <= 0:
            return
        self._send_buf.commit(n)
        self._dirty = True
        if self._send_buf.free == 0:
            self._write_blocked = True

    def recv(self, n: int = -1, now: float | None = None) -> bytes:
        """Read up to ``n`` bytes (all when -1); b"" at EOF or when nothing is there."""
        if now is not None:
            self._now = now
        data = self._recv_buf.read(n)
        if data:
            self._after_read()
        return data

    def recv_into(self, buf: bytearray | memoryview, now: float | None = None) -> int:
        if now is not None:
            self._now = now
        n = self._recv_buf.readinto(buf)
        if n:
            self._after_read()
        return n

    def recv_view(self, n: int) -> memoryview:
        """Up to ``n`` received bytes, not taken (as far as they lie contiguous): for a
        reader that hands them on and then says with ``recv_taken`` how many went, so
        that bytes it could not hand on stay here, inside the advertised window."""
        return self._recv_buf.front(n)

    def recv_taken(self, n: int, now: float | None = None) -> None:
        """``n`` bytes of ``recv_view`` were read (as ``recv`` of them would have)."""
        if now is not None:
            self._now = now
        if n:
            self._recv_buf.taken(n)
            self._after_read()

    def shutdown_write(self) -> None:
        """Half-close (RFC 9293 §3.10.4): a FIN follows the queued data."""
        if self._fin_seq is not None:
            return
        if self._state is TcpState.ESTABLISHED:
            self._state = TcpState.FIN_WAIT_1
        elif self._state is TcpState.CLOSE_WAIT:
            self._state = TcpState.LAST_ACK
        elif self._state not in (TcpState.SYN_SENT, TcpState.SYN_RECEIVED):
            return
        # In SYN-SENT / SYN-RECEIVED the FIN waits until ESTABLISHED (§3.10.4).
        self._fin_seq = self._buf_seq + len(self._send_buf)
        self._dirty = True

    def close(self, *, lost: bool = False) -> None:
        """Close both directions (RFC 9293 §3.10.4).

        Unread received data turns the close into a reset (RFC 1122 §4.2.2.13, RFC 2525
        §2.17, as Linux does), so the peer learns its data was not consumed. ``lost``:
        the application lost bytes that had already left this buffer (the service's
        descriptor held them unread, or could no longer take them), which counts the
        same. What the application wrote goes first, as far as the windows let it now:
        Linux sends a write at the write itself, so its peer has those bytes before the
        RST.
        """
        self._app_closed = True
        if self._state in (TcpState.CLOSED, TcpState.LISTEN, TcpState.SYN_SENT):
            self._enter_closed(notify=self._state is not TcpState.CLOSED)
            return
        if lost or len(self._recv_buf) > 0:
            self.counters["close_with_unread_data"] += 1
            self._send_before_reset()
            self.abort()
            return
        self.shutdown_write()
        if self._state is TcpState.FIN_WAIT_2:
            self._timers.set(Timer.FIN_WAIT_2, self._now + self.config.fin_wait2_timeout)

    def _send_before_reset(self) -> None:
        """Bytes written and not yet sent leave now, as far as the windows allow, so
        that a reset follows them as it follows a Linux application's writes (which
        went at the write): new data only (no retransmission, no pure ACK, no FIN), and
        the last small segment too, which Nagle would hold for an ACK that the reset
        makes moot."""
        unsent = len(self._send_buf) - (self._snd_nxt - self._buf_seq)
        if unsent <= 0 or self._parked or self._state not in (
                TcpState.ESTABLISHED, TcpState.CLOSE_WAIT):
            return
        self._flushing = True
        try:
            self._send_new(self._now)
        except Exception:  # pragma: no cover - a bug must not take the stack down
            self.counters["internal_error"] += 1
        finally:
            self._flushing = False

    def abort(self) -> None:
        """ABORT (RFC 9293 §3.10.5): send a RST if synchronized, forget everything."""
        if self._state.synchronized and self._state is not TcpState.TIME_WAIT:
            # At SND.MAX, as the pure ACK below (Linux's tcp_acceptable_seq).
            self._out.append(self._segment(self._snd_max, TcpFlags.RST, with_ack=False))
        self._enter_closed(notify=self._state is not TcpState.CLOSED)

    def time_wait_record(self, now: float) -> TimeWait | None:
        """Hand TIME-WAIT over to a compact ``TimeWait`` record, or None if not yet.

        Only once the connection is in TIME-WAIT with nothing left for the
        application: it has closed the connection and nothing unread or unsent
        remains (Linux's tcp_time_wait() turns the socket into a minisock at the same
        point). The connection then reports CLOSED and forgets its timers; the record
        keeps the rest of 2*MSL (RFC 9293 §3.6) and what RFC 9293 §3.10.7.4, RFC 7323
        (PAWS) and RFC 6191 (4-tuple reuse) need.
        """
        if (
            self._state is not TcpState.TIME_WAIT
            or not self._app_closed
            or len(self._recv_buf) > 0
            or self._out
        ):
            return None
        expires = self._timers.deadline(Timer.TIME_WAIT)
        window = min(max(self._rcv_adv - self._rcv_nxt, 0) >> self._rcv_shift, 0xFFFF)
        record = TimeWait(
            self.local_ip, self.local_port, self.remote_ip, self.remote_port,
            snd_nxt=self._snd_max, rcv_nxt=self._rcv_nxt, window=window,
            ts_recent=self._ts_recent if self._ts_ok else None,
            ts_recent_age=self._ts_recent_age, ts_offset=self._ts_offset,
            now=now, duration=self.config.time_wait, expires=expires,
        )
        self.counters["handed_to_time_wait"] += 1
        self._enter_closed(notify=True)
        return record

    # ------------------------------------------------------------------ transmit side

    def segments_to_send(self, now: float) -> list[TcpSegment]:
        """Everything the connection wants to transmit now, in order."""
        if self._parked:
            self.counters["internal_error_parked"] += 1
            return []
        self._now = now
        self._dirty = False
        try:
            self._transmit(now)
        except Exception:  # pragma: no cover - a bug must not take the stack down
            self.counters["internal_error"] += 1
        out, self._out = self._out, []
        return out

    def reconfigure(self, config: TcpConfig, now: float) -> None:
        """Socket options set on a live connection (``joyride.sockopts``): Nagle,
        keepalive and the send buffer's size take effect at once; the receive buffer
        keeps the size its window scale was negotiated for."""
        old, self._now = self.config, now
        self.config = dataclasses.replace(
            config, receive_buffer=old.receive_buffer,
            receive_buffer_max=old.receive_buffer_max)
        if config.send_buffer != old.send_buffer or config.send_buffer_max != old.send_buffer_max:
            self._send_buf.capacity = config.send_buffer  # never below what is queued
        if config.keepalive:
            if (not old.keepalive or config.keepalive_idle != old.keepalive_idle
                    or not self._timers.is_set(Timer.KEEPALIVE)):
                self._arm_keepalive(now)  # RFC 9293 §3.8.4: idle counts from now
        else:
            self._timers.cancel(Timer.KEEPALIVE)
        self._dirty = True  # Nagle turned off sends what it held back (as Linux)

    # ------------------------------------------------------------------ C data plane

    @property
    def parked(self) -> bool:
        """Whether the C data plane runs this connection now (``export_hot``)."""
        return self._parked

    def hot_ready(self) -> bool:
        """Whether the C data plane can run this connection exactly as this class would
        (docs/dataplane.md, "What C runs"): established, nothing being recovered,
        probed or closed, at most HOT_OOO_RANGES ranges held out of order and
        HOT_SACK_RANGES SACKed, and no timer but the retransmission, delayed-ACK,
        keepalive, loss probe and RACK reordering ones. Otherwise every rule
        stays here."""
        return self.hot_blocker() is None

    @property
    def pmtu_due(self) -> float | None:
        """When an MSS probe may next go (RFC 4821 §7; None: no cut to search past).
        The C data plane does not probe: the control plane takes the connection back
        then (``Datapath``)."""
        return self._pmtu.due if self._pmtu is not None else None

    def hot_blocker(self) -> str | None:
        """The first of ``hot_ready``'s conditions that does not hold, by name (None: C
        can run it). For the service's counters of why a connection stays here."""
        timers = self._timers
        if self._parked:
            return "parked"
        if self._state is TcpState.FIN_WAIT_1:
            # The application shut down writing: C sends the rest and the FIN, and
            # hands the connection back once the FIN is acknowledged. A close() is
            # Python's; so is the peer's FIN, even one held out of order (_peer_fin).
            if self._app_closed or self._peer_fin is not None:
                return "closing"
        elif self._state is not TcpState.ESTABLISHED:
            return "state"
        elif self._fin_seq is not None or self._peer_fin is not None or self._app_closed:
            return "closing"
        if self._out:
            return "output_queued"
        if self._probe_end is not None:
            return "probing"
        if self._pmtu_probe_wanted(self._now):
            return "pmtu_probe"
        if self._snd_nxt != self._snd_max or self._buf_seq != self._snd_una:
            return "retransmitting"
        if self._reasm.range_count > HOT_OOO_RANGES:
            return "reassembling"
        if self._dsack is not None:  # C would send the ACK without it
            return "dsack"
        if not self._recovery.hot_ok:
            return "recovery"
        if self._recovery.board.range_count > HOT_SACK_RANGES:
            return "sacked_ranges"
        # RTO recovery still under way: no loss probe may go (RFC 8985 §7.2), which C,
        # arming one at every ACK, does not know.
        if self._snd_una < self._recovery.recover:
            return "rto_recovery"
        if self._keepalive_sent != 0:  # no probe unanswered
            return "keepalive"
        if (timers.is_set(Timer.PERSIST) or timers.is_set(Timer.FIN_WAIT_2)
                or timers.is_set(Timer.TIME_WAIT)):
            return "timer"
        if not isinstance(self._cc, (Cubic, NewReno)):
            return "congestion_control"
        return None

    def export_hot(self, tcb: Any) -> tuple[bytes, bytes] | None:
        """Move the hot half of this TCB into ``tcb`` (a ``struct dp_tcb``) and park:
        returns the receive buffer's bytes (not yet read) and the send buffer's (from
        SND.UNA), which leave this object too; None (and nothing moved) unless
        ``hot_ready``. Identity and framing fields are the caller's."""
        if not self.hot_ready() or not self._cc.save_hot(tcb):
            return None
        tcb.rcv_nxt = self._rcv_nxt.value
        tcb.rcv_adv = self._rcv_adv.value
        tcb.last_ack_rcv_nxt = self._last_ack_rcv_nxt.value
        tcb.last_ack_sent = self._last_ack_sent.value
        tcb.ts_recent = self._ts_recent
        tcb.ts_recent_age = self._ts_recent_age
        tcb.rcv_mss = self._rcv_mss
        tcb.cfg_mss = self.config.mss
        self._recv_buf.save_hot(tcb)  # capacity, slack, the autotuning epoch
        tcb.rcv_shift = self._rcv_shift
        tcb.snd_shift = self._snd_shift
        tcb.ts_ok = int(self._ts_ok)
        tcb.sack_ok = int(self._sack_ok)
        tcb.nodelay = int(self.config.nodelay)
        tcb.snd_una = self._snd_una.value
        tcb.snd_nxt = self._snd_nxt.value
        tcb.snd_wnd = self._snd_wnd
        tcb.max_snd_wnd = self._max_snd_wnd
        tcb.cwnd_use_max = self._cwnd_use_max
        tcb.cwnd_use_end = self._cwnd_use_end.value
        tcb.snd_wl1 = self._snd_wl1.value
        tcb.snd_wl2 = self._snd_wl2.value
        tcb.smss = self._smss
        tcb.snd_cap = self._send_buf.capacity
        tcb.snd_cap_max = self.config.send_buffer_max
        tcb.ts_offset = self._ts_offset & MASK
        self._rtt.save_hot(tcb)
        rtt_seq = self._rtt_seq
        tcb.rtt_timing = int(rtt_seq is not None)
        tcb.rtt_seq = rtt_seq.value if rtt_seq is not None else 0
        tcb.rtt_time = self._rtt_time
        tcb.ack_now = int(self._ack_now)
        tcb.ack_immediate = int(self._ack_immediate)
        tcb.write_blocked = int(self._write_blocked)
        tcb.retries = self._retries
        tcb.persist_backoff = self._persist_backoff
        tcb.rto_at = self._timers.deadline(Timer.RETRANSMIT) or 0.0
        tcb.delack_at = self._timers.deadline(Timer.DELAYED_ACK) or 0.0
        tcb.delack_timeout = self.config.delayed_ack_timeout
        tcb.keepalive_at = self._timers.deadline(Timer.KEEPALIVE) or 0.0
        tcb.keepalive_idle = self.config.keepalive_idle if self.config.keepalive else 0.0
        # RFC 8985 §7.2: C re-arms the loss probe timer as _arm_pto, and hands the flow
        # back when it fires (the probe is sent here).
        tcb.pto_at = self._timers.deadline(Timer.PTO) or 0.0
        tcb.tlp_max_ack_delay = TLP_MAX_ACK_DELAY if self._tlp_on() else -1.0
        tcb.last_send = self._last_send
        self._recovery.save_hot(tcb)
        fin = self._fin_seq
        if fin is not None:
            # FIN-WAIT-1 (hot_blocker): the application's EOF is behind its last byte,
            # and the FIN may be out already (then SND.NXT counts it).
            tcb.tcp_state = _HOT_STATES.index(self._state)
            tcb.app_eof = 1
            tcb.fin_queued = 1
            tcb.fin_sent = int(self._snd_max > fin)
        rcv = self._recv_buf.peek(0, len(self._recv_buf))
        self._recv_buf.consume(len(rcv))
        # Out-of-order data goes too: its ranges in the TCB, its bytes packed after the
        # in-order ones (dp_flow_adopt puts them back at their offsets).
        held = self._reasm.save_hot(self._rcv_nxt)
        tcb.ooo_count = len(held)
        tcb.ooo_clock = len(held)
        for i, (start, data, stamp) in enumerate(held):
            tcb.ooo[i].start = start
            tcb.ooo[i].end = (start + len(data)) & MASK
            tcb.ooo[i].stamp = stamp
        if held:
            rcv = rcv + b"".join(data for _, data, _ in held)
        snd = self._send_buf.peek(0, len(self._send_buf))
        self._send_buf.consume(len(snd))
        self._timers.cancel(Timer.RETRANSMIT)
        self._timers.cancel(Timer.DELAYED_ACK)
        self._timers.cancel(Timer.KEEPALIVE)
        self._timers.cancel(Timer.PTO)
        self._timers.cancel(Timer.REORDER)  # C's now (LossRecovery.save_hot: rack_timeout)
        self._ack_now = False
        self._dirty = False
        self._parked = True
        return rcv, snd

    @classmethod
    def listen_template(cls, config: TcpConfig, tcb: Any, *, ipv6: bool = False) -> None:
        """The fields of ``tcb`` (a ``struct dp_tcb``) a connection accepted with
        ``config`` takes from it before its handshake: buffers, the RTT estimator, the
        congestion controller, the MSS of its family (``ipv6``) (``dp_listen``'s
        template: C fills in the rest from the SYN as ``accept_syn`` would)."""
        any_address = bytes(16 if ipv6 else 4)
        proto = cls(config, any_address, 0, any_address, 0, iss=Seq(0), now=0.0,
                    ts_offset=0)
        proto._recv_buf.save_hot(tcb)
        proto._rtt.save_hot(tcb)
        proto._recovery.save_hot(tcb)
        if not proto._cc.save_hot(tcb):  # pragma: no cover - a new controller is quiet
            raise ValueError("the congestion controller cannot run in C")
        tcb.cfg_mss = proto.config.mss  # the family's (TcpConfig.for_address)
        tcb.nodelay = int(config.nodelay)
        tcb.snd_cap = proto._send_buf.capacity
        tcb.snd_cap_max = config.send_buffer_max
        tcb.delack_timeout = config.delayed_ack_timeout
        tcb.keepalive_idle = config.keepalive_idle if config.keepalive else 0.0
        tcb.max_snd_wnd = proto._max_snd_wnd
        # RFC 8985 §7.2 (C arms the PTO once SACK is negotiated: tcb.sack_ok).
        tcb.tlp_max_ack_delay = TLP_MAX_ACK_DELAY if config.tlp else -1.0

    @classmethod
    def from_hot(cls, config: TcpConfig, tcb: Any, rcv: bytes, snd: bytes,
                 now: float) -> TcpConnection:
        """A connection the C data plane opened itself (``tcb.born``) and now hands
        over: what ``accept_syn`` and the handshake would have made, in the state C
        reached, with the hot half, the bytes and the close taken from C."""
        v6 = bool(tcb.ipv6)
        conn = cls(
            config, narrow(bytes(tcb.local_ip), v6), int(tcb.local_port),
            narrow(bytes(tcb.remote_ip), v6), int(tcb.remote_port),
            iss=Seq(tcb.iss), now=now, ts_offset=int(tcb.ts_offset),
        )
        conn._irs = Seq(tcb.irs)
        conn._snd_shift, conn._rcv_shift = int(tcb.snd_shift), int(tcb.rcv_shift)
        conn._ts_ok, conn._sack_ok = bool(tcb.ts_ok), bool(tcb.sack_ok)
        conn._negotiated = Negotiated(
            snd_shift=conn._snd_shift, rcv_shift=conn._rcv_shift,
            window_scaling=bool(tcb.ws_ok), timestamps=conn._ts_ok, sack=conn._sack_ok,
            smss=int(tcb.smss), rcv_mss=int(tcb.rcv_mss))
        conn._recv_buf.slack = (1 << conn._rcv_shift) - 1
        conn.set_mss(int(tcb.smss))
        conn._parked = True
        conn.import_hot(tcb, rcv, snd, now)
        conn._app_closed = int(tcb.app_fd) < 0 and bool(tcb.app_eof)
        return conn

    def _import_close(self, tcb: Any) -> None:
        """The close C took the connection through (a flow born in C; or one Python
        gave it, after its application's EOF: FIN-WAIT-1 or FIN-WAIT-2)."""
        self._state = _HOT_STATES[int(tcb.tcp_state)]
        if tcb.fin_queued:
            # shutdown_write's FIN: after the queued bytes, or acknowledged already.
            fin_acked = bool(tcb.fin_sent) and self._snd_una == self._snd_nxt
            self._fin_seq = (self._snd_una - 1 if fin_acked
                             else self._buf_seq + len(self._send_buf))
        if tcb.peer_fin:
            self._peer_fin = self._rcv_nxt - 1
        if tcb.state_at:
            timer = Timer.TIME_WAIT if self._state is TcpState.TIME_WAIT else Timer.FIN_WAIT_2
            self._timers.set(timer, float(tcb.state_at))

    def import_hot(self, tcb: Any, rcv: bytes, snd: bytes, now: float | None = None) -> None:
        """Take the hot half back from the C data plane (the inverse of
        ``export_hot``), with the bytes its receive and send rings held; ``now``: the
        time it is taken (a retransmission owed goes then)."""
        if not self._parked:
            raise RuntimeError("import_hot on a connection that was not exported")
        self._parked = False
        self._rcv_nxt = Seq(tcb.rcv_nxt)
        self._rcv_adv = Seq(tcb.rcv_adv)
        self._last_ack_rcv_nxt = Seq(tcb.last_ack_rcv_nxt)
        self._last_ack_sent = Seq(tcb.last_ack_sent)
        self._ts_recent = int(tcb.ts_recent)
        self._ts_recent_age = float(tcb.ts_recent_age)
        self._rcv_mss = int(tcb.rcv_mss)
        self._snd_una = Seq(tcb.snd_una)
        self._snd_nxt = self._snd_max = Seq(tcb.snd_nxt)
        self._buf_seq = self._snd_una
        self._snd_wnd = int(tcb.snd_wnd)
        self._max_snd_wnd = int(tcb.max_snd_wnd)
        self._cwnd_use_max = int(tcb.cwnd_use_max)
        self._cwnd_use_end = Seq(tcb.cwnd_use_end)
        self._snd_wl1 = Seq(tcb.snd_wl1)
        self._snd_wl2 = Seq(tcb.snd_wl2)
        self._rtt.load_hot(tcb)
        self._rtt_seq = Seq(tcb.rtt_seq) if tcb.rtt_timing else None
        self._rtt_time = float(tcb.rtt_time)
        self._ack_now = bool(tcb.ack_now)
        # RFC 5681 §4.2: an ACK C owed at once goes before the next data (the segment
        # C declined, which Python takes next).
        self._ack_immediate = bool(tcb.ack_immediate)
        self._write_blocked = bool(tcb.write_blocked)
        self._retries = int(tcb.retries)
        self._persist_backoff = int(tcb.persist_backoff)
        self._cc.load_hot(tcb)
        if tcb.rto_at:
            self._timers.set(Timer.RETRANSMIT, float(tcb.rto_at))
        if tcb.delack_at:
            self._timers.set(Timer.DELAYED_ACK, float(tcb.delack_at))
        if tcb.keepalive_at:
            self._timers.set(Timer.KEEPALIVE, float(tcb.keepalive_at))
        if tcb.pto_at:
            self._timers.set(Timer.PTO, float(tcb.pto_at))
        self._last_send = float(tcb.last_send)
        self._recovery.load_hot(tcb)
        self._recv_buf.load_hot(tcb)  # before the bytes: C may have grown the buffer
        # The receive ring's bytes: in order, then the out-of-order ranges C held
        # (dp_flow_release packs them after the in-order ones, in sequence order).
        ranges = [(int(r.start), (int(r.end) - int(r.start)) & MASK, int(r.stamp))
                  for r in tcb.ooo[0:int(tcb.ooo_count)]]
        at = len(rcv) - sum(size for _, size, _ in ranges)
        self._recv_buf.push(rcv[:at])
        held: list[tuple[int, bytes, int]] = []
        for start, size, stamp in ranges:
            held.append((start, rcv[at:at + size], stamp))
            at += size
        self._reasm.load_hot(held)
        self._send_buf.capacity = int(tcb.snd_cap)  # C may have grown it
        self._send_buf.write(snd)
        self._import_close(tcb)
        self.counters.update(hot_counters(tcb))
        self._arm_reorder()  # RACK's reordering timer (RFC 8985 §6.3), as C left it
        if tcb.enter_pending:
            # C took an ACK on which recovery begins (DP_REASON_RECOVERY): what
            # _process_ack does once on_ack has entered it. The decision is that ACK's
            # (at its time); the retransmission goes now, and is timed from now, as
            # RACK's detection of lost retransmissions needs (a send time in the past
            # would find it lost before it could have been delivered).
            enter_at = float(tcb.enter_at)
            sent = enter_at if now is None or now < enter_at else now
            recovery = self._recovery
            rexmit = recovery.enter_from_c(self._snd_una, self._snd_max, self._rtt.srtt,
                                           enter_at, int(tcb.enter_delivered))
            self._rtt_seq = None  # Karn (RFC 6298 §3): the timed range may be resent
            self._now = sent  # the segments' TSval
            if rexmit is not None:
                self._retransmit(rexmit[0], rexmit[1], sent)  # RFC 6675 §5 step (4.3)
            self._arm_reorder()
            self._arm_pto(sent, restart=False)
        if now is not None and now > self._now:
            # C ran it meanwhile: what this object sends before its next event (a
            # close's last bytes, _send_before_reset) must not carry the TSval of the
            # time it went to C, older than C's own, which the peer's PAWS would drop.
            self._now = now
        self._dirty = True  # whatever it owes (an ACK, queued bytes) goes next

    def on_timer(self, now: float) -> None:
        """Handle every timer due at ``now`` (harmless to call early or twice)."""
        if self._parked:
            return
        self._now = now
        try:
            timers = self._timers
            for timer in timers.expired(now):
                if timers.is_set(timer):
                    continue  # re-armed by an earlier one (a loss probe re-arms the RTO)
                self._fire(timer, now)
        except Exception:  # pragma: no cover
            self.counters["internal_error"] += 1

    def _can_send_state(self) -> bool:
        return self._state in (
            TcpState.SYN_SENT, TcpState.SYN_RECEIVED, TcpState.ESTABLISHED,
            TcpState.CLOSE_WAIT,
        )

    def _segment(
        self,
        seq: Seq,
        flags: TcpFlags,
        payload: bytes = b"",
        *,
        with_ack: bool = True,
        syn_options: TcpOptions | None = None,
    ) -> TcpSegment:
        """Build one segment with ACK, window and options filled in."""
        if syn_options is not None:
            options = syn_options
            window = min(self._recv_buf.window, 0xFFFF)  # never scaled in a SYN (§2.2)
            self._rcv_adv = Seq.max(self._rcv_adv, self._rcv_nxt + window)
        else:
            window = self._advertise_window()
            ts = (ts_clock(self._now, self._ts_offset), self._ts_recent) if self._ts_ok else None
            blocks: tuple[tuple[Seq, Seq], ...] = ()
            room = self._sack_room()
            if room:
                blocks = self._sack_option(room)
            options = TcpOptions(timestamps=ts, sack_blocks=blocks)
        ack = Seq(0)
        if with_ack and flags & _ACK:
            ack = self._rcv_nxt
            self._last_ack_sent = ack
            self._last_ack_rcv_nxt = ack
            self._ack_now = False
            self._ack_immediate = False
            self._timers.cancel(Timer.DELAYED_ACK)
        return TcpSegment(
            self.local_port, self.remote_port, seq, ack, flags, window, payload,
            options,
        )

    def _sack_room(self) -> int:
        """How many SACK blocks the next segment may carry (0: none to send). RFC 2018
        §3: three fit beside the timestamp option, four without."""
        if self._sack_ok and (self._reasm.buffered or self._dsack is not None):
            return 3 if self._ts_ok else 4
        return 0

    def _data_mss(self) -> int:
        """Payload bytes a data segment may carry now: SMSS, less the room its SACK
        blocks may take (RFC 9293 §3.7.1: the data shrinks by the options' length, as
        Linux's tcp_current_mss; SMSS leaves room for the timestamp option only).
        Reserved whole (4 + 8 per block) while blocks ride on data, as dataplane.c's
        data_mss does, so that no segment outgrows the MTU."""
        room = self._sack_room()
        return max(self._smss - (4 + 8 * room if room else 0), 1)

    def _sack_option(self, room: int) -> tuple[tuple[Seq, Seq], ...]:
        """The SACK blocks of the next ACK. RFC 2883 §4: a D-SACK block first (rule 1:
        only for the most recent duplicate, so it goes in one ACK), then the queued
        block containing it (rule 4), then the SACK blocks of RFC 2018 §4, most
        recently changed first, without repeating a block already listed (rule 5)."""
        out: list[tuple[Seq, Seq]] = []
        dsack = self._dsack
        if dsack is not None:
            out.append(dsack)
            # Rule 4: the queued block it belongs to, as it is now (a duplicate that
            # also brought new data may have grown it, or been delivered with it).
            block = self._reasm.block_containing(dsack[0]) if self._reasm.buffered else None
            if block is not None:
                out.append(block)
            self._dsack = None
            self.counters["dsack_sent"] += 1
        if self._reasm.buffered:
            for block in self._reasm.sack_blocks(room):
                if len(out) >= room:
                    break
                if block not in out:
                    out.append(block)
        return tuple(out[:room])

    def _dsack_old(self, seg: TcpSegment) -> None:
        """RFC 2883 §4.1: a dropped segment whose data lies wholly below RCV.NXT is a
        duplicate: D-SACK it in the ACK that answers it (as Linux's tcp_send_dupack)."""
        n = len(seg.payload)
        if n and self._rcv_nxt - (seg.seq + n) >= 0 and self._rcv_nxt - seg.seq <= MAX_WINDOW:
            self._note_duplicate(seg.seq, seg.seq + n)

    def _note_duplicate(self, left: Seq, right: Seq) -> None:
        """A segment brought [left, right) again: report it in a D-SACK (RFC 2883 §4)
        and acknowledge at once (RFC 5681 §4.2: a duplicate is out of order too)."""
        if not self._sack_ok or not left < right:
            return
        self._dsack = (left, right)
        self._ack_now = True
        self._ack_immediate = True

    def _advertise_window(self) -> int:
        """The window field to send, with receiver SWS avoidance (RFC 9293 §3.8.6.2.2):
        the right edge moves only by at least min(buffer/2, MSS), and never backwards."""
        # Once per segment sent: sequence values as ints (see Seq for the arithmetic).
        shift = self._rcv_shift
        buf = self._recv_buf
        avail = min(buf.window, 0xFFFF << shift)
        nxt = self._rcv_nxt.value
        adv = self._rcv_adv.value
        current = max(((adv - nxt + HALF) & MASK) - HALF, 0)
        threshold = min(buf.capacity // 2, self._rcv_mss)
        wnd = avail if avail - current >= threshold else min(current, avail)
        field = wnd >> shift
        if (field << shift) < current:
            # Scaling rounds down; round up instead of shrinking the window (as Linux),
            # as far as the receive buffer's slack covers (ReceiveBuffer.slack). Past
            # it (the promise already rests on the slack), rounding up at every ACK
            # would creep the edge beyond what can be held: retract by less than one
            # granule instead, which RFC 7323 §2.4 and Appendix F allow and senders
            # must accept (Linux's tcp_shrink_window, commit b650d953, for the same
            # creep).
            up = (current + (1 << shift) - 1) >> shift
            if (up << shift) <= buf.window + buf.slack:
                field = up
        field = min(field, 0xFFFF)
        edge = (nxt + (field << shift)) & MASK
        if ((edge - adv + HALF) & MASK) > HALF:  # the right edge never moves left
            self._rcv_adv = Seq(edge)
        return field

    def _syn_options(self) -> TcpOptions:
        # In SYN-RECEIVED answer the peer's SYN; in SYN-SENT offer what is configured.
        answering = self._negotiated if self._state is TcpState.SYN_RECEIVED else None
        return syn_options(
            self.config, ts_clock(self._now, self._ts_offset), self._ts_recent, answering
        )

    def _transmit(self, now: float) -> None:
        state = self._state
        if state is TcpState.CLOSED or state is TcpState.LISTEN:
            return
        sent = len(self._out)
        if state in (TcpState.SYN_SENT, TcpState.SYN_RECEIVED):
            if self._snd_nxt == self._iss:
                flags = TcpFlags.SYN if state is TcpState.SYN_SENT else TcpFlags.SYN | _ACK
                self._out.append(
                    self._segment(self._iss, flags, syn_options=self._syn_options())
                )
                self._snd_nxt = self._iss + 1
                self._snd_max = Seq.max(self._snd_max, self._snd_nxt)
                self._timers.set_if_unset(Timer.RETRANSMIT, now + self._rtt.rto)
            if state is TcpState.SYN_SENT:
                return
        elif state is not TcpState.TIME_WAIT:
            snd_max = self._snd_max
            if self._idle_restart_due(now):
                self._cc.on_idle(now, self._rtt.rto)
            recovery = self._recovery
            if recovery.in_recovery and recovery.sack_ok:
                self._send_sack_recovery(now)
            else:
                if recovery.rexmit_head:
                    recovery.rexmit_head = False
                    self._retransmit(self._snd_una, self._data_mss(), now)
                self._send_new(now)
            self._send_fin()
            if self._snd_max != self._snd_una:
                self._timers.set_if_unset(Timer.RETRANSMIT, now + self._rtt.rto)
            if self._snd_max > snd_max:
                # RFC 8985 §7.2: sending new data restarts the loss probe timer.
                self._arm_pto(now, restart=True)
                self._note_cwnd_use()
            self._arm_persist(now)
        if self._ack_now and len(self._out) == sent and state is not TcpState.SYN_SENT:
            # RFC 9293 §3.10.7.4 sends <SEQ=SND.NXT>; SND.NXT here is rewound by an RTO
            # (go-back-N), and a pure ACK numbered below the peer's RCV.NXT would be
            # unacceptable there and its ACK ignored - two peers both recovering from
            # RTOs would then drop each other's ACKs forever. SND.MAX, the highest
            # sequence sent, is what the peer expects (Linux never rewinds snd_nxt).
            self._out.append(self._segment(self._snd_max, _ACK))
        if len(self._out) > sent:
            self._last_send = now

    def _grow_send_buffer(self) -> None:
        """Send-buffer autotuning (Linux's tcp_sndbuf_expand): room for two congestion
        windows, so that the application refills one while the other is in flight, up
        to ``send_buffer_max``; never shrinks. A fixed 256 KiB held a 20 ms path to 182
        segments a round trip where the kernel's grew on."""
        want = min(2 * self._cc.cwnd, self.config.send_buffer_max)
        if want > self._send_buf.capacity:
            self._send_buf.capacity = want

    def _note_cwnd_use(self) -> None:
        """The most data in flight this window (Linux's tcp_cwnd_validate): since
        SND.UNA passed the end of the last one. An ACK may grow cwnd when the window
        used at least half of it (``cwnd_limited``, RFC 7661 §4.3). The flight at the
        ACK alone would not do: the ACKs of a batch are taken before anything more is
        sent, each leaving less in flight, and slow start grew by 4 segments on a
        flight of 10 instead of 10."""
        flight = self._snd_max - self._snd_una
        if self._snd_una >= self._cwnd_use_end or flight > self._cwnd_use_max:
            self._cwnd_use_max = flight
            self._cwnd_use_end = self._snd_max

    def _idle_restart_due(self, now: float) -> bool:
        """RFC 5681 §4.1: after an idle period longer than an RTO, restart from the
        restart window. Idle is measured from the last segment sent, a pure ACK too
        (both planes; Linux's lsndtime counts data only), so a connection that has
        been acknowledging a stream keeps its window."""
        return (
            self._snd_max == self._snd_una
            and len(self._send_buf) > 0
            and now - self._last_send > self._rtt.rto
        )

    def _usable_window(self) -> int:
        # RFC 3042: limited transmit lets cwnd be exceeded by up to 2 SMSS.
        cwnd = self._cc.cwnd + self._recovery.limited_transmit_allowance()
        return (self._snd_una + min(self._snd_wnd, cwnd)) - self._snd_nxt

    def _send_new(self, now: float) -> None:
        """Send queued data allowed by both windows, with Nagle (RFC 9293 §3.7.4) and
        sender SWS avoidance (§3.8.6.2.1); first an MSS probe if one is due (RFC 4821
        §7)."""
        if self._pmtu_probe_wanted(now):
            assert self._pmtu is not None
            size = self._pmtu.size_due(now)
            if size is not None:
                self._pmtu.sent(self._snd_nxt, size)
                self.counters["mss_probes"] += 1
                self._emit_data(self._snd_nxt, size, now)
        mss = self._data_mss()
        while True:
            offset = self._snd_nxt - self._buf_seq
            avail = len(self._send_buf) - offset
            if avail <= 0:
                return
            n = min(avail, mss, self._usable_window())
            if n <= 0:
                return
            if n < mss and not self.small_segment_allowed(self._snd_nxt, n, avail):
                return
            self._emit_data(self._snd_nxt, n, now)

    def _pmtu_probe_wanted(self, now: float) -> bool:
        """An MSS probe is in flight, or one may go now (RFC 4821 §7.3: with new data,
        a full probe's worth queued, the windows open to it, no loss being recovered
        and no SACK blocks shrinking the segment): the connection stays here for it."""
        search = self._pmtu
        if search is None:
            return False
        if search.probe_start is not None:
            return True
        if now < search.due or self._state is not TcpState.ESTABLISHED or \
                self._recovery.in_recovery or self._snd_nxt != self._snd_max or \
                self._data_mss() != self._smss:
            return False
        size = search.next_size()
        unsent = len(self._send_buf) - (self._snd_nxt - self._buf_seq)
        return size > self._smss and unsent >= size and self._usable_window() >= size

    def small_segment_allowed(self, seq: Seq, n: int, avail: int) -> bool:
        """May a segment of ``n`` < SMSS bytes starting at ``seq`` go now, with
        ``avail`` bytes queued from ``seq``? The one statement of the sender's rules
        (``dataplane.c``'s ``small_segment_allowed`` transcribes it).

        * a retransmission after an RTO (``seq`` below SND.MAX) is never held back;
        * Nagle (RFC 9293 §3.7.4, RFC 896): the last of the queued data goes when
          nothing is outstanding (``seq`` == SND.UNA), or always with TCP_NODELAY, or
          when a FIN follows it, or a reset (``_send_before_reset``);
        * sender SWS avoidance (§3.8.6.2.1): otherwise only a segment of at least half
          the largest window the peer ever offered.
        """
        return bool(
            seq < self._snd_max
            or (n == avail and (self.config.nodelay or seq == self._snd_una
                                or self._fin_seq is not None or self._flushing))
            or (self._max_snd_wnd and n >= self._max_snd_wnd // 2)
        )

    def _emit_data(self, seq: Seq, n: int, now: float) -> None:
        """Emit data bytes [seq, seq+n) (and the FIN if it directly follows)."""
        payload = self._send_buf.peek(seq - self._buf_seq, n)
        n = len(payload)
        end = seq + n
        flags = _ACK
        if end - self._buf_seq == len(self._send_buf):
            flags |= TcpFlags.PSH
        if self._fin_seq is not None and end == self._fin_seq and self._fin_allowed():
            flags |= TcpFlags.FIN
        retransmit = seq < self._snd_max
        recovery = self._recovery
        recovery.sent(n)  # RFC 6937 §3: prr_out
        if retransmit:
            self._rtt_seq = None  # Karn: no sample from a range that was resent
            self.counters["retransmitted_segments"] += 1
            if self._pmtu is not None and self._pmtu.resent(seq, end, now):
                self.counters["mss_probe_failed"] += 1
            srtt = self._rtt.srtt
            # D-SACKs for it come back about an RTT later; allow two.
            hold = 2 * srtt + self.config.delayed_ack_timeout if srtt else self._rtt.rto
            recovery.on_retransmit(
                seq, n, ts_clock(now, self._ts_offset) if self._ts_ok else None, hold, now
            )
            recovery.note_retransmit(seq, n, now)  # RFC 8985 §6.2: timed, for RACK
        else:
            if self._rtt_seq is None:
                self._rtt_seq, self._rtt_time = end, now
            recovery.new_data_sent(n)
            recovery.note_sent(end, now, self._snd_una)  # RFC 8985: its send time, for RACK
        self._out.append(self._segment(seq, flags, payload))
        end = end + (1 if flags & TcpFlags.FIN else 0)
        if end > self._snd_nxt:
            self._snd_nxt = end
        if end > self._snd_max:
            self._snd_max = end
        self.counters["segments_sent"] += 1

    def _retransmit(self, seq: Seq, n: int, now: float) -> None:
        """Resend [seq, seq+n) clipped to what is outstanding (data and/or FIN)."""
        data_end = self._buf_seq + len(self._send_buf)
        n = min(n, data_end - seq)
        if n > 0:
            saved = self._snd_nxt
            mss = self._data_mss()  # a range sized by SMSS may need two now
            for off in range(0, n, mss):
                self._emit_data(seq + off, min(mss, n - off), now)
            self._snd_nxt = Seq.max(saved, self._snd_nxt)
        elif self._fin_seq is not None and seq == self._fin_seq:
            self._out.append(self._segment(seq, TcpFlags.FIN | _ACK))
            self.counters["retransmitted_segments"] += 1

    def _fin_allowed(self) -> bool:
        return self._state in (TcpState.FIN_WAIT_1, TcpState.CLOSING, TcpState.LAST_ACK)

    def _send_fin(self) -> None:
        fin = self._fin_seq
        if fin is None or not self._fin_allowed() or self._snd_nxt != fin:
            return
        self._out.append(self._segment(fin, TcpFlags.FIN | _ACK))
        self._snd_nxt = fin + 1
        self._snd_max = Seq.max(self._snd_max, self._snd_nxt)

    def _send_sack_recovery(self, now: float) -> None:
        """RFC 6675 §5 step (C): while cwnd - pipe >= 1 SMSS, send NextSeg()."""
        recovery, mss = self._recovery, self._data_mss()
        for _ in range(1024):  # bounded: each pass sends a segment or stops
            unsent = len(self._send_buf) - (self._snd_nxt - self._buf_seq)
            room = (self._snd_una + self._snd_wnd) - self._snd_nxt
            nxt = recovery.next_seg(
                self._snd_una, self._snd_max, self._cc.cwnd, unsent > 0 and room > 0
            )
            if nxt is None:
                return
            if recovery.board.last_rule == 2:  # new data, within the peer's window
                before = len(self._out)
                self._emit_data(self._snd_nxt, min(unsent, mss, room), now)
                if len(self._out) == before:
                    return
                continue
            self._retransmit(nxt[0], nxt[1], now)
            recovery.retransmitted(nxt[0], nxt[1])

    def _arm_persist(self, now: float) -> None:
        """RFC 9293 §3.8.6.1: with data queued, nothing in flight and a window too
        small to send, probe on the persist timer (also the SWS override timeout)."""
        pending = len(self._send_buf) - (self._snd_nxt - self._buf_seq)
        if pending > 0 and self._snd_una == self._snd_max and self._state.synchronized:
            if not self._timers.is_set(Timer.PERSIST):
                self._timers.set(Timer.PERSIST, now + self._persist_interval())
        else:
            self._timers.cancel(Timer.PERSIST)
            self._persist_backoff = 0

    def _persist_interval(self) -> float:
        base = self._rtt.rto * (1 << min(self._persist_backoff, 16))
        return min(max(base, self.config.min_rto), self.config.max_rto)

    # ------------------------------------------------------------------ timers

    def _fire(self, timer: Timer, now: float) -> None:
        if timer is Timer.RETRANSMIT:
            self._on_rto(now)
        elif timer is Timer.DELAYED_ACK:
            self._ack_now = True
        elif timer is Timer.REORDER:
            self._on_reorder_timer(now)
        elif timer is Timer.PTO:
            self._on_pto(now)
        elif timer is Timer.PERSIST:
            self._on_persist(now)
        elif timer is Timer.KEEPALIVE:
            self._on_keepalive(now)
        elif timer is Timer.TIME_WAIT:
            self._enter_closed(notify=True)
        elif timer is Timer.FIN_WAIT_2 and self._state is TcpState.FIN_WAIT_2:
            self.counters["fin_wait_2_timeout"] += 1
            self._enter_closed(notify=True)

    def _on_rto(self, now: float) -> None:
        """RFC 6298 §5.4-5.7 retransmission timeout."""
        if self._snd_una == self._snd_max and self._state.synchronized:
            return
        self._retries += 1
        handshake = self._state in (TcpState.SYN_SENT, TcpState.SYN_RECEIVED)
        limit = self.config.max_syn_retries if handshake else self.config.max_retries
        if self._retries > limit:
            self.counters["retransmit_timeout_abort"] += 1
            self._fail(ConnectionFailure.TIMEOUT)
            return
        self.counters["rto_expired"] += 1
        if not handshake and self.config.black_hole_rtos and \
                self._retries >= self.config.black_hole_rtos:
            self._black_hole_step(now)
        self._rtt.backoff()  # RFC 6298 §5.5
        self._rtt_seq = None  # Karn
        if self._state.synchronized and not handshake:
            self._recovery.on_rto(
                self._snd_max, self._snd_max - self._snd_una, now, snd_una=self._snd_una,
                frto=self.config.frto,
            )
            self._timers.cancel(Timer.REORDER)  # the scoreboard is gone (RFC 6675 §5.1)
            self._timers.cancel(Timer.PTO)  # RTO recovery (RFC 8985 §7.2)
        # Go-back-N from SND.UNA (a SYN/SYN-ACK goes again with SND.NXT == ISS).
        self._snd_nxt = self._snd_una
        self._probe_end = None
        self._timers.set(Timer.RETRANSMIT, now + self._rtt.rto)  # §5.6

    def path_too_big(self, mtu: int, seq: Seq, now: float) -> bool:
        """A router's "packet too big" for our segment at ``seq``, naming its next hop's
        ``mtu`` (RFC 1191 §6.3 for IPv4, RFC 8201 §4 for IPv6). Believed only for a
        segment in flight (RFC 5927 §4.1: SND.UNA <= seq < SND.NXT, as Linux's
        tcp_v4_err), so a blind attacker must guess the window. The MSS drops to fit
        the IP and TCP headers and the timestamp option into ``mtu``, never below the
        family's minimum, and never rises here. What went out bigger than the path
        takes was dropped: it is resent now, at the new size, and not taken for
        congestion (cwnd stays; RFC 1191 §6.5, Linux's tcp_simple_retransmit). True
        when the MSS dropped."""
        if not names_segment_in_flight(seq, self._snd_una, self._snd_max):
            self.counters["path_too_big_stale"] += 1
            return False
        if not self._lower_mss(path_mss(mtu, len(self.local_ip) == 16), "mss_path_mtu", now):
            return False
        recovery = self._recovery
        if not recovery.in_recovery and not recovery.sacked_bytes:
            # Nothing SACKed: what is in flight went out whole and was dropped whole.
            # Resend it now at the new size (as tcp_simple_retransmit; in recovery, or
            # with SACKed data, recovery resends what is lost at the new size itself).
            self._now = now
            self._retransmit(self._snd_una, min(self._snd_max - self._snd_una,
                                                self._cc.cwnd), now)
            self._last_send = now
            self._timers.set(Timer.RETRANSMIT, now + self._rtt.rto)  # RFC 6298 §5.3
        return True

    def take_found_path_mss(self) -> int | None:
        """The MSS (with options) a search after a black-hole guess found, once: for
        the control plane to remember for the destination (``Datapath.learn_path``), as
        a router's report is. None: nothing new."""
        search = self._pmtu
        if search is None or search.found is None:
            return None
        found, search.found = search.found, None
        return found + (TS_OPTION_LEN if self._ts_ok else 0)

    def clamp_to_path(self, mss: int, now: float) -> bool:
        """A new connection to a destination whose path MSS was learnt (``path_mss``,
        from another connection's router report, kept as the kernel keeps a route's
        PMTU): it sends no bigger segments from the start. True if that lowered it."""
        return self._lower_mss(mss, "mss_path_learnt", now)

    def _path_mss(self, mss: int) -> None:
        """A new MSS mid-connection (smaller after a cut, larger after a probe):
        congestion control and recovery count in it from now on; the scoreboard keeps
        what it knows (``set_mss`` is the handshake's and starts it afresh)."""
        self._smss = mss
        self._cc.set_mss(mss)
        self._recovery.set_mss(mss)

    def _black_hole_step(self, now: float) -> None:
        """RFC 4821 §3 black-hole detection (Linux's tcp_mtu_probing): segments keep
        timing out, as full-sized ones do behind a smaller MTU whose ICMP never comes
        (filtered, or sent to a kernel with no socket for it). Send smaller ones: first
        ``black_hole_mss``, then half as much at each further timeout, never below the
        family's minimum. The retransmission that follows uses the new size."""
        mss = self._smss + (TS_OPTION_LEN if self._ts_ok else 0)
        base = self.config.black_hole_mss
        self._lower_mss(base if mss > base else mss // 2, "mss_black_hole", now)

    def _lower_mss(self, target: int, counter: str, now: float) -> bool:
        """Lower the MSS (the timestamp option included, as advertised) to ``target``,
        never below the family's minimum (RFC 9293 §3.7.1 for IPv4, RFC 8200 §5 for
        IPv6) and never up; ``counter`` counts it. True when it dropped. The search for
        it again starts (``PmtuSearch.after_cut``): at once after a black-hole guess,
        later after a router's report."""
        ts_len = TS_OPTION_LEN if self._ts_ok else 0
        target = max(min_mss(len(self.local_ip) == 16), target)
        if target >= self._smss + ts_len:
            return False
        failed = self._smss
        self._path_mss(target - ts_len)
        self.counters[counter] += 1
        ceiling = self._negotiated.smss if self._negotiated is not None else failed
        self._pmtu = PmtuSearch.after_cut(self._smss, failed, ceiling, now,
                                          at_once=counter == "mss_black_hole")
        return True

    def _tlp_on(self) -> bool:
        """Loss probes for this connection: configured, and SACK in use (RFC 8985 §2)."""
        return self.config.tlp and self._sack_ok

    def _tlp_possible(self) -> bool:
        """RFC 8985 §7.2: data outstanding and a loss probe allowed (the recovery
        side's conditions, ``LossRecovery.tlp_allowed``); not for a FIN (left to the
        RTO) nor beside a zero-window probe."""
        fin = self._fin_seq
        return (
            self._tlp_on()
            and (self._state is TcpState.ESTABLISHED or self._state is TcpState.CLOSE_WAIT)
            and self._snd_una != self._snd_max
            and self._probe_end is None
            and (fin is None or not self._snd_max > fin)
            and self._recovery.tlp_allowed(self._snd_una)
        )

    def _arm_pto(self, now: float, *, restart: bool) -> None:
        """RFC 8985 §7.2: (re)start the loss probe timer after new data was sent or
        cumulatively acknowledged (``restart``); cancel it whenever no probe may go."""
        if not self._tlp_possible():
            self._timers.cancel(Timer.PTO)
        elif restart:
            timers = self._timers
            timers.set(Timer.PTO, self._recovery.pto(
                self._rtt.srtt, self._snd_max - self._snd_una, now,
                timers.deadline(Timer.RETRANSMIT)))

    def _on_pto(self, now: float) -> None:
        """RFC 8985 §7.3 TLP_send_probe: the lowest unsent segment if the peer's window
        admits one (cwnd and Nagle aside, as Linux), else the highest segment sent,
        again; then the RTO is re-armed, not the PTO."""
        if not self._tlp_possible():
            return
        recovery = self._recovery
        unsent = len(self._send_buf) - (self._snd_nxt - self._buf_seq)
        room = (self._snd_una + self._snd_wnd) - self._snd_nxt
        if unsent > 0 and room > 0 and self._snd_nxt == self._snd_max:
            self._emit_data(self._snd_nxt, min(unsent, self._data_mss(), room), now)
            recovery.tlp_sent(self._snd_max, False)
        else:
            start = Seq.max(self._snd_max - self._data_mss(), self._snd_una)
            self._retransmit(start, self._snd_max - start, now)
            recovery.tlp_sent(self._snd_max, True)
        self._last_send = now
        self._timers.set(Timer.RETRANSMIT, now + self._rtt.rto)

    def _on_persist(self, now: float) -> None:
        pending = len(self._send_buf) - (self._snd_nxt - self._buf_seq)
        if pending <= 0 or not self._state.synchronized:
            return
        usable = self._usable_window()
        if usable > 0:
            # SWS override (§3.8.6.2.1): send what fits even though it is small.
            self._emit_data(self._snd_nxt, min(pending, usable, self._data_mss()), now)
        else:
            # Zero-window probe: one byte beyond the window (§3.8.6.1). It does not
            # advance SND.NXT; an ACK covering it is accepted through _probe_end.
            self.counters["zero_window_probes"] += 1
            payload = self._send_buf.peek(self._snd_nxt - self._buf_seq, 1)
            self._out.append(self._segment(self._snd_nxt, _ACK, payload))
            self._probe_end = self._snd_nxt + 1
        self._persist_backoff += 1
        self._timers.set(Timer.PERSIST, now + self._persist_interval())

    def _on_keepalive(self, now: float) -> None:
        """RFC 9293 §3.8.4: a probe carrying SND.UNA - 1 (as Linux) lies below the
        peer's window, so the peer must answer with an ACK."""
        if self._state not in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT):
            return
        if self._keepalive_sent >= self.config.keepalive_probes:
            self.counters["keepalive_timeout"] += 1
            self._fail(ConnectionFailure.TIMEOUT)
            return
        self._keepalive_sent += 1
        self.counters["keepalive_probes"] += 1
        self._out.append(self._segment(self._snd_una - 1, _ACK))
        self._timers.set(Timer.KEEPALIVE, now + self.config.keepalive_interval)

    def _arm_keepalive(self, now: float) -> None:
        if self.config.keepalive and self._state in (
            TcpState.ESTABLISHED, TcpState.CLOSE_WAIT
        ):
            self._keepalive_sent = 0
            self._timers.set(Timer.KEEPALIVE, now + self.config.keepalive_idle)

    # ------------------------------------------------------------------ state changes

    def _enter_closed(self, *, notify: bool) -> None:
        self._state = TcpState.CLOSED
        self._timers.cancel_all()
        self._reasm.clear()
        self._recovery.clear()
        if notify:
            self._events.append(TcpEvent.CLOSED)

    def _fail(self, reason: ConnectionFailure) -> None:
        """The connection died under us: report RESET then CLOSED."""
        self.error = reason
        if self._state is not TcpState.CLOSED:
            self._events.append(TcpEvent.RESET)
        self._enter_closed(notify=self._state is not TcpState.CLOSED)

    def _enter_time_wait(self, now: float) -> None:
        self._state = TcpState.TIME_WAIT
        self._timers.cancel_all()
        self._timers.set(Timer.TIME_WAIT, now + self.config.time_wait)

    def _established(self, now: float) -> None:
        self._state = TcpState.ESTABLISHED
        self._events.append(TcpEvent.ESTABLISHED)
        self._retries = 0
        self._arm_keepalive(now)
        if self._fin_seq is not None:  # a close() issued during the handshake
            self._state = TcpState.FIN_WAIT_1

    def _take_syn(self, syn: TcpSegment, now: float) -> None:
        """Record the peer's SYN: IRS, options (RFC 9293 §3.7.1, RFC 7323, RFC 2018)."""
        cfg, opts = self.config, syn.options
        self._irs = syn.seq
        self._rcv_nxt = syn.seq + 1
        self._rcv_adv = self._rcv_nxt
        self._last_ack_rcv_nxt = self._rcv_nxt
        neg = self._negotiated = negotiate(cfg, opts)
        self._snd_shift, self._rcv_shift = neg.snd_shift, neg.rcv_shift
        self._recv_buf.slack = (1 << neg.rcv_shift) - 1  # the scale's rounding
        self._ts_ok = neg.timestamps
        if self._ts_ok and opts.timestamps is not None:
            self._ts_recent = opts.timestamps[0]
            self._ts_recent_age = now
        self._sack_ok = neg.sack
        self.set_mss(neg.smss)
        self._snd_wnd = syn.window  # never scaled in a SYN (RFC 7323 §2.2)
        self._max_snd_wnd = max(self._max_snd_wnd, self._snd_wnd)
        self._snd_wl1 = syn.seq
        self._rcv_mss = neg.rcv_mss

    def set_mss(self, mss: int) -> None:
        self._smss = mss
        self._cc.set_mss(mss)
        self._recovery.configure(mss, self._sack_ok)

    # ------------------------------------------------------------------ receive side

    def receive(self, seg: TcpSegment, now: float) -> None:
        """SEGMENT ARRIVES (RFC 9293 §3.10.7). Never raises; drops are counted."""
        if self._parked:
            self.counters["internal_error_parked"] += 1
            return
        self._now = now
        self.counters["segments_received"] += 1
        try:
            self._receive(seg, now)
        except Exception:  # pragma: no cover - a bug must not take the stack down
            self.counters["internal_error"] += 1

    def _drop(self, reason: str) -> None:
        self.counters[reason] += 1

    def _receive(self, seg: TcpSegment, now: float) -> None:
        state = self._state
        if state is TcpState.CLOSED:
            self._drop("drop_closed")
            rst = rst_for(seg)
            if rst is not None:
                self._out.append(rst)
            return
        if state is TcpState.SYN_SENT:
            self._receive_syn_sent(seg, now)
            return
        if state is TcpState.LISTEN:  # a Listener handles LISTEN
            self._drop("drop_closed")
            return
        self._receive_synchronized(seg, now)

    def _receive_syn_sent(self, seg: TcpSegment, now: float) -> None:
        """RFC 9293 §3.10.7.3."""
        flags = seg.flags
        if flags & _ACK and not (self._iss < seg.ack <= self._snd_max):
            self._drop("drop_syn_sent_bad_ack")
            if not flags & TcpFlags.RST:
                self._out.append(self._rst_seq(seg.ack))
            return
        if flags & TcpFlags.RST:
            # RFC 5961 §3.2 / RFC 9293: only a RST acknowledging our SYN is believed.
            if flags & _ACK:
                self.counters["reset_received"] += 1
                self._fail(ConnectionFailure.REFUSED)
            else:
                self._drop("drop_syn_sent_rst_bad_ack")
            return
        if not flags & TcpFlags.SYN:
            self._drop("drop_syn_sent_no_syn")
            return
        self._take_syn(seg, now)
        if flags & _ACK:
            self._snd_una = seg.ack
            self._buf_seq = self._iss + 1
            self._snd_wl1, self._snd_wl2 = seg.seq, seg.ack
            self._sample_rtt_handshake(now)
            self._timers.cancel(Timer.RETRANSMIT)
            self._established(now)
            self._ack_now = True
            self._rcv_text(seg, seg.seq + 1, seg.payload, now)
        else:
            # Simultaneous open (RFC 9293 §3.5, figure 8): SYN-RECEIVED, SYN-ACK again.
            self._state = TcpState.SYN_RECEIVED
            self._snd_nxt = self._iss
            self.counters["simultaneous_open"] += 1

    def _sample_rtt_handshake(self, now: float) -> None:
        if self._retries == 0:  # Karn: a retransmitted SYN gives no sample
            self._rtt.sample(max(now - self._last_send, 0.0))
        else:
            self._rtt.syn_timed_out()  # RFC 6298 §5.7: RTO of at least 3 s from now on
        self._rtt.reset_backoff()

    def _rst_seq(self, seq: Seq) -> TcpSegment:
        return TcpSegment(self.local_port, self.remote_port, seq, Seq(0), TcpFlags.RST, 0)

    def _acceptable(self, seq: Seq, seg_len: int) -> bool:
        """RFC 9293 §3.10.7.4 first check, the four cases of the acceptability test."""
        wnd = max(self._rcv_adv - self._rcv_nxt, 0)
        if seg_len == 0:
            return seq == self._rcv_nxt if wnd == 0 else seq.in_window(self._rcv_nxt, wnd)
        if wnd == 0:
            return False
        return seq.in_window(self._rcv_nxt, wnd) or (seq + seg_len - 1).in_window(
            self._rcv_nxt, wnd
        )

    def _challenge_ack(self, now: float) -> None:
        """RFC 5961 §7: challenge ACKs, at most ``challenge_ack_limit`` per second."""
        if now - self._challenge_window >= 1.0:
            self._challenge_window, self._challenge_count = now, 0
        if self._challenge_count < self.config.challenge_ack_limit:
            self._challenge_count += 1
            self.counters["challenge_acks_sent"] += 1
            self._ack_now = True
        else:
            self.counters["challenge_acks_ratelimited"] += 1

    def _receive_synchronized(self, seg: TcpSegment, now: float) -> None:
        flags = seg.flags
        is_rst = bool(flags & TcpFlags.RST)
        ts = seg.options.timestamps
        seg_len = seg.seg_len

        if self._ack_immediate and seg_len and not is_rst:
            # RFC 5681 §4.2: each out-of-order, duplicate or gap-filling segment is
            # ACKed at once. Segments of one receive batch are taken before anything is
            # sent, and one ACK for all would leave the sender a single ACK for a whole
            # flight in recovery; lose it and only its RTO is left (Linux's sender arms
            # no loss probe in recovery). The owed ACK goes out now, as it stands.
            self._out.append(self._segment(self._snd_max, _ACK))
            self._last_send = now  # as every segment _transmit sends (the idle clock)

        # RFC 7323 §3.2: once negotiated, a non-RST segment without TSopt SHOULD be
        # dropped. Linux accepts it (tcp_validate_incoming checks PAWS only when a
        # timestamp is present), and so do we, for interoperability with middleboxes
        # that strip options: it is processed without PAWS and cannot move TS.Recent
        # (the §4.3 update below needs a TSval). Counted, so it stays visible.
        if self._ts_ok and ts is None and not is_rst:
            self.counters["ts_missing_accepted"] += 1
        # RFC 7323 §5.3 R1: PAWS.
        if self._ts_ok and ts is not None and not is_rst and ts_before(ts[0], self._ts_recent):
            if now - self._ts_recent_age <= PAWS_IDLE:
                self._drop("drop_paws")
                self._ack_now = True
                self._dsack_old(seg)  # a replicated old segment (as Linux)
                return
            self._ts_recent = ts[0]  # §5.5: TS.Recent went stale; adopt the new clock

        if (
            self._state is TcpState.SYN_RECEIVED
            and flags & TcpFlags.SYN
            and not flags & _ACK
            and seg.seq == self._irs
        ):
            # The peer retransmitted its SYN: our SYN-ACK was lost; resend it.
            self.counters["syn_retransmit_received"] += 1
            self._snd_nxt = self._iss
            return

        # First check: sequence acceptability.
        if not self._acceptable(seg.seq, seg_len):
            zero_window_ack = (
                self._rcv_adv == self._rcv_nxt and flags & _ACK and not flags & TcpFlags.SYN
            )
            if is_rst:
                self._drop("drop_rst_out_of_window")
                return
            self._drop("drop_out_of_window")
            self._ack_now = True
            self._dsack_old(seg)
            if self._state is TcpState.TIME_WAIT and flags & TcpFlags.FIN:
                # RFC 9293 §3.10.7.4 eighth, TIME-WAIT: a retransmitted FIN restarts 2MSL.
                self._timers.set(Timer.TIME_WAIT, now + self.config.time_wait)
            if not zero_window_ack:
                return
            # RFC 9293 §3.10.7.4: with a zero window, valid ACKs are still processed.
            seg = TcpSegment(
                seg.src_port, seg.dst_port, seg.seq, seg.ack, flags & ~TcpFlags.FIN,
                seg.window, b"", seg.options,
            )
            seg_len = 0
            flags = seg.flags

        # Second: RST (RFC 5961 §3.2).
        if is_rst:
            if seg.seq == self._rcv_nxt:
                self.counters["reset_received"] += 1
                if self._state in (TcpState.CLOSING, TcpState.LAST_ACK, TcpState.TIME_WAIT):
                    self._enter_closed(notify=True)
                else:
                    self._fail(ConnectionFailure.RESET)
            else:
                self._drop("drop_rst_challenged")
                self._challenge_ack(now)
            return

        # Fourth: SYN in a synchronized state (RFC 5961 §4).
        if flags & TcpFlags.SYN:
            self._drop("drop_syn_challenged")
            self._challenge_ack(now)
            return

        # Fifth: ACK.
        if not flags & _ACK:
            self._drop("drop_no_ack")
            return

        # RFC 7323 §4.3: record TS.Recent from the segment that covers Last.ACK.sent.
        if (
            self._ts_ok
            and ts is not None
            and seg.seq <= self._last_ack_sent
            and not ts_before(ts[0], self._ts_recent)
        ):
            self._ts_recent, self._ts_recent_age = ts[0], now

        if self._state is TcpState.SYN_RECEIVED:
            if not (self._snd_una < seg.ack <= self._snd_max):
                self._drop("drop_syn_received_bad_ack")
                self._out.append(self._rst_seq(seg.ack))
                return
            self._snd_una = seg.ack
            self._snd_nxt = Seq.max(self._snd_nxt, seg.ack)
            self._snd_wnd = seg.window << self._snd_shift
            self._max_snd_wnd = max(self._max_snd_wnd, self._snd_wnd)
            self._snd_wl1, self._snd_wl2 = seg.seq, seg.ack
            self._sample_rtt_handshake(now)
            self._timers.cancel(Timer.RETRANSMIT)
            self._retries = 0
            self._established(now)
        elif not self._process_ack(seg, now):
            return

        if self._state is TcpState.CLOSED:
            return
        self._arm_keepalive(now)

        # Seventh: text; eighth: FIN.
        if seg.payload or flags & TcpFlags.FIN:
            self._rcv_text(seg, seg.seq, seg.payload, now)

    # -- ACK processing ----------------------------------------------------------------

    def _process_ack(self, seg: TcpSegment, now: float) -> bool:
        """RFC 9293 §3.10.7.4 fifth check for synchronized states after SYN-RECEIVED.
        Returns False when the segment must be dropped."""
        ack = seg.ack
        upper = self._snd_max
        if self._probe_end is not None and self._probe_end > upper:
            upper = self._probe_end
        if ack > upper:
            # RFC 9293 / RFC 5961 §5.2: ACK for something not yet sent.
            self._drop("drop_ack_unsent")
            self._ack_now = True
            return False
        if ack < self._snd_una - max(self._max_snd_wnd, 1):
            # RFC 5961 §5.2: too old to be from this connection: blind injection.
            self._drop("drop_ack_too_old")
            self._ack_now = True
            return False

        acked = ack - self._snd_una
        new_wnd = seg.window << self._snd_shift
        dupack = (
            acked == 0
            and self._snd_max != self._snd_una
            and not seg.payload
            and not seg.flags & (TcpFlags.SYN | TcpFlags.FIN)
            and new_wnd == self._snd_wnd
        )
        flight_before = self._snd_max - self._snd_una
        if acked > 0:
            self._ack_advanced(ack, seg, now)

        # Window update (RFC 9293 §3.10.7.4, SND.WL1/WL2 rule).
        if acked >= 0 and (
            self._snd_wl1 < seg.seq or (self._snd_wl1 == seg.seq and self._snd_wl2 <= ack)
        ):
            opened = new_wnd > self._snd_wnd
            self._snd_wnd = new_wnd
            self._snd_wl1, self._snd_wl2 = seg.seq, ack
            if new_wnd > self._max_snd_wnd:
                self._max_snd_wnd = new_wnd
            if opened:
                self._persist_backoff = 0

        recovery = self._recovery
        was_in_recovery = recovery.in_recovery
        ts = seg.options.timestamps
        rexmit = recovery.on_ack(
            self._snd_una, self._snd_max, acked, dupack, seg.options.sack_blocks,
            flight_before, self._rtt.srtt, now,
            cwnd_used=max(flight_before, self._cwnd_use_max),
            tsecr=ts[1] if self._ts_ok and ts is not None else None, seg_ack=seg.ack,
        )
        if acked > 0:
            self._grow_send_buffer()
        if recovery.frto:
            self._frto_ack(acked, dupack, now)
        if recovery.resume_at_snd_max:
            # RFC 4015 §3.2: the timeout was spurious; what go-back-N would resend is
            # still in flight, so continue with new data from SND.MAX.
            recovery.resume_at_snd_max = False
            self._snd_nxt = self._snd_max
        if recovery.in_recovery and not was_in_recovery:
            self._rtt_seq = None  # Karn (RFC 6298 §3): the timed range may be resent
        if rexmit is not None:
            self._retransmit(rexmit[0], rexmit[1], now)  # RFC 6675 §5 step (4.3)
        self._arm_reorder()
        # RFC 8985 §7.2: an ACK of new data restarts the loss probe timer.
        self._arm_pto(now, restart=acked > 0)
        self._ack_state_transitions(now)
        return self._state is not TcpState.CLOSED

    def _frto_ack(self, acked: int, dupack: bool, now: float) -> None:
        """RFC 5682 §2 steps 2-3, on the ACKs after the timeout's retransmission."""
        recovery = self._recovery
        marker = recovery.undo_marker
        if marker is None or recovery.episode != EPISODE_RTO:
            recovery.frto = 0  # undone already (Eifel), or over
            return
        una = self._snd_una
        if recovery.frto == 1:
            if dupack:
                recovery.frto = 0  # step 2a: conventional RTO recovery
                return
            if acked <= 0:
                return  # neither: wait for an ACK that decides
            if not una < recovery.recover or una - marker < min(self._smss,
                                                                recovery.recover - marker):
                # Step 2a: everything outstanding is acknowledged, or not all that was
                # retransmitted: conventional recovery.
                recovery.frto = 0
                return
            # Step 2b: up to two new segments, if there are any and the window admits
            # them (cwnd aside, as RFC 5682 says); none: conventional recovery.
            self._snd_nxt = self._snd_max
            sent = 0
            for _ in range(2):
                unsent = len(self._send_buf) - (self._snd_nxt - self._buf_seq)
                room = (una + self._snd_wnd) - self._snd_nxt
                if unsent <= 0 or room <= 0:
                    break
                self._emit_data(self._snd_nxt, min(unsent, self._data_mss(), room), now)
                sent += 1
            if sent:
                recovery.frto = 2
            else:
                recovery.frto = 0
                self._snd_nxt = una  # go back N from here, as the RTO left it
            return
        # Step 3.
        if acked > 0:
            # 3b: data never retransmitted is acknowledged: the timeout was spurious.
            recovery.frto_spurious(una, now)
        elif dupack:
            # 3a: the new segments drew duplicate ACKs: the loss was real. Slow start
            # from at most 3*SMSS, retransmitting from SND.UNA.
            recovery.frto = 0
            cc = self._cc
            cc.cwnd = min(cc.cwnd, 3 * self._smss)
            self._snd_nxt = una

    def _arm_reorder(self) -> None:
        """RFC 8985 §6.3: the RACK reordering timer follows ``rack_timeout``."""
        at = self._recovery.rack_timeout
        if at is None:
            self._timers.cancel(Timer.REORDER)
        else:
            self._timers.set(Timer.REORDER, at)

    def _on_reorder_timer(self, now: float) -> None:
        """RFC 8985 §6.3: RACK's reordering window passed for a hole: detect again."""
        if not self._state.synchronized or self._snd_una == self._snd_max:
            return
        self.counters["rack_timer_fired"] += 1
        recovery = self._recovery
        rexmit = recovery.on_rack_timer(self._snd_una, self._snd_max, self._rtt.srtt, now)
        if rexmit is not None:
            self._rtt_seq = None  # Karn
            self._retransmit(rexmit[0], rexmit[1], now)
        self._arm_reorder()
        self._arm_pto(now, restart=False)  # cancelled if recovery began

    def _advance_una(self, ack: Seq) -> int:
        """SND.UNA moves to ``ack``: release the acknowledged bytes from the send buffer
        (RFC 9293 §3.10.7.4, "fifth"); returns how many data bytes that was."""
        data_acked = min(max(ack - self._buf_seq, 0), len(self._send_buf))
        if data_acked:
            self._send_buf.consume(data_acked)
            self._buf_seq = self._buf_seq + data_acked
        self._snd_una = ack
        if ack > self._snd_nxt:
            self._snd_nxt = ack
        if ack > self._snd_max:
            self._snd_max = ack  # an ACK of the zero-window probe byte
        if self._probe_end is not None and ack >= self._probe_end:
            self._probe_end = None
        self.counters["bytes_acked"] += data_acked
        return data_acked

    def _ack_advanced(self, ack: Seq, seg: TcpSegment, now: float) -> None:
        self._advance_una(ack)
        if self._pmtu is not None:
            raised = self._pmtu.acked(self._snd_una, now)
            if raised is not None:  # the probe got through (RFC 4821 §7.6.1)
                self._path_mss(raised)
                self.counters["mss_probe_raised"] += 1
                if self._pmtu.restored:
                    self._pmtu = None

        # RTT: the timed segment (Karn) or, failing that, the echoed timestamp.
        rtt: float | None = None
        if self._rtt_seq is not None and ack >= self._rtt_seq:
            rtt = now - self._rtt_time
            self._rtt_seq = None
        elif self._ts_ok and seg.options.timestamps and seg.options.timestamps[1]:
            rtt = ts_rtt(now, self._ts_offset, seg.options.timestamps[1])
        if rtt is not None:
            self._rtt.sample(rtt)
        # RFC 9406: HyStart++ sees every ACK of new data (before the window grows on
        # it, in recovery.on_ack; dataplane.c's hystart_ack in the same place).
        event = self._cc.on_delivery(self._snd_una, self._snd_max, rtt, now)
        if event is not None:
            self.counters[event] += 1
        self._rtt.reset_backoff()
        self._retries = 0
        if self._snd_una == self._snd_max:
            self._timers.cancel(Timer.RETRANSMIT)
        else:
            self._timers.set(Timer.RETRANSMIT, now + self._rtt.rto)  # RFC 6298 §5.3
        if self._write_blocked and self._send_buf.free > 0:
            self._write_blocked = False
            self._events.append(TcpEvent.WRITABLE)

    def _ack_state_transitions(self, now: float) -> None:
        fin = self._fin_seq
        if fin is None or self._snd_una <= fin:
            return
        state = self._state
        if state is TcpState.FIN_WAIT_1:
            self._state = TcpState.FIN_WAIT_2
            self._timers.cancel(Timer.RETRANSMIT)
            if self._app_closed:
                self._timers.set(Timer.FIN_WAIT_2, now + self.config.fin_wait2_timeout)
        elif state is TcpState.CLOSING:
            self._enter_time_wait(now)
        elif state is TcpState.LAST_ACK:
            self._enter_closed(notify=True)

    # -- text and FIN --------------------------------------------------------------------

    def _rcv_text(self, seg: TcpSegment, seq: Seq, payload: bytes, now: float) -> None:
        """RFC 9293 §3.10.7.4 seventh (text) and eighth (FIN)."""
        state = self._state
        fin = bool(seg.flags & TcpFlags.FIN)
        if state not in RECEIVING_STATES:
            if payload:
                self._drop("drop_data_not_receiving")
            if fin and state is TcpState.TIME_WAIT:
                self._timers.set(Timer.TIME_WAIT, now + self.config.time_wait)
            if payload or fin:
                self._ack_now = True
            return
        if payload and self._app_closed:
            # Nobody will read this: reset, as Linux does (RFC 9293 §3.10.4 note).
            self._drop("drop_data_after_close")
            self.abort()
            return

        fin_seq = seq + len(payload) if fin else None
        # Trim to [RCV.NXT, RCV.NXT + RCV.WND) (RFC 9293 §3.10.7.4 first check, note).
        front = self._rcv_nxt - seq
        reported = False
        if front > 0:
            if payload:
                reported = self._sack_ok
                # RFC 2883 §4.2 (a retransmission partly below RCV.NXT): the part
                # already acknowledged is a duplicate.
                self._note_duplicate(seq, seq + min(front, len(payload)))
            payload = payload[front:]
            seq = self._rcv_nxt
        wnd = max(self._rcv_adv - self._rcv_nxt, 0)
        room = wnd - (seq - self._rcv_nxt)
        if len(payload) > room:
            self._drop("drop_window_trimmed")
            payload = payload[: max(room, 0)]
            fin_seq = None  # the FIN lay beyond the window
        if self._peer_fin is not None and payload and seq + len(payload) > self._peer_fin:
            self._drop("drop_data_after_fin")
            payload = payload[: max(self._peer_fin - seq, 0)]
        if fin_seq is not None and self._peer_fin is None:
            self._peer_fin = fin_seq
        if fin:
            self._ack_now = True  # a FIN, in order or not, is acknowledged at once

        if payload and not reported and self._reasm.buffered and self._sack_ok:
            # RFC 2883 §4.2.3 (Example 6): a duplicate of queued out-of-order data
            # (the ACK adds the queued block it belongs to, §4 rule 4).
            dup = self._reasm.duplicate(seq, len(payload), self._rcv_nxt)
            if dup is not None:
                self._note_duplicate(dup[0], dup[1])
        if payload:
            if seq == self._rcv_nxt:
                self._deliver(payload, now)
            else:
                stored = self._reasm.insert(seq, payload, self._rcv_nxt, wnd)
                if stored == 0:
                    self._drop("drop_reassembly_full_or_duplicate")
                self.counters["out_of_order_segments"] += 1
                self._ack_now = True  # RFC 5681 §4.2: immediate dupack out of order
                self._ack_immediate = True
        self._maybe_fin(now)

    def _deliver(self, payload: bytes, now: float) -> None:
        accepted = self._recv_buf.push(payload)
        if accepted < len(payload):
            self._drop("drop_receive_buffer_full")
        self._rcv_nxt = self._rcv_nxt + accepted
        if len(payload) > self._rcv_mss:
            self._rcv_mss = min(len(payload), self.config.mss)
        if self._reasm.buffered:
            # RFC 5681 §4.2: a segment that fills all or part of a gap is ACKed at
            # once (also when it does not reach the queued data yet).
            self._ack_now = True
            self._ack_immediate = True
            ready = self._reasm.pop_ready(self._rcv_nxt)
            if ready:
                got = self._recv_buf.push(ready)
                if got < len(ready):
                    self._drop("drop_receive_buffer_full")
                self._rcv_nxt = self._rcv_nxt + got
                self._ack_now = True  # RFC 5681 §4.2: ACK at once when a hole fills
        if accepted and (not self._events or self._events[-1] is not TcpEvent.DATA):
            self._events.append(TcpEvent.DATA)
        # Delayed ACK (RFC 9293 §3.8.6.3): at least every second full segment.
        if self._rcv_nxt - self._last_ack_rcv_nxt >= _ACK_EVERY * self._rcv_mss:
            self._ack_now = True
        elif not self._ack_now:
            self._timers.set_if_unset(Timer.DELAYED_ACK, now + self.config.delayed_ack_timeout)

    def _maybe_fin(self, now: float) -> None:
        fin = self._peer_fin
        if fin is None or fin != self._rcv_nxt:
            return
        # RFC 9293 §3.10.7.4 eighth: the FIN is in order.
        self._rcv_nxt = fin + 1
        self._ack_now = True
        self._events.append(TcpEvent.EOF)
        state = self._state
        if state is TcpState.ESTABLISHED:
            self._state = TcpState.CLOSE_WAIT
        elif state is TcpState.FIN_WAIT_1:
            if self._fin_seq is not None and self._snd_una > self._fin_seq:
                self._enter_time_wait(now)
            else:
                self._state = TcpState.CLOSING  # simultaneous close (§3.6, figure 13)
        elif state is TcpState.FIN_WAIT_2:
            self._enter_time_wait(now)

    def _after_read(self) -> None:
        """Autotune the receive buffer and send a window update if it opened a lot."""
        self._recv_buf.note_read(self._now, self._rtt.srtt)
        if not self._state.synchronized or self._state is TcpState.TIME_WAIT:
            return
        current = max(self._rcv_adv - self._rcv_nxt, 0)
        avail = min(self._recv_buf.window, 0xFFFF << self._rcv_shift)
        threshold = min(self._recv_buf.capacity // 2, self._rcv_mss)
        # Linux's rule: announce when the window at least doubles by a worthwhile step;
        # but only while the window the peer knows may hold it back. A peer stops when
        # less than a segment of it is left (RFC 9293 §3.8.6.2.1), so it still sends
        # current - MSS or more, and our ACK every second full segment (_ACK_EVERY)
        # carries the new window to it once that is two segments; one scale unit more
        # for a right edge rounded up (_rcv_adv never moves left). Otherwise the ACK
        # waits for data to carry it: after the handshake the peer knows the SYN's
        # unscaled window (at most 65,535, RFC 7323 §2.2), and the first small read
        # would double a larger buffer's window and cost every connection a segment.
        holds_back = (_ACK_EVERY + 1) * self.config.mss + (1 << self._rcv_shift)
        if current < holds_back and avail - current >= threshold and avail >= 2 * current:
            self._ack_now = True
            self.counters["window_updates_sent"] += 1


def hot_counters(tcb: Any) -> dict[str, int]:
    """What a C data plane stint (``struct dp_tcb``'s counters since adoption) adds to
    the connection's counters: at hand-back (``import_hot``), and in totals read while
    C still runs it."""
    segs_in = int(tcb.segs_in)
    return {"segments_received": segs_in, "segments_sent": int(tcb.segs_out),
            "bytes_acked": int(tcb.bytes_acked), "dataplane_segments": segs_in,
            "out_of_order_segments": int(tcb.ooo_segs), "drop_paws": int(tcb.paws_drops),
            "limited_transmit_segments": int(tcb.lt_segs),
            CSS_ENTERED: int(tcb.hs_css_entered), CSS_ABANDONED: int(tcb.hs_css_abandoned),
            SLOW_START_EXITED: int(tcb.hs_exits), ACK_TRAIN_EXITED: int(tcb.hs_train_exits)}
