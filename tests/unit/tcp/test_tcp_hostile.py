"""Hostile input: floods, blind injection, stalls and endless junk (RFC 4987, RFC 5961).

Whatever arrives, the core must not raise, must count why it dropped things, and
must keep its memory bounded.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tcp_helpers import (
    ACK,
    IRS,
    ISS,
    REMOTE_IP,
    RST,
    SYN,
    FixedIsn,
    established,
    out,
    plain_config,
    seg,
)

from joyride.tcp.config import TcpConfig
from joyride.tcp.connection import TcpConnection
from joyride.tcp.listener import Listener
from joyride.tcp.state import TcpState
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpFlags, TcpOptions, TcpSegment


def _client_seg(
    src_ip: bytes, sport: int, seq: Seq, ack: Seq, flags: TcpFlags,
    options: TcpOptions | None = None, payload: bytes = b"",
) -> TcpSegment:
    return TcpSegment(sport, 80, seq, ack, flags, 65535, payload, options or TcpOptions())


def _handshake_via(lst: Listener, cfg: TcpConfig, ip: bytes, port: int, now: float) -> None:
    """A real client connecting to ``lst`` through a lossless in-memory hop."""
    client = TcpConnection.connect(cfg, ip, port, REMOTE_IP, 80, now, FixedIsn(Seq(123456)))
    for _ in range(4):
        for s in client.segments_to_send(now):
            lst.receive(s, ip, REMOTE_IP, now)
        for o in lst.segments_to_send(now):
            if o.dst_ip == ip and o.segment.dst_port == port:
                client.receive(o.segment, now)
    assert client.state is TcpState.ESTABLISHED


def test_syn_flood_cookies_take_over_and_clients_still_connect_rfc4987_3_6() -> None:
    cfg = TcpConfig(syn_backlog=8, backlog=16)
    lst = Listener(cfg, 80)
    rng = random.Random(1)
    for i in range(500):  # spoofed SYNs that never complete
        ip = bytes([10, 9, rng.randrange(256), rng.randrange(1, 255)])
        lst.receive(
            _client_seg(ip, 1024 + i, Seq(rng.getrandbits(32)), Seq(0), SYN,
                        TcpOptions(mss=1460, timestamps=(rng.getrandbits(32), 0),
                                   wscale=7, sack_permitted=True)),
            ip, REMOTE_IP, 1.0,
        )
    outs = lst.segments_to_send(1.0)
    assert len(outs) == 500  # every SYN answered; only 8 with state kept
    assert lst.syn_queue_len == 8
    assert lst.counters["syncookies_sent"] == 492
    # Legitimate clients get through on cookies, with their options intact.
    for k in range(5):
        _handshake_via(lst, cfg, bytes([172, 16, 0, k + 1]), 5000 + k, 2.0)
    accepted = [lst.accept() for _ in range(5)]
    assert all(c is not None and c.state is TcpState.ESTABLISHED for c in accepted)
    assert lst.counters["syncookies_accepted"] == 5
    conn = accepted[0]
    assert conn is not None
    assert conn.options["sack"] is True and conn.options["timestamps"] is True
    assert conn.options["snd_wscale"] == cfg.window_scale_shift
    assert conn.mss == 1460 - 12


def test_forged_cookie_ack_is_rejected_with_rst() -> None:
    lst = Listener(TcpConfig(syn_backlog=1), 80)
    ip = bytes([10, 1, 1, 1])
    lst.receive(_client_seg(ip, 999, Seq(5), Seq(424242), ACK), ip, REMOTE_IP, 1.0)
    outs = lst.segments_to_send(1.0)
    assert [o.segment.flags for o in outs] == [RST]
    assert lst.counters["drop_syncookie_invalid"] == 1
    assert lst.accept() is None


def test_half_open_connections_expire_and_free_the_syn_queue() -> None:
    cfg = plain_config(syn_backlog=4, max_syn_retries=1)
    lst = Listener(cfg, 80)
    for i in range(4):
        ip = bytes([10, 0, 0, i + 1])
        lst.receive(_client_seg(ip, 2000, Seq(i), Seq(0), SYN), ip, REMOTE_IP, 0.0)
    lst.segments_to_send(0.0)
    t = 0.0
    for _ in range(10):
        deadline = lst.poll_at()
        if deadline is None:
            break
        t = max(t, deadline)
        lst.on_timer(t)
        lst.segments_to_send(t)
    assert lst.syn_queue_len == 0
    assert lst.counters["half_open_dropped"] == 4


def test_blind_rst_spray_cannot_reset_rfc5961_3_2() -> None:
    conn = established()
    rng = random.Random(2)
    for _ in range(2000):
        s = Seq(rng.getrandbits(32))
        if s == IRS + 1:
            continue
        conn.receive(seg(s, 0, RST), 1.0)
    assert conn.state is TcpState.ESTABLISHED
    acks = out(conn, 1.0)
    assert len(acks) <= 1  # challenge ACKs are coalesced and rate-limited
    assert conn.counters["drop_rst_out_of_window"] + conn.counters["drop_rst_challenged"] >= 1990


def test_in_window_syn_spray_only_draws_rate_limited_challenge_acks_rfc5961_4() -> None:
    conn = established(plain_config(challenge_ack_limit=5))
    total = 0
    for i in range(100):
        conn.receive(seg(IRS + 1 + i * 7, 0, SYN), 1.0 + i * 0.001)
        total += len(out(conn, 1.0 + i * 0.001))
    assert conn.state is TcpState.ESTABLISHED
    assert total == 5


def test_blind_data_injection_with_bad_ack_is_refused_rfc5961_5_2() -> None:
    conn = established()
    rng = random.Random(3)
    for _ in range(500):
        ack = Seq(rng.getrandbits(32))
        if (ack - (ISS + 1)) in range(-65535, 1):
            continue
        conn.receive(seg(IRS + 1, ack, ACK, b"evil"), 1.0)
    assert conn.recv() == b""
    assert conn.counters["drop_ack_unsent"] + conn.counters["drop_ack_too_old"] >= 490


def test_ack_for_unsent_data_does_not_advance_snd_una() -> None:
    conn = established()
    conn.send(b"a" * 100)
    out(conn, 1.0)
    conn.receive(seg(IRS + 1, ISS + 5000), 1.1)
    assert conn.snd_una == ISS + 1
    assert conn.send_queue == 100


def test_zero_window_stall_persists_without_giving_up_rfc9293_3_8_6_1() -> None:
    cfg = plain_config(max_retries=3)
    conn = established(cfg)
    conn.receive(seg(IRS + 1, ISS + 1, ACK, window=0), 0.1)
    conn.send(b"p" * 5000)
    assert out(conn, 0.1) == []  # nothing fits: the persist timer is armed instead
    probes = 0
    t = 0.1
    for _ in range(40):  # far more than max_retries: the persist timer never aborts
        deadline = conn.poll_at()
        assert deadline is not None
        t = deadline
        conn.on_timer(t)
        for _probe in out(conn, t):
            probes += 1
            conn.receive(seg(IRS + 1, ISS + 1, ACK, window=0), t + 0.01)
    assert conn.state is TcpState.ESTABLISHED
    assert probes == 40
    assert conn.poll_at() is not None and conn.poll_at() - t <= cfg.max_rto  # type: ignore[operator]


def test_endless_out_of_order_segments_keep_memory_bounded() -> None:
    cfg = plain_config(receive_buffer=65535, receive_buffer_max=65535, reassembly_max_ranges=16)
    conn = established(cfg)
    rng = random.Random(4)
    for i in range(5000):
        off = rng.randrange(2, 200_000)
        conn.receive(seg(IRS + off, ISS + 1, ACK, b"z" * rng.randrange(1, 1400)), 1.0 + i)
        if i % 50 == 0:
            out(conn, 1.0 + i)
    reasm = conn._reasm
    assert reasm.buffered <= 65535
    assert reasm.range_count <= 16
    assert conn.recv_queue == 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 255),
            st.integers(0, 0xFFFF), st.binary(max_size=64),
            st.one_of(st.none(), st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))),
        ),
        max_size=40,
    ),
    st.booleans(),
)
def test_arbitrary_segments_never_raise(
    segs: list[tuple[int, int, int, int, bytes, tuple[int, int] | None]], near: bool
) -> None:
    conn = established(plain_config(timestamps=False, sack=True),
                       peer_options=TcpOptions(mss=1460, sack_permitted=True))
    conn.send(b"x" * 3000)
    t = 1.0
    for sq, ak, fl, win, payload, blocks in segs:
        if near:  # bias towards the window so deep paths are reached
            sq = int(IRS) + 1 + sq % 4000
            ak = int(ISS) + ak % 4000
        opts = TcpOptions(sack_blocks=((Seq(blocks[0]), Seq(blocks[1])),) if blocks else ())
        conn.receive(seg(sq, ak, TcpFlags(fl), payload, window=win, options=opts), t)
        out(conn, t)
        conn.on_timer(t)
        t += 0.05
    assert conn.counters["internal_error"] == 0
    assert conn.recv_queue <= conn.config.receive_buffer_max


def test_listener_survives_arbitrary_segments() -> None:
    lst = Listener(TcpConfig(syn_backlog=4, backlog=4), 80)
    rng = random.Random(5)
    for i in range(3000):
        ip = bytes([10, 0, rng.randrange(4), rng.randrange(4)])
        s = _client_seg(ip, rng.randrange(1, 5), Seq(rng.getrandbits(32)),
                        Seq(rng.getrandbits(32)), TcpFlags(rng.randrange(256)),
                        payload=rng.randbytes(rng.randrange(20)))
        lst.receive(s, ip, REMOTE_IP, i * 0.01)
        lst.segments_to_send(i * 0.01)
        lst.on_timer(i * 0.01)
    assert lst.counters["internal_error"] == 0
    assert lst.aggregate_counters()["internal_error"] == 0
    assert lst.syn_queue_len <= 4 and lst.accept_queue_len <= 4




def test_full_accept_queue_drops_completing_acks_until_accept() -> None:
    """Linux behaviour: with the accept queue full, the final ACK is dropped (the
    client's retransmission completes the handshake once the application accepts)."""
    cfg = plain_config(backlog=1, syn_backlog=8)
    lst = Listener(cfg, 80, isn_generator=FixedIsn(Seq(900)))
    for k in range(2):
        ip = bytes([10, 3, 0, k + 1])
        lst.receive(_client_seg(ip, 7000, Seq(100), Seq(0), SYN), ip, REMOTE_IP, 0.0)
    lst.segments_to_send(0.0)
    first, second = bytes([10, 3, 0, 1]), bytes([10, 3, 0, 2])
    lst.receive(_client_seg(first, 7000, Seq(101), Seq(901), ACK), first, REMOTE_IP, 0.1)
    assert lst.accept_queue_len == 1
    lst.receive(_client_seg(second, 7000, Seq(101), Seq(901), ACK), second, REMOTE_IP, 0.1)
    assert lst.accept_queue_len == 1 and lst.syn_queue_len == 1
    assert lst.counters["drop_accept_queue_full"] == 1
    assert lst.accept() is not None
    lst.receive(_client_seg(second, 7000, Seq(101), Seq(901), ACK), second, REMOTE_IP, 0.2)
    conn = lst.accept()
    assert conn is not None and conn.remote_ip == second
