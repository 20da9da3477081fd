"""SYN option negotiation (RFC 9293 §3.7.1, RFC 7323 §1.3/§2.3/§3.2, RFC 2018 §2)
and the RFC 7323 timestamp clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from joyride.tcp.config import TcpConfig
from joyride.tcp.options import (
    TS_OPTION_LEN,
    negotiate,
    syn_options,
    ts_before,
    ts_clock,
    ts_rtt,
)
from joyride.tcp.rtt import RttEstimator
from joyride.wire.tcp import TcpOptions

FULL = TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamps=(100, 0))


def test_everything_offered_both_ways_is_on() -> None:
    cfg = TcpConfig(receive_buffer_max=4 << 20)
    neg = negotiate(cfg, FULL)
    assert neg.window_scaling and neg.timestamps and neg.sack
    assert (neg.snd_shift, neg.rcv_shift) == (7, cfg.window_scale_shift)
    # RFC 7323 §3.2: the timestamp option rides in every segment, out of the MSS.
    assert neg.smss == neg.rcv_mss == 1460 - TS_OPTION_LEN


def test_an_option_is_on_only_if_both_offered_rfc7323_1_3() -> None:
    neg = negotiate(TcpConfig(), TcpOptions(mss=1460))
    assert not (neg.window_scaling or neg.timestamps or neg.sack)
    assert (neg.snd_shift, neg.rcv_shift) == (0, 0) and neg.smss == 1460
    mine_off = TcpConfig(window_scaling=False, timestamps=False, sack=False)
    neg = negotiate(mine_off, FULL)
    assert not (neg.window_scaling or neg.timestamps or neg.sack)


def test_window_shift_clamped_to_14_rfc7323_2_3() -> None:
    neg = negotiate(TcpConfig(), TcpOptions(mss=1460, wscale=15))
    assert neg.snd_shift == 14


def test_mss_default_and_floor_rfc9293_3_7_1() -> None:
    cfg = TcpConfig(timestamps=False)
    assert negotiate(cfg, TcpOptions()).smss == cfg.default_peer_mss  # 536
    # A peer claiming a tiny MSS is raised to the floor (CVE-2019-11479).
    assert negotiate(cfg, TcpOptions(mss=1)).smss == cfg.min_peer_mss


def test_syn_offers_configuration_and_syn_ack_answers_only_offers() -> None:
    cfg = TcpConfig()
    syn = syn_options(cfg, 5, 0, None)
    assert syn == TcpOptions(
        mss=cfg.mss, wscale=cfg.window_scale_shift, sack_permitted=True, timestamps=(5, 0)
    )
    answer = syn_options(cfg, 6, 100, negotiate(cfg, TcpOptions(mss=1400)))
    assert answer == TcpOptions(mss=cfg.mss)
    answer = syn_options(cfg, 6, 100, negotiate(cfg, FULL))
    assert answer.timestamps == (6, 100) and answer.sack_permitted
    assert answer.wscale == cfg.window_scale_shift


def test_ts_clock_ticks_in_milliseconds_and_wraps_rfc7323_5_4() -> None:
    assert ts_clock(1.0, 0) == 1000
    assert ts_clock(1.0, 0xFFFFFFFF) == 999  # offset wraps modulo 2**32
    assert ts_clock(2.5, 7) - ts_clock(1.5, 7) == 1000


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0xFFFFFFFF), st.integers(1, 0x7FFFFFFF))
def test_ts_before_is_wrapping_order_rfc7323_5_3(a: int, d: int) -> None:
    b = (a + d) & 0xFFFFFFFF
    assert ts_before(a, b) and not ts_before(b, a)
    assert not ts_before(a, a)


def test_ts_rtt_counts_an_echo_within_the_tick_as_one_tick() -> None:
    """RFC 7323 §4.1 with a 1 ms clock (Linux's tcp_rtt_tsopt_us, min_delta 1): a
    zero would pull SRTT toward nothing on a sub-millisecond path."""
    now, offset = 12.3456, 777
    echoed = ts_clock(now, offset)
    assert ts_rtt(now, offset, echoed) == 0.001
    assert ts_rtt(now + 0.0042, offset, echoed) == 0.004
    assert ts_rtt(now, offset, (echoed + 5) & 0xFFFFFFFF) is None  # from the future


def test_srtt_keeps_its_scale_on_a_sub_millisecond_path() -> None:
    rtt = RttEstimator()
    rtt.sample(0.0003)  # a timed segment (Karn)
    for i in range(500):  # then echoes all within the same millisecond tick
        sample = ts_rtt(100.0 + i * 1e-5, 0, ts_clock(100.0 + i * 1e-5, 0))
        assert sample is not None
        rtt.sample(sample)
    assert rtt.srtt is not None and 0.0003 <= rtt.srtt <= 0.001
