"""Whole transfers through the deterministic in-memory network (netsim.py).

Both directions at once, data checked by SHA-256, across seeds, loss patterns and both
congestion controllers; the transfer must complete and slow down gracefully with loss.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace

import pytest
from netsim import Impairment, TransferResult, transfer

from joyride.tcp.config import TcpConfig


def _payload(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _check(res: TransferResult, up: bytes, down: bytes) -> None:
    assert hashlib.sha256(res.received_by_server).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(res.received_by_client).digest() == hashlib.sha256(down).digest()
    assert res.client.eof and res.server.eof
    for conn in (res.client, res.server):
        assert conn.counters["internal_error"] == 0
        assert conn.error is None


@pytest.mark.parametrize("cc", ["cubic", "newreno"])
@pytest.mark.parametrize("sack", [True, False])
def test_clean_link_bulk_both_ways(cc: str, sack: bool) -> None:
    up, down = _payload(1, 600_000), _payload(2, 300_000)
    cfg = TcpConfig(congestion_control=cc, sack=sack)
    res = transfer(up, down, seed=7, imp=Impairment(), config=cfg)
    _check(res, up, down)
    assert res.client.counters["retransmitted_segments"] == 0
    assert res.elapsed < 2.0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("cc", ["cubic", "newreno"])
def test_lossy_reordering_duplicating_corrupting_link(seed: int, cc: str) -> None:
    up, down = _payload(seed, 200_000), _payload(seed + 100, 120_000)
    imp = Impairment(loss=0.03, duplicate=0.02, corrupt=0.02, delay=0.02, jitter=0.01)
    cfg = TcpConfig(congestion_control=cc, sack=seed % 2 == 0, timestamps=seed % 3 != 0)
    res = transfer(up, down, seed=seed, imp=imp, config=cfg)
    _check(res, up, down)
    assert res.links[0]["lost"] + res.links[1]["lost"] > 0
    assert res.client.counters["retransmitted_segments"] + res.server.counters[
        "retransmitted_segments"
    ] > 0
    # Corruption is caught by the checksum, not delivered.
    corrupted = res.links[0]["corrupted"] + res.links[1]["corrupted"]
    assert sum(res.parse_drops.values()) <= corrupted
    if corrupted:
        assert sum(res.parse_drops.values()) > 0


def test_throughput_degrades_gracefully_with_loss() -> None:
    up = _payload(5, 300_000)
    elapsed = []
    for loss in (0.0, 0.01, 0.05):
        imp = Impairment(loss=loss, delay=0.01, rate=10e6 / 8)
        res = transfer(up, b"", seed=11, imp=imp, config=TcpConfig())
        _check(res, up, b"")
        elapsed.append(res.elapsed)
    assert elapsed[0] < elapsed[1] < elapsed[2]
    assert elapsed[2] < 30 * elapsed[0]  # slower, not collapsed


def test_bottleneck_queue_overflow_recovers() -> None:
    up = _payload(9, 500_000)
    imp = Impairment(delay=0.02, rate=5e6 / 8, queue=20_000)
    res = transfer(up, b"", seed=3, imp=imp, config=TcpConfig(sack=True))
    _check(res, up, b"")
    assert res.links[0]["queue_drop"] > 0
    assert res.client.counters["fast_retransmits"] > 0


def test_hystart_leaves_slow_start_before_the_queue_overflows_rfc9406() -> None:
    """A bottleneck with a drop-tail queue twelve times the path's 12.5 KB: slow start
    alone doubles cwnd into the queue until a window's worth overflows; HyStart++ sees
    the rounds' minimum RTT rise, grows conservatively and loses a small fraction of
    that. (Not none: the rise shows a round or two late, as the round's first ACKs
    still find the queue short; this is the RFC's algorithm, not Linux's HyStart.)"""
    up = _payload(12, 2_000_000)
    imp = Impairment(delay=0.005, rate=10e6 / 8, queue=150_000)
    runs = {on: transfer(up, b"", seed=5, imp=imp,
                         config=TcpConfig(hystart=on, receive_buffer=1 << 20))
            for on in (True, False)}
    for res in runs.values():
        _check(res, up, b"")
    hystart, plain = runs[True], runs[False]
    assert hystart.client.counters["hystart_css_entered"] == 1
    assert plain.client.counters["hystart_css_entered"] == 0
    assert plain.links[0]["queue_drop"] > 500
    assert hystart.links[0]["queue_drop"] < plain.links[0]["queue_drop"] / 10
    assert hystart.elapsed < plain.elapsed  # simulated seconds


def test_sequence_wraparound_mid_transfer() -> None:
    """ISNs near 2**32 (RFC 9293 §3.4): sequence numbers wrap during the transfer."""
    from joyride.tcp.isn import IsnGenerator
    from joyride.wire.seq import Seq

    class NearWrap(IsnGenerator):
        def isn(self, la: bytes, lp: int, ra: bytes, rp: int, now: float) -> Seq:
            return Seq(2**32 - 50_000)

    import netsim

    orig = netsim.IsnGenerator
    netsim.IsnGenerator = lambda secret=None: NearWrap(secret)  # type: ignore[assignment,misc]
    try:
        up, down = _payload(21, 200_000), _payload(22, 200_000)
        imp = Impairment(loss=0.02, jitter=0.005)
        res = transfer(up, down, seed=4, imp=imp, config=TcpConfig())
    finally:
        netsim.IsnGenerator = orig  # type: ignore[misc]
    _check(res, up, down)
    assert int(res.client.iss) == 2**32 - 50_000
    assert int(res.client.snd_una) < 2**31  # wrapped


def test_small_buffers_and_no_window_scaling() -> None:
    up, down = _payload(31, 150_000), _payload(32, 150_000)
    cfg = replace(
        TcpConfig(), receive_buffer=8192, receive_buffer_max=8192, send_buffer=8192,
        send_buffer_max=8192, window_scaling=False,
    )
    res = transfer(up, down, seed=8, imp=Impairment(loss=0.01), config=cfg)
    _check(res, up, down)


def test_send_buffer_autotuning_follows_cwnd() -> None:
    """Linux's tcp_sndbuf_expand: the send buffer grows to two congestion windows, up
    to send_buffer_max, so a long path is not held to what the initial buffer holds;
    SO_SNDBUF (send_buffer_max == send_buffer) keeps it where it was set."""
    down = _payload(43, 2_000_000)
    cfg = replace(TcpConfig(), send_buffer=16 * 1024, send_buffer_max=1 << 20)
    tuned = transfer(b"", down, seed=3, imp=Impairment(delay=0.02), config=cfg)
    _check(tuned, b"", down)
    capacity = tuned.server._send_buf.capacity
    assert 16 * 1024 < capacity <= 1 << 20
    assert capacity >= min(2 * tuned.server.congestion.cwnd, 1 << 20) or capacity == 1 << 20
    fixed = transfer(b"", down, seed=3, imp=Impairment(delay=0.02),
                     config=replace(cfg, send_buffer_max=16 * 1024))
    _check(fixed, b"", down)
    assert fixed.server._send_buf.capacity == 16 * 1024
    assert tuned.elapsed < fixed.elapsed / 2  # 16 KiB a round trip held it back


def test_receive_window_autotuning_grows_the_buffer() -> None:
    """Linux-DRS-style autotuning through ReceiveBuffer.note_read: a reader that keeps
    up lets the advertised window grow beyond the initial buffer."""
    up = _payload(41, 2_000_000)
    cfg = replace(TcpConfig(), receive_buffer=16 * 1024, receive_buffer_max=1 << 20)
    slow = transfer(up, b"", seed=2, imp=Impairment(delay=0.02), config=cfg)
    _check(slow, up, b"")
    assert slow.server._recv_buf.capacity > 16 * 1024
    fixed = replace(cfg, receive_buffer_max=16 * 1024)
    capped = transfer(up, b"", seed=2, imp=Impairment(delay=0.02), config=fixed)
    _check(capped, up, b"")
    assert slow.elapsed < capped.elapsed
