"""The compiled fast path (header prediction, VJ 1990) must agree with the Python
state machine: same bytes delivered, same sequence state, same drops, in the same order.
"""

from __future__ import annotations

import hashlib
import random
from itertools import accumulate

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tcp_helpers import (
    ACK,
    FIN,
    IRS,
    ISS,
    LOCAL_IP,
    LOCAL_PORT,
    PSH,
    REMOTE_IP,
    REMOTE_PORT,
    REMOTE_WIN,
    RST,
    SYN,
    established,
    out,
    plain_config,
    seg,
)

from joyride.tcp import fastpath
from joyride.tcp.config import TcpConfig
from joyride.tcp.connection import TcpConnection
from joyride.tcp.state import TcpState
from joyride.wire.batch import BatchBuilder, BatchParser, FrameTemplate
from joyride.wire.tcp import TcpOptions, TcpSegment

pytestmark = pytest.mark.skipif(not fastpath.available(), reason=fastpath.BUILD_HINT)

L_MAC, R_MAC = bytes([2, 0, 0, 0, 0, 1]), bytes([2, 0, 0, 0, 0, 2])
TO_LOCAL = FrameTemplate(R_MAC, L_MAC, REMOTE_IP, LOCAL_IP, REMOTE_PORT, LOCAL_PORT)
FROM_LOCAL = FrameTemplate(L_MAC, R_MAC, LOCAL_IP, REMOTE_IP, LOCAL_PORT, REMOTE_PORT)


class Batch:
    """Frames for ``segs`` in one buffer, parsed by the wire batch parser."""

    def __init__(self, segs: list[TcpSegment], corrupt: frozenset[int] = frozenset()) -> None:
        frames = BatchBuilder(TO_LOCAL, max(len(segs), 1)).build(segs)
        frames = [
            f[:-1] + bytes([f[-1] ^ 0xFF]) if i in corrupt and len(f) > 54 else f
            for i, f in enumerate(frames)
        ]
        self.blob = b"".join(frames)
        lens = [len(f) for f in frames]
        self.offsets = np.array([0, *accumulate(lens[:-1])] if lens else [], dtype=np.uint64)
        self.lengths = np.array(lens, dtype=np.uint32)
        self.parser = BatchParser(max(len(segs), 1))
        self.parser.parse_descriptors(self.blob, self.offsets, self.lengths, len(segs))


def _slow(conn: TcpConnection, batch: Batch, now: float) -> None:
    for i in range(batch.parser.n):
        err = batch.parser.error(i)
        if err is not None:
            conn.counters[f"drop_{err.reason}"] += 1
            continue
        conn.receive(batch.parser.frame(i).tcp, now)


def _observable(conn: TcpConnection) -> tuple[object, ...]:
    drops = {k: v for k, v in conn.counters.items() if k.startswith("drop_")}
    return (
        conn.state, conn.rcv_nxt, conn.snd_una, conn.send_window, conn.recv(-1),
        conn.eof, conn._ts_recent, conn.send_queue, conn.sacked_bytes, drops,
    )


def _pair(cfg: TcpConfig, peer: TcpOptions | None = None) -> tuple[TcpConnection, TcpConnection]:
    return established(cfg, peer_options=peer), established(cfg, peer_options=peer)


def test_in_order_data_takes_the_fast_path_and_owes_acks_rfc5681_4_2() -> None:
    conn = established()
    fp = fastpath.FastPath(conn, FROM_LOCAL, capacity=16)
    segs = [seg(IRS + 1 + i * 1000, ISS + 1, ACK, bytes([i]) * 1000) for i in range(8)]
    b = Batch(segs)
    assert fp.receive_batch(b.parser, b.blob, b.offsets, 1.0) == 8
    assert conn.recv() == b"".join(bytes([i]) * 1000 for i in range(8))
    assert conn.rcv_nxt == IRS + 8001
    # An ACK once 2 * rcv_mss (2 * 1460) bytes are unacknowledged, built by the wire
    # builder; the last 2000 bytes wait for the delayed-ACK timer.
    acks = BatchParser(16)
    acks.parse(fp.tx_frames())
    assert [int(acks.frame(i).tcp.ack) - int(IRS) for i in range(fp.tx_count)] == [3001, 6001]
    assert all(acks.frame(i).tcp.flags == ACK for i in range(fp.tx_count))
    assert conn.poll_at() == 1.0 + conn.config.delayed_ack_timeout
    conn.on_timer(1.04)
    assert [s.ack for s in out(conn, 1.04)] == [IRS + 8001]


def test_batch_with_exceptions_matches_the_slow_path_in_order() -> None:
    cfg = plain_config(sack=True)
    peer = TcpOptions(mss=1460, sack_permitted=True)
    a, b = _pair(cfg, peer)
    a.send(b"s" * 3000)
    b.send(b"s" * 3000)
    out(a, 0.5)
    out(b, 0.5)
    segs = [
        seg(IRS + 1, ISS + 1, ACK, b"a" * 500),
        seg(IRS + 501, ISS + 1461, ACK | PSH, b"b" * 500),  # data + ACK advance
        seg(IRS + 2001, ISS + 1461, ACK, b"d" * 500),  # out of order: slow path
        seg(IRS + 1001, ISS + 1461, ACK, b"c" * 1000),  # fills the hole
        seg(IRS + 2501, ISS + 1461, ACK, b"e" * 100),
        seg(IRS + 5, 0, RST),  # in-window RST not at RCV.NXT: challenge
        seg(IRS + 2601, ISS + 2921, ACK),  # pure ACK
        seg(IRS + 2601, ISS + 2921, ACK),  # duplicate ACK: slow path
        seg(IRS + 2601, ISS + 2921, ACK | FIN, b"z" * 10),
    ]
    batch = Batch(segs, corrupt=frozenset({4}))
    fp = fastpath.FastPath(b, FROM_LOCAL)
    _slow(a, batch, 1.0)
    fast = fp.receive_batch(batch.parser, batch.blob, batch.offsets, 1.0)
    assert 0 < fast < len(segs)
    assert fp.slow_segments > 0
    assert _observable(a) == _observable(b)
    assert a.state is TcpState.ESTABLISHED  # the bad-checksum segment blocked the FIN


def test_fast_path_with_timestamps_keeps_paws_state_rfc7323_4_3() -> None:
    cfg = plain_config(timestamps=True)
    peer = TcpOptions(mss=1460, timestamps=(100, 0))
    a, b = _pair(cfg, peer)
    segs = [
        seg(IRS + 1 + i * 100, ISS + 1, ACK, b"t" * 100,
            options=TcpOptions(timestamps=(200 + i, 5)))
        for i in range(6)
    ]
    segs.append(seg(IRS + 601, ISS + 1, ACK, b"o" * 100, options=TcpOptions(timestamps=(150, 5))))
    batch = Batch(segs)
    fp = fastpath.FastPath(b, FROM_LOCAL)
    _slow(a, batch, 1.0)
    fp.receive_batch(batch.parser, batch.blob, batch.offsets, 1.0)
    assert a.counters["drop_paws"] == b.counters["drop_paws"] == 1
    assert _observable(a) == _observable(b)


def test_fast_path_ack_prunes_the_sack_scoreboard_rfc6675_5() -> None:
    """A predicted ACK that covers SACKed data keeps ``sacked_bytes`` exact, as the
    slow path does on every ACK (RFC 6675 §5)."""
    cfg = plain_config(sack=True)
    peer = TcpOptions(mss=1460, sack_permitted=True)
    a, b = _pair(cfg, peer)
    base = ISS + 1
    for c in (a, b):
        c.send(b"s" * 1460 * 10)
        out(c, 0.5)
        # One dupack SACKing segment 3, then an ACK of segments 0-1 (slow path: the
        # dupack count is not zero), leaving segment 3 SACKed above SND.UNA.
        c.receive(seg(IRS + 1, base, ACK, options=TcpOptions(
            sack_blocks=((base + 3 * 1460, base + 4 * 1460),))), 0.6)
        c.receive(seg(IRS + 1, base + 2 * 1460, ACK), 0.6)
        assert c.sacked_bytes == 1460
    batch = Batch([seg(IRS + 1, base + 5 * 1460, ACK)])
    fp = fastpath.FastPath(b, FROM_LOCAL)
    _slow(a, batch, 1.0)
    assert fp.receive_batch(batch.parser, batch.blob, batch.offsets, 1.0) == 1
    assert _observable(a) == _observable(b)
    assert b.sacked_bytes == 0


def test_fast_path_ack_gives_cubic_the_smoothed_rtt_rfc9438_4_2() -> None:
    conn = established(plain_config(congestion_control="cubic"))
    conn.send(b"x" * 1460 * 10)
    out(conn, 1.0)
    batch = Batch([seg(IRS + 1, ISS + 1 + 1460 * 4, ACK)])
    fp = fastpath.FastPath(conn, FROM_LOCAL)
    assert fp.receive_batch(batch.parser, batch.blob, batch.offsets, 1.1) == 1
    assert conn.rtt.srtt is not None and conn.rtt.srtt < 0.1  # smoothed, not the sample
    assert getattr(conn.congestion, "last_rtt", None) == conn.rtt.srtt


def test_send_batch_builds_full_segments_within_windows() -> None:
    conn = established(plain_config(nodelay=True))
    fp = fastpath.FastPath(conn, FROM_LOCAL, capacity=64)
    conn.send(bytes(range(256)) * 100)  # 25600 bytes: 17 full segments + a tail
    n = fp.send_batch(0.1)
    assert n == 10  # initial window: 10 segments (RFC 6928)
    p = BatchParser(64)
    p.parse(fp.tx_frames())
    data = b"".join(p.frame(i).tcp.payload for i in range(n))
    assert data == (bytes(range(256)) * 100)[: 10 * 1460]
    assert [int(p.frame(i).tcp.seq) - int(ISS) for i in range(n)] == [
        1 + 1460 * i for i in range(10)
    ]
    assert conn.snd_nxt == ISS + 1 + 14600
    assert conn.poll_at() is not None  # the retransmission timer runs
    assert fp.send_batch(0.1) == 0  # cwnd is full


def test_transfer_through_fast_path_both_sides_sha256() -> None:
    cfg = TcpConfig(send_buffer=1 << 20, receive_buffer=1 << 20, receive_buffer_max=1 << 20)
    from joyride.tcp.isn import IsnGenerator
    from joyride.tcp.listener import Listener

    lst = Listener(cfg, REMOTE_PORT, isn_generator=IsnGenerator(b"s" * 32))
    a = TcpConnection.connect(cfg, LOCAL_IP, LOCAL_PORT, REMOTE_IP, REMOTE_PORT, 0.0,
                              IsnGenerator(b"c" * 32))
    srv = None
    for _ in range(3):
        for s in a.segments_to_send(0.0):
            lst.receive(s, LOCAL_IP, REMOTE_IP, 0.0)
        for o in lst.segments_to_send(0.0):
            a.receive(o.segment, 0.0)
        srv = srv or lst.accept()
    assert srv is not None
    fa = fastpath.FastPath(a, FROM_LOCAL)
    fb = fastpath.FastPath(srv, TO_LOCAL)
    pa, pb = BatchParser(64), BatchParser(64)
    data = random.Random(1).randbytes(3_000_000)
    sent = 0
    got = bytearray()
    now = 0.0
    for _ in range(20_000):
        if sent < len(data):
            sent += a.send(data[sent : sent + 200_000])
        if sent == len(data):
            a.shutdown_write()
        n = fa.send_batch(now)
        if n:
            pb.parse_descriptors(fa.tx_base_c, fa.tx_offsets_c, fa.tx_lengths, n)
            fb.receive_batch(pb, fa.tx_buf, fa.tx_offsets, now)
        else:
            for s in a.segments_to_send(now):
                srv.receive(s, now)
        got += srv.recv(-1, now=now)
        if fb.tx_count:
            pa.parse_descriptors(fb.tx_base_c, fb.tx_offsets_c, fb.tx_lengths, fb.tx_count)
            fa.receive_batch(pa, fb.tx_buf, fb.tx_offsets, now)
        for s in srv.segments_to_send(now):
            a.receive(s, now)
        now += 0.001
        a.on_timer(now)
        srv.on_timer(now)
        if srv.eof:
            break
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert srv.eof
    assert fb.fast_segments > 0.9 * (len(data) // a.mss)
    assert a.counters["internal_error"] == srv.counters["internal_error"] == 0


_SEG = st.tuples(
    st.sampled_from(["next", "next", "next", "gap", "old", "ack", "dupack", "rst", "syn"]),
    st.integers(1, 1400),
    st.integers(0, 3000),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_SEG, min_size=1, max_size=40), st.booleans())
def test_fast_and_slow_paths_agree_on_random_batches(
    plan: list[tuple[str, int, int]], sack: bool
) -> None:
    cfg = plain_config(sack=sack)
    peer = TcpOptions(mss=1460, sack_permitted=sack)
    a, b = _pair(cfg, peer)
    for c in (a, b):
        c.send(b"q" * 5000)
        out(c, 0.5)
    nxt, ack = int(IRS) + 1, int(ISS) + 1
    segs: list[TcpSegment] = []
    for kind, size, jump in plan:
        if kind == "next":
            segs.append(seg(nxt, ack, ACK, b"n" * size))
            nxt += size
        elif kind == "gap":
            segs.append(seg(nxt + jump + 1, ack, ACK, b"g" * size))
        elif kind == "old":
            segs.append(seg(nxt - size, ack, ACK, b"o" * min(size, 5)))
        elif kind == "ack":
            ack = min(ack + jump, int(ISS) + 1 + 2920)
            segs.append(seg(nxt, ack, ACK))
        elif kind == "dupack":
            segs.append(seg(nxt, ack, ACK))
        elif kind == "rst":
            segs.append(seg(nxt + jump, 0, RST))
        else:
            segs.append(seg(nxt + jump, 0, SYN))
    batch = Batch(segs)
    fp = fastpath.FastPath(b, FROM_LOCAL, capacity=64)
    _slow(a, batch, 1.0)
    fp.receive_batch(batch.parser, batch.blob, batch.offsets, 1.0)
    assert _observable(a) == _observable(b)
    assert a.congestion.cwnd == b.congestion.cwnd




def test_fast_path_fills_the_receive_ring_across_its_wrap() -> None:
    """Payload goes straight into the receive ring; a segment that would straddle the
    ring's end takes the slow path, which wraps. Bytes and state match the slow path."""
    cfg = plain_config(receive_buffer=4000, receive_buffer_max=4000)
    a, b = _pair(cfg)
    fp = fastpath.FastPath(b, FROM_LOCAL)
    nxt = int(IRS) + 1
    delivered = b""
    for round_, (count, read) in enumerate([(4, 2000), (4, 2100), (5, -1)]):
        segs = [seg(nxt + 700 * k, ISS + 1, ACK, bytes([round_ * 10 + k]) * 700)
                for k in range(count)]
        batch = Batch(segs)
        _slow(a, batch, 1.0 + round_)
        fp.receive_batch(batch.parser, batch.blob, batch.offsets, 1.0 + round_)
        assert b.rcv_nxt == a.rcv_nxt
        nxt = int(a.rcv_nxt)
        got_a, got_b = a.recv(read), b.recv(read)
        assert got_a == got_b and got_a
        delivered += got_b
        # Both send what they owe now (the fast path built its ACKs already), so
        # both advertise the same window to the next round.
        for c in (a, b):
            c.on_timer(1.5 + round_)
            out(c, 1.5 + round_)
    assert fp.fast_segments > 0 and fp.wrap_fallbacks > 0  # both paths were used
    assert len(delivered) > 4000  # more than one ring's worth went through
    assert _observable(a) == _observable(b)


# ---------------------------------------------------------------- transmit agreement


def _wire_view(s: TcpSegment) -> tuple[object, ...]:
    return (int(s.seq), int(s.ack), s.flags, s.window, bytes(s.payload), s.options.timestamps)


def _send_fast(conn: TcpConnection, fp: fastpath.FastPath, now: float) -> list[TcpSegment]:
    """What the engine does: fast-path batches first, then whatever the slow path adds."""
    sent: list[TcpSegment] = []
    parser = BatchParser(64)
    while (n := fp.send_batch(now)) > 0:
        parser.parse_descriptors(fp.tx_base_c, fp.tx_offsets_c, fp.tx_lengths, n)
        sent += [parser.frame(i).tcp for i in range(n)]
    return sent + conn.segments_to_send(now)


_STEP = st.tuples(
    st.sampled_from(["write", "write", "ack", "ack_all", "tick", "close"]),
    st.integers(1, 5000),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_STEP, min_size=1, max_size=25), st.booleans(), st.booleans(),
       st.integers(600, 64000))
def test_fast_and_slow_paths_send_the_same_segments(
    plan: list[tuple[str, int]], nodelay: bool, timestamps: bool, peer_window: int
) -> None:
    """Sub-MSS tails included: the fast path sends exactly what ``segments_to_send``
    would (Nagle RFC 9293 §3.7.4, SWS avoidance §3.8.6.2.1, PSH on the last one), with
    the same sequence state and timers afterwards."""
    cfg = plain_config(nodelay=nodelay, timestamps=timestamps)
    peer = TcpOptions(mss=1460, timestamps=(1, 0) if timestamps else None)
    a, b = _pair(cfg, peer)
    fp = fastpath.FastPath(b, FROM_LOCAL, capacity=64)
    now = 1.0
    for kind, k in plan:
        if kind == "write":
            data = bytes([k & 0xFF]) * k
            assert a.send(data) == b.send(data)
        elif kind in ("ack", "ack_all"):
            una, mx = int(a.snd_una), int(a._snd_max)
            ackno = mx if kind == "ack_all" else una + min(k, mx - una)
            opts = TcpOptions(timestamps=(int(now * 1000), a._ts_recent)) if timestamps else None
            ack = seg(IRS + 1, ackno, ACK, window=peer_window, options=opts)
            a.receive(ack, now)
            b.receive(ack, now)
        elif kind == "tick":
            now += k / 10000
            a.on_timer(now)
            b.on_timer(now)
        else:
            a.shutdown_write()
            b.shutdown_write()
        slow = [_wire_view(s) for s in a.segments_to_send(now)]
        fast = [_wire_view(s) for s in _send_fast(b, fp, now)]
        assert fast == slow
        assert (a.snd_nxt, a.snd_una, a.poll_at(), a.congestion.cwnd, a.state) == (
            b.snd_nxt, b.snd_una, b.poll_at(), b.congestion.cwnd, b.state)
        now += 0.001


def test_send_batch_sends_a_small_reply_with_psh_when_idle_rfc9293_3_7_4() -> None:
    """Nagle lets the last, short segment go when nothing is outstanding; it carries
    PSH because it empties the queue. With data outstanding it waits (Nagle on)."""
    conn = established()
    fp = fastpath.FastPath(conn, FROM_LOCAL)
    conn.send(b"r" * 64)
    assert fp.send_batch(0.1) == 1
    (frame,) = fp.tx_frames()
    p = BatchParser(1)
    p.parse([frame])
    reply = p.frame(0).tcp
    assert (reply.seq, reply.flags, reply.payload) == (ISS + 1, ACK | PSH, b"r" * 64)
    conn.send(b"s" * 64)  # 64 bytes outstanding: Nagle holds the next small one
    assert fp.send_batch(0.2) == 0
    assert conn.segments_to_send(0.2) == []
    conn.receive(seg(IRS + 1, ISS + 65), 0.3)  # the first is acknowledged: it goes
    assert fp.send_batch(0.3) == 1


def test_send_batch_full_segments_then_the_tail_with_nodelay() -> None:
    conn = established(plain_config(nodelay=True))
    fp = fastpath.FastPath(conn, FROM_LOCAL)
    conn.send(b"x" * (3 * 1460 + 100))
    assert fp.send_batch(0.1) == 4
    p = BatchParser(4)
    p.parse(fp.tx_frames())
    segs = [p.frame(i).tcp for i in range(4)]
    assert [len(s.payload) for s in segs] == [1460, 1460, 1460, 100]
    assert [s.flags for s in segs] == [ACK, ACK, ACK, ACK | PSH]
    assert conn.snd_nxt == ISS + 1 + 3 * 1460 + 100


def test_small_segment_allowed_steps_nagle_and_sws_rfc9293_3_7_4_3_8_6_2_1() -> None:
    conn = established()  # Nagle on
    conn.send(b"a" * 100)
    start = conn.snd_una
    # Nothing outstanding: the whole (short) queue may go (§3.7.4).
    assert conn.small_segment_allowed(start, 100, 100)
    # Not the whole queue, not half the peer's largest window: held (§3.8.6.2.1).
    assert not conn.small_segment_allowed(start, 50, 100)
    assert [len(s.payload) for s in out(conn, 0.1)] == [100]
    conn.send(b"b" * 100)
    # 100 bytes outstanding: Nagle holds the new tail ...
    assert not conn.small_segment_allowed(conn.snd_nxt, 100, 100)
    assert out(conn, 0.2) == []
    # ... unless it is at least half the largest window the peer offered (SWS rule).
    assert conn.small_segment_allowed(conn.snd_nxt, REMOTE_WIN // 2, REMOTE_WIN)
    # An ACK of everything outstanding releases it.
    conn.receive(seg(IRS + 1, start + 100), 0.3)
    assert conn.small_segment_allowed(conn.snd_nxt, 100, 100)
    assert [len(s.payload) for s in out(conn, 0.3)] == [100]
    nodelay = established(plain_config(nodelay=True))
    nodelay.send(b"c" * 10)
    out(nodelay, 0.1)
    # TCP_NODELAY: the queue's end goes even with data outstanding.
    assert nodelay.small_segment_allowed(nodelay.snd_nxt, 10, 10)
