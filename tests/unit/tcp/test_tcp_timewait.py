"""The compact TIME-WAIT record, stepped at explicit times (RFC 9293 §3.6, §3.10.7.4;
RFC 7323 §5 PAWS; RFC 6191 reuse; Linux tcp_timewait_state_process, rfc1337=0)."""

from __future__ import annotations

import sys

from hypothesis import given, settings
from hypothesis import strategies as st
from tcp_helpers import (
    ACK,
    FIN,
    IRS,
    ISS,
    LOCAL_IP,
    LOCAL_PORT,
    REMOTE_IP,
    REMOTE_PORT,
    RST,
    SYN,
    established,
    fin_wait_2,
    one,
    plain_config,
    seg,
    time_wait,
)

from joyride.tcp.connection import TcpConnection
from joyride.tcp.counters import Counters
from joyride.tcp.state import TcpEvent, TcpState
from joyride.tcp.timewait import OOW_ACK_INTERVAL, TimeWait, TwVerdict
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpFlags, TcpOptions, TcpSegment

TW = 60.0
TS_RECENT = 5_000_000
TS_OFFSET = 777


def record(now: float = 10.0, *, ts: bool = False) -> TimeWait:
    """A record as ``time_wait()`` leaves the connection: SND.NXT = ISS+2 (our FIN
    acknowledged), RCV.NXT = IRS+2 (the peer's FIN received)."""
    return TimeWait(
        LOCAL_IP, LOCAL_PORT, REMOTE_IP, REMOTE_PORT, snd_nxt=ISS + 2, rcv_nxt=IRS + 2,
        window=1000, ts_recent=TS_RECENT if ts else None, ts_recent_age=now,
        ts_offset=TS_OFFSET, now=now, duration=TW,
    )


def tsopt(tsval: int) -> TcpOptions:
    return TcpOptions(timestamps=(tsval, 0))


def connection_in_time_wait(now: float = 1.0) -> TcpConnection:
    conn = time_wait(plain_config(time_wait=TW), now=now)
    conn.events()
    return conn


# -- hand-over from the connection -------------------------------------------------------


def test_connection_hands_over_its_numbers_and_closes_rfc9293_3_6() -> None:
    conn = connection_in_time_wait(now=1.0)
    tw = conn.time_wait_record(5.0)
    assert tw is not None
    assert tw.key == (LOCAL_IP, LOCAL_PORT, REMOTE_IP, REMOTE_PORT)
    assert (tw.snd_nxt, tw.rcv_nxt) == (ISS + 2, IRS + 2)
    assert tw.ts_recent is None  # timestamps were off in plain_config
    # 2*MSL keeps counting from entering TIME-WAIT, not from the hand-over.
    assert tw.expires == 1.0 + TW
    assert conn.state is TcpState.CLOSED
    assert conn.events() == [TcpEvent.CLOSED]
    assert conn.poll_at() is None


def test_no_record_while_the_application_may_still_read() -> None:
    # Half-close: our FIN went out by shutdown_write, the application never closed.
    conn = connection_in_time_wait()
    conn._app_closed = False  # as after shutdown_write() + the peer's FIN
    assert conn.time_wait_record(2.0) is None
    assert conn.state is TcpState.TIME_WAIT


def test_no_record_outside_time_wait() -> None:

    conn = fin_wait_2(plain_config())
    assert conn.time_wait_record(1.0) is None
    assert conn.state is TcpState.FIN_WAIT_2


def test_record_keeps_timestamps_when_negotiated_rfc7323() -> None:

    cfg = plain_config(timestamps=True, time_wait=TW)
    conn = established(cfg, 0.0, peer_options=TcpOptions(mss=1460, timestamps=(100, 0)))
    conn.close()
    fin = one(conn, 0.0)
    assert fin.options.timestamps is not None
    conn.receive(seg(IRS + 1, ISS + 2, FIN | ACK, options=tsopt(200)), 0.5)
    one(conn, 0.5)
    assert conn.state is TcpState.TIME_WAIT
    tw = conn.time_wait_record(0.6)
    assert tw is not None and tw.ts_recent == 200
    ack = tw.ack(1.0)
    our_ts = ack.options.timestamps
    assert our_ts is not None and our_ts[1] == 200
    # Our TSval clock continues the connection's (same offset: RFC 7323 §5.4).
    assert our_ts[0] - fin.options.timestamps[0] == 1000


def test_record_is_small() -> None:
    tw = record()
    size = sys.getsizeof(tw) + sys.getsizeof(tw.snd_nxt) + sys.getsizeof(tw.rcv_nxt)
    assert size < 300
    assert not hasattr(tw, "__dict__")


# -- RFC 9293 §3.10.7.4 TIME-WAIT --------------------------------------------------------


def test_retransmitted_fin_is_acked_and_restarts_2msl_rfc9293_3_10_7_4() -> None:
    tw = record(now=10.0)
    counters = Counters()
    verdict, reply = tw.receive(seg(IRS + 1, ISS + 2, FIN | ACK), 30.0, counters)
    assert verdict is TwVerdict.KEEP
    assert reply is not None
    assert (reply.flags, reply.seq, reply.ack, reply.window) == (ACK, ISS + 2, IRS + 2, 1000)
    assert tw.expires == 30.0 + TW
    assert counters["tw_fin_acked"] == 1
    # A FIN is never rate-limited: each retransmission gets its ACK (the last was lost).
    verdict, reply = tw.receive(seg(IRS + 1, ISS + 2, FIN | ACK), 30.1, counters)
    assert reply is not None and tw.expires == 30.1 + TW


def test_bare_ack_at_rcv_nxt_restarts_timer_without_reply() -> None:
    tw = record(now=10.0)
    verdict, reply = tw.receive(seg(IRS + 2, ISS + 2, ACK), 20.0)
    assert (verdict, reply) == (TwVerdict.KEEP, None)
    assert tw.expires == 20.0 + TW


def test_stray_data_is_acked_rfc9293_3_10_7_4() -> None:
    tw = record()
    verdict, reply = tw.receive(seg(IRS + 2, ISS + 2, ACK, b"late"), 11.0)
    assert verdict is TwVerdict.KEEP
    assert reply is not None and reply.ack == IRS + 2 and reply.seq == ISS + 2


def test_out_of_window_pure_acks_are_rate_limited() -> None:
    tw = record()
    counters = Counters()
    _, first = tw.receive(seg(IRS + 900, ISS + 2, ACK), 11.0, counters)
    _, second = tw.receive(seg(IRS + 900, ISS + 2, ACK), 11.0 + OOW_ACK_INTERVAL / 2, counters)
    _, third = tw.receive(seg(IRS + 900, ISS + 2, ACK), 11.0 + OOW_ACK_INTERVAL, counters)
    assert first is not None and second is None and third is not None
    assert counters["tw_ack_ratelimited"] == 1


def test_rst_at_rcv_nxt_ends_time_wait_as_linux_rfc1337_0() -> None:
    tw = record()
    counters = Counters()
    verdict, reply = tw.receive(seg(IRS + 2, 0, RST), 11.0, counters)
    assert (verdict, reply) == (TwVerdict.CLOSE, None)
    assert counters["tw_killed_by_rst"] == 1


def test_rst_elsewhere_is_dropped_silently() -> None:
    tw = record()
    counters = Counters()
    verdict, reply = tw.receive(seg(IRS + 50, 0, RST), 11.0, counters)
    assert (verdict, reply) == (TwVerdict.KEEP, None)
    assert tw.expires == 10.0 + TW
    assert counters["tw_drop_rst"] == 1


def test_expiry_at_2msl_rfc9293_3_6() -> None:
    tw = record(now=10.0)
    assert not tw.expired(10.0 + TW - 0.001)
    assert tw.expired(10.0 + TW)


# -- RFC 7323 §5.3 PAWS -------------------------------------------------------------------


def test_paws_rejects_old_timestamp_with_ack_and_restart_rfc7323_5_3() -> None:
    tw = record(now=10.0, ts=True)
    counters = Counters()
    verdict, reply = tw.receive(seg(IRS + 2, ISS + 2, ACK, options=tsopt(TS_RECENT - 5)),
                                12.0, counters)
    assert verdict is TwVerdict.KEEP and reply is not None
    assert reply.options.timestamps == ((int(12.0 * 1000) + TS_OFFSET), TS_RECENT)
    assert tw.expires == 12.0 + TW
    assert counters["tw_drop_paws"] == 1
    assert tw.ts_recent == TS_RECENT


def test_in_window_ack_advances_ts_recent() -> None:
    tw = record(now=10.0, ts=True)
    tw.receive(seg(IRS + 2, ISS + 2, ACK, options=tsopt(TS_RECENT + 7)), 12.0)
    assert (tw.ts_recent, tw.ts_recent_age) == (TS_RECENT + 7, 12.0)


# -- RFC 6191 reuse of the 4-tuple ---------------------------------------------------------


def test_syn_beyond_rcv_nxt_reopens_without_timestamps_rfc6191() -> None:
    tw = record()
    counters = Counters()
    verdict, reply = tw.receive(seg(IRS + 100_000, 0, SYN), 11.0, counters)
    assert (verdict, reply) == (TwVerdict.REOPEN, None)
    assert counters["tw_reuse"] == 1


def test_old_syn_is_acked_and_does_not_extend_2msl_rfc9293_3_10_7_4() -> None:
    tw = record(now=10.0)
    verdict, reply = tw.receive(seg(IRS - 10, 0, SYN), 11.0)
    assert verdict is TwVerdict.KEEP
    assert reply is not None and reply.ack == IRS + 2
    assert tw.expires == 10.0 + TW  # an ACK-less SYN may be a new peer's: no restart


def test_syn_with_newer_timestamp_reopens_even_below_rcv_nxt_rfc6191() -> None:
    tw = record(ts=True)
    verdict, _ = tw.receive(seg(IRS - 10, 0, SYN, options=tsopt(TS_RECENT + 1)), 11.0)
    assert verdict is TwVerdict.REOPEN


def test_syn_with_older_timestamp_is_refused_even_beyond_rcv_nxt_rfc6191() -> None:
    tw = record(ts=True)
    verdict, reply = tw.receive(seg(IRS + 100_000, 0, SYN, options=tsopt(TS_RECENT - 1)),
                                11.0)
    assert verdict is TwVerdict.KEEP and reply is not None


def test_syn_ack_never_reopens() -> None:
    tw = record()
    verdict, reply = tw.receive(seg(IRS + 100_000, ISS + 2, SYN | ACK), 11.0)
    assert verdict is TwVerdict.KEEP and reply is not None


@settings(max_examples=200, deadline=None)
@given(
    seq=st.integers(0, 2**32 - 1), ack=st.integers(0, 2**32 - 1),
    flags=st.integers(0, 0x3F), payload=st.binary(max_size=8),
    tsval=st.none() | st.integers(0, 2**32 - 1), ts=st.booleans(),
    dt=st.floats(0.0, 100.0),
)
def test_any_segment_gets_a_verdict_never_an_exception(
    seq: int, ack: int, flags: int, payload: bytes, tsval: int | None, ts: bool, dt: float
) -> None:
    tw = record(now=10.0, ts=ts)
    opts = TcpOptions(timestamps=None if tsval is None else (tsval, 0))
    s = TcpSegment(REMOTE_PORT, LOCAL_PORT, Seq(seq), Seq(ack), TcpFlags(flags), 100,
                   payload, opts)
    verdict, reply = tw.receive(s, 10.0 + dt)
    # The record never moves its deadline backwards and only answers with ACKs.
    assert tw.expires >= 10.0 + TW
    if reply is not None:
        assert verdict is TwVerdict.KEEP
        assert (reply.flags, reply.seq, reply.ack) == (ACK, ISS + 2, IRS + 2)
    if flags & RST:
        assert reply is None
