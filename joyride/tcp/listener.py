"""Passive open: a LISTEN socket with a bounded SYN queue and accept queue.

RFC 9293 §3.10.7.2 (LISTEN): a RST is ignored, an ACK draws a RST, a SYN creates a
connection in SYN-RECEIVED. Two bounds protect memory (RFC 4987):

* the SYN queue (``config.syn_backlog`` half-open connections): when it is full, SYN
  cookies take over and the SYN-ACK is sent without keeping any state; the final ACK
  rebuilds the connection from the cookie (``TcpConnection.from_cookie``);
* the accept queue (``config.backlog`` established connections the application has
  not taken yet): when it is full, new SYNs and completing ACKs are dropped, and the
  peer's retransmission tries again later (as Linux does).

The listener routes segments for the connections it still holds (half-open or not yet
accepted); once ``accept()`` hands a connection out, the caller demultiplexes to it.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from typing import NamedTuple

from joyride.tcp.config import TcpConfig
from joyride.tcp.connection import TcpConnection, rst_for
from joyride.tcp.counters import Counters
from joyride.tcp.isn import IsnGenerator
from joyride.tcp.options import ts_clock
from joyride.tcp.state import TcpState
from joyride.tcp.syncookies import SynCookies, decode_ts_options, embed_ts_options
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpFlags, TcpOptions, TcpSegment

_Key = tuple[bytes, int, bytes]  # (remote ip, remote port, local ip)


class Outgoing(NamedTuple):
    """A segment to transmit and the addresses for its IPv4 header."""

    src_ip: bytes
    dst_ip: bytes
    segment: TcpSegment


class Listener:
    """A listening port: turns SYNs into connections handed out by ``accept()``."""

    def __init__(
        self,
        config: TcpConfig,
        local_port: int,
        *,
        isn_generator: IsnGenerator | None = None,
        syn_cookies: SynCookies | None = None,
    ) -> None:
        self.config = config
        self.local_port = local_port
        self.counters: Counters = Counters()
        self._isn = isn_generator or IsnGenerator()
        self._cookies = syn_cookies or SynCookies()
        self._ts_offset = secrets.randbits(32)
        self._half_open: dict[_Key, TcpConnection] = {}
        self._accept_q: OrderedDict[_Key, TcpConnection] = OrderedDict()
        self._out: list[Outgoing] = []
        self._closed = False

    # ------------------------------------------------------------------ queries

    @property
    def ts_offset(self) -> int:
        """RFC 7323 §7.1 offset of this listener's connections' timestamps."""
        return self._ts_offset

    @property
    def isn_generator(self) -> IsnGenerator:
        return self._isn

    @property
    def syn_queue_len(self) -> int:
        return len(self._half_open)

    @property
    def accept_queue_len(self) -> int:
        return len(self._accept_q)

    def aggregate_counters(self) -> Counters:
        """The listener's own counters plus those of every connection it holds."""
        total = Counters(self.counters)
        for conn in (*self._half_open.values(), *self._accept_q.values()):
            total.update(conn.counters)
        return total

    def accept(self) -> TcpConnection | None:
        """The oldest established connection, or None. The caller now owns it."""
        if not self._accept_q:
            return None
        _, conn = self._accept_q.popitem(last=False)
        return conn

    def close(self) -> None:
        """Stop listening: reset every connection not yet accepted."""
        self._closed = True
        for conn in (*self._half_open.values(), *self._accept_q.values()):
            conn.abort()
            for seg in conn.segments_to_send(conn._now):
                self._out.append(Outgoing(conn.local_ip, conn.remote_ip, seg))
        self._half_open.clear()
        self._accept_q.clear()

    # ------------------------------------------------------------------ time

    def poll_at(self) -> float | None:
        deadlines = [
            t
            for conn in (*self._half_open.values(), *self._accept_q.values())
            if (t := conn.poll_at()) is not None
        ]
        if self._out:
            deadlines.append(0.0)
        return min(deadlines) if deadlines else None

    def on_timer(self, now: float) -> None:
        for key, conn in list(self._half_open.items()):
            conn.on_timer(now)
            self._settle(key, conn)
        for key, conn in list(self._accept_q.items()):
            conn.on_timer(now)
            self._settle(key, conn)

    def segments_to_send(self, now: float) -> list[Outgoing]:
        out, self._out = self._out, []
        for key, conn in list((*self._half_open.items(), *self._accept_q.items())):
            for seg in conn.segments_to_send(now):
                out.append(Outgoing(conn.local_ip, conn.remote_ip, seg))
            self._settle(key, conn)
        return out

    # ------------------------------------------------------------------ receive

    def receive(self, seg: TcpSegment, src_ip: bytes, dst_ip: bytes, now: float,
                iss: Seq | None = None) -> None:
        """A segment for this port from ``src_ip`` that no established connection
        claimed. Never raises; every drop is counted.

        ``iss``: the ISS to answer a SYN with instead of a fresh one - a SYN that
        reopens a 4-tuple in TIME-WAIT must get an ISS beyond the old incarnation's
        SND.NXT (RFC 6191 §2, RFC 1122 §4.2.2.13), which the ISN generator cannot
        promise once the old connection sent more than its clock has advanced since.
        """
        try:
            self._receive(seg, src_ip, dst_ip, now, iss)
        except Exception:  # pragma: no cover - a bug must not take the stack down
            self.counters["internal_error"] += 1

    def _receive(self, seg: TcpSegment, src_ip: bytes, dst_ip: bytes, now: float,
                 reuse_iss: Seq | None) -> None:
        key = (src_ip, seg.src_port, dst_ip)
        conn = self._half_open.get(key) or self._accept_q.get(key)
        if conn is not None:
            if (
                key in self._half_open
                and len(self._accept_q) >= self.config.backlog
                and seg.flags & TcpFlags.ACK
                and not seg.flags & TcpFlags.RST
            ):
                # The accept queue is full: let the peer retransmit its ACK later.
                self.counters["drop_accept_queue_full"] += 1
                return
            conn.receive(seg, now)
            self._settle(key, conn)
            return
        flags = seg.flags
        if self._closed:
            self._reject(seg, src_ip, dst_ip, "drop_listener_closed")
            return
        if flags & TcpFlags.RST:
            self.counters["drop_listen_rst"] += 1  # §3.10.7.2: ignore
            return
        if flags & TcpFlags.ACK:
            if flags & TcpFlags.SYN:
                self._reject(seg, src_ip, dst_ip, "drop_listen_synack")
            elif self.config.syn_cookies:
                self._cookie_ack(seg, key, now)
            else:
                self._reject(seg, src_ip, dst_ip, "drop_listen_ack")
            return
        if not flags & TcpFlags.SYN or flags & TcpFlags.FIN:
            self.counters["drop_listen_no_syn"] += 1
            return
        if len(self._accept_q) >= self.config.backlog:
            self.counters["drop_accept_queue_full"] += 1
            return
        if len(self._half_open) >= self.config.syn_backlog:
            if self.config.syn_cookies:
                self._cookie_synack(seg, src_ip, dst_ip, now)
            else:
                self.counters["drop_syn_queue_full"] += 1
            return
        iss = (reuse_iss if reuse_iss is not None
               else self._isn.isn(dst_ip, self.local_port, src_ip, seg.src_port, now))
        conn = TcpConnection.accept_syn(
            self.config, dst_ip, src_ip, seg, iss, now, ts_offset=self._ts_offset
        )
        self._half_open[key] = conn
        self.counters["syn_received"] += 1

    def _reject(self, seg: TcpSegment, src_ip: bytes, dst_ip: bytes, reason: str) -> None:
        self.counters[reason] += 1
        rst = rst_for(seg)
        if rst is not None:
            self._out.append(Outgoing(dst_ip, src_ip, rst))

    def _settle(self, key: _Key, conn: TcpConnection) -> None:
        """Move a connection between queues after it changed state."""
        state = conn.state
        if state is TcpState.CLOSED:
            self._half_open.pop(key, None)
            self._accept_q.pop(key, None)
            self.counters.update(conn.counters)
            self.counters["half_open_dropped"] += 1
            return
        if key in self._half_open and state not in (TcpState.SYN_RECEIVED, TcpState.LISTEN):
            del self._half_open[key]
            self._accept_q[key] = conn

    # ------------------------------------------------------------------ SYN cookies

    def _cookie_synack(self, syn: TcpSegment, src_ip: bytes, dst_ip: bytes, now: float) -> None:
        """RFC 4987 §3.6: answer with a SYN-ACK whose ISN encodes the connection."""
        cfg, opts = self.config, syn.options
        peer_mss = opts.mss if opts.mss is not None else cfg.default_peer_mss
        cookie, _ = self._cookies.make(
            dst_ip, self.local_port, src_ip, syn.src_port, syn.seq, peer_mss, now
        )
        ts = None
        wscale = None
        sack = False
        if cfg.timestamps and opts.timestamps is not None:
            # Window scale and SACK ride in our TSval's low bits (as Linux): without
            # timestamps they cannot be remembered, so they are not offered at all.
            peer_ws = opts.wscale if cfg.window_scaling else None
            sack = cfg.sack and opts.sack_permitted
            wscale = cfg.window_scale_shift if peer_ws is not None else None
            tsval = embed_ts_options(ts_clock(now, self._ts_offset), peer_ws, sack)
            ts = (tsval, opts.timestamps[0])
        synack = TcpSegment(
            self.local_port, syn.src_port, cookie, syn.seq + 1,
            TcpFlags.SYN | TcpFlags.ACK, min(cfg.receive_buffer, 0xFFFF),
            options=TcpOptions(mss=cfg.for_address(dst_ip).mss, wscale=wscale,
                               sack_permitted=sack, timestamps=ts),
        )
        self._out.append(Outgoing(dst_ip, src_ip, synack))
        self.counters["syncookies_sent"] += 1

    def _cookie_ack(self, seg: TcpSegment, key: _Key, now: float) -> None:
        src_ip, _, dst_ip = key
        if len(self._accept_q) >= self.config.backlog:
            self.counters["drop_accept_queue_full"] += 1
            return
        iss = seg.ack - 1
        mss = self._cookies.check(
            dst_ip, self.local_port, src_ip, seg.src_port, seg.seq - 1, iss, now
        )
        if mss is None:
            self._reject(seg, src_ip, dst_ip, "drop_syncookie_invalid")
            return
        wscale: int | None = None
        sack = False
        ts = seg.options.timestamps
        if ts is not None and self.config.timestamps:
            wscale, sack = decode_ts_options(ts[1])
        conn = TcpConnection.from_cookie(
            self.config, dst_ip, src_ip, seg,
            iss=Seq(int(iss)), mss=mss, wscale=wscale, sack_permitted=sack,
            now=now, ts_offset=self._ts_offset,
        )
        conn.receive(seg, now)
        if conn.state is TcpState.CLOSED:
            self.counters.update(conn.counters)
            self.counters["drop_syncookie_rejected"] += 1
            return
        self.counters["syncookies_accepted"] += 1
        self._accept_q[key] = conn
