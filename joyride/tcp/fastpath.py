"""Batch entry points for one connection: C header prediction, Python for the rest.

Per-segment Python cannot reach a million segments per second, so the two common
cases of an established bulk transfer (Van Jacobson's header prediction) are done in
C over a whole batch of parsed records (``cffi_build/tcpfast.c``):

* in-order data at RCV.NXT inside the advertised window, no hole buffered;
* a pure ACK advancing SND.UNA, outside loss recovery.

Everything else (options other than timestamps, SYN/FIN/RST, out-of-order data,
duplicate ACKs, recovery, window probes) stops the C loop and goes through
``TcpConnection.receive`` one segment at a time; the loop then resumes. Order is
preserved: the C side processes a prefix, never skips.

State crosses the boundary once per C call, not per segment: the connection's
variables are copied into a small C struct before and back after (the TCB's fast
half), and the per-batch bookkeeping (send-buffer release, RTT sample, congestion
control, timers, delayed ACK) runs once. ACKs owed every second full segment are
collected by the C loop as ACK points and built in one call by the wire batch builder,
as are outgoing data segments (``send_batch``): full-sized ones, and the sub-MSS tail
when the connection's own Nagle/SWS rule (``TcpConnection.small_segment_allowed``)
would send it now, so a small request/response never needs the slow path.

This module reaches into ``TcpConnection``'s private fields on purpose: it is the
other half of the same transmission control block, kept apart so that the state
machine stays readable.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Final

import numpy as np

from joyride.tcp.congestion import cwnd_limited
from joyride.tcp.connection import TcpConnection
from joyride.tcp.options import ts_clock, ts_rtt
from joyride.tcp.rtt import RttEstimator
from joyride.tcp.state import RECEIVING_STATES, TcpEvent, TcpState
from joyride.tcp.timers import Timer
from joyride.wire._native import ffi as wire_ffi
from joyride.wire._native import lib as wire_lib
from joyride.wire.batch import BatchBuilder, BatchParser, FrameTemplate
from joyride.wire.errors import ParseError
from joyride.wire.seq import HALF, MASK, Seq
from joyride.wire.tcp import TcpFlags

_ACK: Final = int(TcpFlags.ACK)
_ACK_PSH: Final = int(TcpFlags.ACK | TcpFlags.PSH)
# Our FIN may be queued (FIN-WAIT-1, LAST-ACK) as long as it has not been sent: ACKs
# then cannot cover it, so no state transition can hide in a predicted ACK.
_FAST_ACK_STATES: Final = frozenset(
    {TcpState.ESTABLISHED, TcpState.CLOSE_WAIT, TcpState.FIN_WAIT_1, TcpState.LAST_ACK}
)
_MAX_FRAME: Final = 18 + 60 + 60 + 65535  # Ethernet+VLAN, IPv4 and TCP headers, payload
BUILD_HINT: Final = "build it with `python cffi_build/tcpfast_build.py` or `pip install -e .`"

# The extension has no stubs; imported dynamically so callers see ``Any``. Without it
# the slow path (TcpConnection) still works: ``available`` says whether this one does.
ffi: Any = None
lib: Any = None
try:
    _mod = importlib.import_module("joyride.tcp._tcpfast")
    # A module built from older sources lacks newer entry points: treat it as absent
    # (the slow path works; BUILD_HINT says how to rebuild) rather than fail mid-batch.
    if hasattr(_mod.lib, "tcpfast_build"):
        ffi, lib = _mod.ffi, _mod.lib
except ImportError:
    pass


def available() -> bool:
    return lib is not None


# struct tcpfast_state.out, by index (enum tcpfast_out in tcpfast.h), and the stop
# reasons: module constants, as a lookup on the cffi ``lib`` costs a dict probe.
_OUT_SEGS: Final = 0
_OUT_ACK_SEGS: Final = 1
_OUT_RX_BYTES: Final = 2
_OUT_ACKED: Final = 3
_OUT_N_ACKS: Final = 4
_OUT_TSECR: Final = 5
_OUT_HAVE_TSECR: Final = 6
_OUT_WINDOW_CHANGED: Final = 7
_OUT_STOP: Final = 8
_OUT_RCV_NXT: Final = 9
_OUT_ACK_BASE: Final = 10
_OUT_LAST_ACK_SENT: Final = 11
_OUT_TS_RECENT: Final = 12
_OUT_SND_UNA: Final = 13
_OUT_SND_WND: Final = 14
_OUT_MAX_SND_WND: Final = 15
_OUT_SND_WL1: Final = 16
_OUT_SND_WL2: Final = 17
_OUT_N: Final = 18
_STOP_SLOW: Final = 1
_STOP_ROOM: Final = 2
_LAYOUT: Final = {"TCPFAST_OUT_N": _OUT_N, "TCPFAST_OUT_SND_WL2": _OUT_SND_WL2,
                  "TCPFAST_OUT_STOP": _OUT_STOP, "TCPFAST_STOP_SLOW": _STOP_SLOW,
                  "TCPFAST_STOP_ROOM": _STOP_ROOM}
if lib is not None and any(getattr(lib, k, None) != v for k, v in _LAYOUT.items()):
    ffi = lib = None  # pragma: no cover - built from other sources: see BUILD_HINT


# ``_cached_ptr`` entries: the parser's records, the UMEM base and the per-batch-size
# descriptor offsets are the same few objects for every connection of an engine,
# so one cache serves all fast paths (one per connection would thrash on them).
_PTR_CACHE_SIZE: Final = 256
_ptr_cache: dict[int, tuple[Any, Any]] = {}


def _cached_ptr(ctype: str, obj: Any) -> Any:
    """``_ptr`` memoised per object; the cache holds the object itself, so an id
    cannot be reused while its entry lives, and it is bounded."""
    hit = _ptr_cache.get(id(obj))
    if hit is not None and hit[0] is obj:
        return hit[1]
    p = _ptr(ctype, obj)
    if len(_ptr_cache) >= _PTR_CACHE_SIZE:
        _ptr_cache.clear()
    _ptr_cache[id(obj)] = (obj, p)
    return p


def _ptr(ctype: str, obj: Any) -> Any:
    """A pointer of this module's ffi to ``obj``: a numpy array, a Python buffer, or a
    cffi pointer or array from another ffi (``joyride._wire``)."""
    if isinstance(obj, np.ndarray):
        return ffi.cast(ctype, obj.ctypes.data)
    if isinstance(obj, ffi.CData):
        return ffi.cast(ctype, int(ffi.cast("uintptr_t", obj)))
    return ffi.cast(ctype, ffi.from_buffer(obj))


class TxArena:
    """Where fast paths build outgoing frames: ``capacity`` slots of ``max_frame`` bytes.

    Without an owner (``drain`` None) every build starts at slot 0 and its frames are
    valid until the next build: the caller takes them right away. An owner that sends
    in batches (the engine over a NIC that copies from memory it is given) sets
    ``drain``: builds then go to consecutive slots (``used`` of them are filled), and
    a build that would not fit calls ``drain`` first, which must take the ``used``
    frames and set ``used`` to 0. Connections share one arena either way, so memory
    per connection does not depend on it, and one NIC call sends the frames of many.
    """

    def __init__(self, capacity: int = 64, max_frame: int = _MAX_FRAME) -> None:
        if capacity <= 0 or not 64 <= max_frame <= _MAX_FRAME:
            raise ValueError(f"capacity={capacity}, max_frame={max_frame}")
        self.capacity = capacity
        self.max_frame = max_frame
        self.buf = bytearray(capacity * max_frame)
        self.offsets = np.arange(capacity, dtype=np.uint64) * max_frame
        self._caps = np.full(capacity, max_frame, dtype=np.uint32)
        # The same memory as pointers of the wire module's ffi, so neither our builds
        # nor a peer's parse_descriptors convert them per call.
        self.base_c = wire_ffi.from_buffer("uint8_t[]", self.buf)
        self.offsets_c = wire_ffi.from_buffer("uint64_t[]", self.offsets)
        self.caps_c = wire_ffi.from_buffer("uint32_t[]", self._caps)
        # Built lengths too: every builder writing here shares them, so a consumer
        # (the NIC's copy into its own memory) sees the same three arrays per build
        # and converts their pointers once.
        self.lens_c = wire_ffi.new("uint32_t[]", capacity)
        self.used = 0
        self.drain: Callable[[], None] | None = None

    def reserve(self, n: int) -> int:
        """The first of ``n`` consecutive slots for a build (``n`` <= capacity)."""
        if self.drain is None:
            return 0
        if self.used + n > self.capacity:
            self.drain()
        start = self.used
        self.used = start + n
        return start


class FastPath:
    """The batch interface of one ``TcpConnection``.

    ``template`` addresses the frames this connection transmits (data and ACKs);
    ``capacity`` bounds the segments per call in both directions; ``arena`` is where
    they are built (its own one by default; see ``TxArena`` for sharing one).
    """

    def __init__(
        self,
        conn: TcpConnection,
        template: FrameTemplate,
        *,
        capacity: int = 64,
        timer: Callable[[], float] | None = None,
        arena: TxArena | None = None,
    ) -> None:
        if lib is None:
            raise RuntimeError(f"joyride.tcp._tcpfast is not built: {BUILD_HINT}")
        self.conn = conn
        self.capacity = capacity
        self._st = ffi.new("struct tcpfast_state *")
        st = self._st
        self._out = st.out
        # struct wire_parsed keeps addresses as the 4 wire bytes read as a native u32.
        st.local_ip = int.from_bytes(conn.local_ip, "little")
        st.remote_ip = int.from_bytes(conn.remote_ip, "little")
        st.local_port = conn.local_port
        st.remote_port = conn.remote_port
        self._ack_points = np.zeros(capacity, dtype=np.uint32)
        self._ack_ptr = _ptr("uint32_t *", self._ack_points)
        arena = arena or TxArena(capacity)
        if arena.capacity < capacity:
            raise ValueError(f"arena of {arena.capacity} slots for a capacity of {capacity}")
        self.arena = arena
        self.builder = BatchBuilder(template, capacity, out_lens=arena.lens_c)
        self._segs_ptr = _ptr("void *", self.builder.segs)
        # Frames are built by C calls that take a first arena slot (tcpfast_build, and
        # tcpfast_send, which also specifies the data segments).
        tx = self._tx = ffi.new("struct tcpfast_tx *")
        tx.build = _ptr("void *", wire_ffi.addressof(wire_lib, "wire_build_batch"))
        tx.tmpl = _ptr("void *", self.builder._tmpl)
        tx.segs = self._segs_ptr
        tx.out_base = _ptr("uint8_t *", arena.base_c)
        tx.out_offs = _ptr("uint64_t *", arena.offsets_c)
        tx.out_caps = _ptr("uint32_t *", arena.caps_c)
        tx.out_lens = _ptr("uint32_t *", arena.lens_c)
        self.tx_buf = arena.buf
        self.tx_offsets = arena.offsets
        self.tx_base_c = arena.base_c
        self.tx_offsets_c = arena.offsets_c
        self.tx_lengths = arena.lens_c  # lengths of the built frames, by slot
        self._records: Any = None  # the last parser records / frame base seen, and
        self._records_ptr: Any = None  # their pointers
        self._base: Any = None
        self._base_ptr: Any = None
        self._ring: Any = None  # the receive ring whose pointer is _ring_ptr
        self._ring_ptr: Any = None
        self.tx_start = 0  # the last build's frames: slots tx_start .. +tx_count
        self.tx_count = 0
        self.fast_segments = 0
        self.slow_segments = 0
        self.wrap_fallbacks = 0  # slow-path deliveries of payloads straddling the ring end
        # Profiling hook: with a ``timer`` (e.g. time.perf_counter, supplied by the
        # caller: this package reads no clock), time spent in compiled calls adds up here.
        self._timer = timer
        self.c_seconds = 0.0

    # ------------------------------------------------------------------ results

    def tx_frames(self) -> list[bytes]:
        """The last build's frames as bytes (convenience; the engine uses the buffer)."""
        lens, offs = self.tx_lengths, self.tx_offsets
        return [
            bytes(self.tx_buf[int(offs[i]) : int(offs[i]) + lens[i]])
            for i in range(self.tx_start, self.tx_start + self.tx_count)
        ]

    # ------------------------------------------------------------------ receive

    def receive_batch(
        self, parser: BatchParser, base: Any, offsets: Any, now: float,
        start: int = 0, stop: int | None = None,
    ) -> int:
        """Process ``parser``'s records ``[start, stop)``, all addressed to this
        connection, in order; ``base``/``offsets`` are what the parser was given.

        ACKs owed are built into ``tx_buf`` (``tx_count`` frames); segments the slow
        path wants to send are left in the connection's ``segments_to_send``.
        Returns how many records took the fast path.
        """
        conn = self.conn
        stop = parser.n if stop is None else stop
        if stop - start > self.capacity:
            raise ValueError(f"batch of {stop - start} exceeds capacity {self.capacity}")
        # The parser's records and the frames' base are the same objects batch after
        # batch: remembered here; the offsets differ per batch size (shared cache).
        records = parser.out
        if records is not self._records:
            self._records, self._records_ptr = records, _cached_ptr("void *", records)
        if base is not self._base:
            self._base, self._base_ptr = base, _cached_ptr("uint8_t *", base)
        recs, base_ptr = self._records_ptr, self._base_ptr
        offs_ptr = _cached_ptr("uint64_t *", offsets)
        st = self._st
        i = start
        fast = 0
        acks = 0  # ACK points so far; at most one per data record, so never > capacity
        self.tx_count = 0
        recv_buf = conn._recv_buf
        while i < stop:
            self._sync_in()
            # In-order payload lands straight in the receive buffer's free space.
            ring, at, room = recv_buf.free_region()
            if ring is not self._ring:
                self._ring, self._ring_ptr = ring, _ptr("uint8_t *", ring)
            dst = self._ring_ptr + at
            t0 = self._timer() if self._timer else 0.0
            j = lib.tcpfast_rx(
                st, recs, i, stop, base_ptr, offs_ptr, dst, room,
                self._ack_ptr + acks, self.capacity - acks,
            )
            if self._timer:
                self.c_seconds += self._timer() - t0
            out: list[int] = ffi.unpack(self._out, _OUT_N)
            fast += j - i
            acks += self._sync_out(out, now)
            # A payload that does not fit the contiguous space before the ring wraps
            # (nothing taken this call) is delivered by the slow path, which wraps.
            reason = out[_OUT_STOP]
            stuck = j == i and reason == _STOP_ROOM
            self.wrap_fallbacks += stuck
            i = j
            if i < stop and (reason == _STOP_SLOW or stuck):
                self.slow_segments += 1
                try:
                    frame = parser.frame(i)
                except ParseError as exc:  # counted by reason, never raised
                    conn.counters[f"drop_{exc.reason}"] += 1
                else:
                    conn.receive(frame.tcp, now)
                i += 1
        self.fast_segments += fast
        self._build_acks(acks, now)
        return fast

    # The three methods below run once per C call, i.e. per segment of every
    # request/response exchange: sequence values are compared and copied as ints
    # (``Seq.value``), and a ``Seq`` is made only for a value that changed.

    def _sync_in(self) -> None:
        c = self.conn
        state = c._state
        recovery = c._recovery
        rcv_nxt, rcv_adv = c._rcv_nxt.value, c._rcv_adv.value
        snd_max = c._snd_max.value
        fin = c._fin_seq
        rx_ok = (
            state in RECEIVING_STATES
            and not c._reasm.buffered
            and c._dsack is None  # the next ACK carries a D-SACK (RFC 2883): Python's
            and not c._app_closed
            and c._peer_fin is None
            # Everything the window admits must fit the receive buffer (with the
            # slack for the window scale's rounding; a segment that does not fit the
            # contiguous free space stops the C loop and takes the slow path).
            and ((rcv_adv - rcv_nxt + HALF) & MASK) - HALF
            <= c._recv_buf.window + c._recv_buf.slack
        )
        ack_ok = (
            state in _FAST_ACK_STATES
            and (fin is None or ((snd_max - fin.value + HALF) & MASK) <= HALF)  # unsent
            and not recovery.in_recovery
            and recovery.dupacks == 0
            and c._snd_nxt.value == snd_max
            and c._probe_end is None
            and not recovery.rexmit_head
        )
        lib.tcpfast_load(
            self._st, rcv_nxt, rcv_adv, c._last_ack_rcv_nxt.value,
            c._last_ack_sent.value, c._ts_recent, c._rcv_mss, c._snd_una.value,
            snd_max, c._snd_wnd, c._max_snd_wnd, c._snd_wl1.value,
            c._snd_wl2.value, c._snd_shift, c._ts_ok, rx_ok, ack_ok,
        )

    def _sync_out(self, out: list[int], now: float) -> int:
        """Apply one C call's results (``out``: ``struct tcpfast_state.out``) to the
        connection; returns new ACK points."""
        segs = out[_OUT_SEGS]
        if segs == 0:
            return 0
        c = self.conn
        counters = c.counters
        counters["segments_received"] += segs
        counters["fast_path_segments"] += segs
        c._ts_recent = out[_OUT_TS_RECENT]
        c._ts_recent_age = now
        c._snd_wnd = out[_OUT_SND_WND]
        c._max_snd_wnd = out[_OUT_MAX_SND_WND]
        # SND.WL1 and SND.WL2 are the last segment's SEQ and ACK: after one in-order
        # segment, the RCV.NXT it arrived at and the SND.UNA it moved to, whose Seq
        # objects exist already (one allocation fewer each per request).
        wl1 = out[_OUT_SND_WL1]
        if wl1 != c._snd_wl1.value:
            c._snd_wl1 = c._rcv_nxt if wl1 == c._rcv_nxt.value else Seq(wl1)
        if out[_OUT_WINDOW_CHANGED]:
            c._persist_backoff = 0
        rx_bytes = out[_OUT_RX_BYTES]
        if rx_bytes:
            c._recv_buf.commit(rx_bytes)  # written in place by tcpfast_rx
            nxt = out[_OUT_RCV_NXT]
            rcv_nxt = c._rcv_nxt = Seq(nxt)
            sent, base = out[_OUT_LAST_ACK_SENT], out[_OUT_ACK_BASE]
            c._last_ack_sent = rcv_nxt if sent == nxt else Seq(sent)
            c._last_ack_rcv_nxt = rcv_nxt if base == nxt else Seq(base)
            events = c._events
            if not events or events[-1] is not TcpEvent.DATA:
                events.append(TcpEvent.DATA)
            if nxt != base:
                c._timers.set_if_unset(Timer.DELAYED_ACK, now + c.config.delayed_ack_timeout)
            else:
                c._timers.cancel(Timer.DELAYED_ACK)
        if out[_OUT_ACKED]:
            self._acked(out, now)
        wl2 = out[_OUT_SND_WL2]
        if wl2 != c._snd_wl2.value:
            c._snd_wl2 = c._snd_una if wl2 == c._snd_una.value else Seq(wl2)
        if c.config.keepalive:
            c._arm_keepalive(now)
        return out[_OUT_N_ACKS]

    def _acked(self, out: list[int], now: float) -> None:
        """The once-per-batch version of ``TcpConnection._ack_advanced``."""
        c = self.conn
        ack = Seq(out[_OUT_SND_UNA])
        flight_before = (c._snd_max.value - c._snd_una.value) & MASK
        c._advance_una(ack)
        board = c._recovery.board
        if board.range_count:
            # RFC 6675 §5: every ACK updates the scoreboard (drops what it now covers).
            board.update(ack, (), c._snd_max)
        rtt: float | None = None
        if c._rtt_seq is not None and ack >= c._rtt_seq:
            rtt = now - c._rtt_time
            c._rtt_seq = None
        elif out[_OUT_HAVE_TSECR]:
            rtt = ts_rtt(now, c._ts_offset, out[_OUT_TSECR])
        rtt_est: RttEstimator = c._rtt
        if rtt is not None:
            rtt_est.sample(rtt)
        rtt_est.reset_backoff()
        c._retries = 0
        if c._snd_una == c._snd_max:
            c._timers.cancel(Timer.RETRANSMIT)
        else:
            c._timers.set(Timer.RETRANSMIT, now + rtt_est.rto)
        c._arm_pto(now, restart=True)  # RFC 8985 §7.2, as _process_ack
        # RFC 3465 limits slow-start growth per ACK (L = 2*SMSS), so in slow start the
        # controller hears each ACK; in congestion avoidance growth is per byte and one
        # call for the batch is equivalent.
        cc = c._cc
        srtt = rtt_est.srtt  # RFC 9438 §4.2: the smoothed RTT, as the slow path
        acked, n = out[_OUT_ACKED], max(out[_OUT_ACK_SEGS], 1)
        if not cwnd_limited(flight_before, cc.cwnd):
            pass  # RFC 7661 §4.3: no growth for a window that was not used
        elif cc.cwnd < cc.ssthresh and n > 1:
            share = acked // n
            for k in range(n):
                part = share if k < n - 1 else acked - share * (n - 1)
                cc.on_ack(now, part, srtt, flight_before)
                flight_before -= part
        else:
            cc.on_ack(now, acked, srtt, flight_before)
        if c._write_blocked and c._send_buf.free > 0:
            c._write_blocked = False
            c._events.append(TcpEvent.WRITABLE)

    def _build_acks(self, k: int, now: float) -> None:
        """Build the ACKs owed at the C loop's ACK points (RFC 5681 §4.2)."""
        if k == 0:
            return
        c = self.conn
        c._advertise_window()  # moves the right edge for the newest RCV.NXT
        shift = c._rcv_shift
        edge = int(c._rcv_adv)
        lib.tcpfast_fill_acks(
            self._segs_ptr, k, self._ack_ptr, int(c._snd_max), edge, shift,
            1 if c._ts_ok else 0,
            ts_clock(now, c._ts_offset) if c._ts_ok else 0,
            c._ts_recent if c._ts_ok else 0,
        )
        if self.build(k, None):
            c.counters["segments_sent"] += k
            c._last_send = now

    # ------------------------------------------------------------------ transmit

    def send_batch(self, now: float, max_segments: int | None = None) -> int:
        """Build up to ``max_segments`` data segments into ``tx_buf`` when the
        connection is in plain send mode; returns how many (0 means: use
        ``conn.segments_to_send``). Windows, cwnd and Karn timing as the slow path.

        Full-sized segments go while both windows admit them; a shorter last segment
        (the queue's tail, or what the window leaves) goes only when the connection's
        own rule says so (Nagle, RFC 9293 §3.7.4; sender SWS avoidance, §3.8.6.2.1),
        asked as if the full segments before it were already sent.

        This runs once per reply of every request/response exchange, so sequence
        numbers are handled as their ``int`` values here (offsets into the send queue
        are never negative: ``(a - b) & MASK``), not through ``Seq`` arithmetic."""
        c = self.conn
        recovery = c._recovery
        snd_nxt, snd_max = c._snd_nxt, c._snd_max
        fin = c._fin_seq
        if (
            c._state not in _FAST_ACK_STATES
            or recovery.in_recovery
            or recovery.dupacks  # RFC 3042 limited transmit is the slow path's
            or recovery.rexmit_head
            or snd_nxt.value != snd_max.value
            or (fin is not None and snd_max > fin)  # our FIN is out: the slow path's
            or c._probe_end is not None
            or c._dsack is not None  # the ACK owed carries a D-SACK (RFC 2883)
        ):
            return 0
        nxt = snd_nxt.value
        send_buf = c._send_buf
        queued = send_buf._len
        offset = (nxt - c._buf_seq.value) & MASK
        avail = queued - offset
        fin_queued = fin is not None
        if fin_queued:
            avail -= 1  # the segment carrying the last byte also carries the FIN: slow path
        if avail <= 0:
            return 0
        # RFC 5681 / 9293: both windows; no limited-transmit allowance without dupacks.
        una = c._snd_una.value
        usable = min(c._snd_wnd, c._cc.cwnd) - ((nxt - una) & MASK)
        if usable <= 0:
            return 0
        limit = self.capacity if not max_segments else min(self.capacity, max_segments)
        mss = c._smss
        n = min(limit, avail // mss, usable // mss)
        nbytes = n * mss
        if n < limit and not fin_queued:
            # RFC 9293 §3.8.6.2.1 / §3.7.4: what is left after the full segments is
            # sent only by the same rule the slow path applies (one segment: the
            # loop there would stop after it, the window or the queue being spent).
            tail = min(avail - nbytes, mss, usable - nbytes)
            if 0 < tail < mss and c.small_segment_allowed(
                snd_nxt if nbytes == 0 else Seq(nxt + nbytes), tail, avail - nbytes
            ):
                n += 1
                nbytes += tail
        if n <= 0:
            return 0
        if una == nxt and c._idle_restart_due(now):
            return 0  # the slow path applies the RFC 5681 §4.1 restart window
        # A view of the send ring (no copy): the builder copies it into the frames
        # before anything can consume those bytes.
        payload = send_buf.peek_view(offset, nbytes)
        c._ack_now = False
        window = c._advertise_window()
        rcv_nxt = c._rcv_nxt
        # PSH on the segment that empties the send queue, as _emit_data.
        last = _ACK_PSH if offset + nbytes == queued else _ACK
        arena = self.arena
        start = arena.reserve(n)
        t0 = self._timer() if self._timer else 0.0
        if c._ts_ok:
            built = lib.tcpfast_send(
                self._tx, start, n, nxt, mss, nbytes, rcv_nxt.value, window, last,
                1, ts_clock(now, c._ts_offset), c._ts_recent, ffi.from_buffer(payload),
            )
        else:
            built = lib.tcpfast_send(
                self._tx, start, n, nxt, mss, nbytes, rcv_nxt.value, window, last,
                0, 0, 0, ffi.from_buffer(payload),
            )
        if self._timer:
            self.c_seconds += self._timer() - t0
        if not self._built(start, n, built):
            return 0
        end = Seq(nxt + nbytes)
        if c._rtt_seq is None:
            c._rtt_seq, c._rtt_time = end, now
        c._snd_nxt = c._snd_max = end
        recovery.note_sent(end, now, c._snd_una)  # RFC 8985: the batch's send time
        c._last_ack_sent = rcv_nxt
        c._last_ack_rcv_nxt = rcv_nxt
        timers = c._timers
        timers.cancel(Timer.DELAYED_ACK)
        if not timers.is_set(Timer.RETRANSMIT):
            timers.set(Timer.RETRANSMIT, now + c._rtt.rto)
        c._arm_pto(now, restart=True)  # RFC 8985 §7.2, as _transmit
        timers.cancel(Timer.PERSIST)
        c._last_send = now
        c.counters["segments_sent"] += n
        return n

    def build(self, n: int, payload: bytes | memoryview | None) -> int:
        """Build ``builder.segs[:n]`` into the arena (``tx_start``, ``tx_count``);
        returns ``n``, or 0 (nothing kept, counted) if a segment did not fit."""
        t0 = self._timer() if self._timer else 0.0
        start = self.arena.reserve(n)
        # Not ``BatchBuilder.build_into``: it would check the arena's arrays on every
        # call, which ``TxArena`` sized once (n <= capacity).
        built = lib.tcpfast_build(
            self._tx, start, n, ffi.from_buffer(payload) if payload else ffi.NULL
        )
        if self._timer:
            self.c_seconds += self._timer() - t0
        return n if self._built(start, n, built) else 0

    def _built(self, start: int, n: int, built: int) -> bool:
        """Record a build of ``n`` frames at slot ``start`` of which ``built`` were."""
        if built != n:  # sizes are computed before: a bug, never a packet's doing
            self.conn.counters["internal_error"] += 1
            if self.arena.drain is not None:
                self.arena.used = start
            self.tx_count = 0
            return False
        self.tx_start = start
        self.tx_count = n
        return True
