"""smoltcp-style helpers: build a connection in a given state, step it at explicit times.

The connection under test is "local" (ISS = 10000, port 49500); the test plays the
remote peer (IRS = 50000, port 80). Options are off unless a test turns them on, so
expected segments are small and exact.
"""

from __future__ import annotations

from dataclasses import replace

from joyride.tcp.config import TcpConfig
from joyride.tcp.connection import TcpConnection
from joyride.tcp.isn import IsnGenerator
from joyride.tcp.state import TcpState
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpFlags, TcpOptions, TcpSegment

LOCAL_IP = bytes([192, 168, 1, 1])
REMOTE_IP = bytes([192, 168, 1, 2])
LOCAL_PORT = 49500
REMOTE_PORT = 80
ISS = Seq(10000)
IRS = Seq(50000)
REMOTE_WIN = 64000

F = TcpFlags
SYN, ACK, FIN, RST, PSH = F.SYN, F.ACK, F.FIN, F.RST, F.PSH


class FixedIsn(IsnGenerator):
    """An ISN generator that always answers ``value`` (tests need exact numbers)."""

    def __init__(self, value: Seq) -> None:
        super().__init__(b"k" * 32)
        self.value = value

    def isn(
        self, local_ip: bytes, local_port: int, remote_ip: bytes, remote_port: int, now: float
    ) -> Seq:
        return self.value


def plain_config(**kw: object) -> TcpConfig:
    """No options, NewReno, Nagle on: the RFC 9293 baseline."""
    base = TcpConfig(
        window_scaling=False, timestamps=False, sack=False, congestion_control="newreno",
        mss=1460, receive_buffer=65535, receive_buffer_max=65535, send_buffer=256 * 1024,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def seg(
    seq: Seq | int,
    ack: Seq | int = 0,
    flags: TcpFlags = ACK,
    payload: bytes = b"",
    *,
    window: int = REMOTE_WIN,
    options: TcpOptions | None = None,
) -> TcpSegment:
    """A segment from the remote peer."""
    return TcpSegment(
        REMOTE_PORT, LOCAL_PORT, Seq(int(seq)), Seq(int(ack)), flags, window, payload,
        options or TcpOptions(),
    )


def out(conn: TcpConnection, now: float) -> list[TcpSegment]:
    return conn.segments_to_send(now)


def one(conn: TcpConnection, now: float) -> TcpSegment:
    segs = conn.segments_to_send(now)
    assert len(segs) == 1, segs
    return segs[0]


def none(conn: TcpConnection, now: float) -> None:
    segs = conn.segments_to_send(now)
    assert segs == [], segs


def syn_sent(config: TcpConfig | None = None, now: float = 0.0) -> TcpConnection:
    conn = TcpConnection.connect(
        config or plain_config(), LOCAL_IP, LOCAL_PORT, REMOTE_IP, REMOTE_PORT, now,
        FixedIsn(ISS), ts_offset=0,
    )
    syn = one(conn, now)
    assert syn.flags == SYN and syn.seq == ISS
    assert conn.state is TcpState.SYN_SENT
    return conn


def established(
    config: TcpConfig | None = None,
    now: float = 0.0,
    *,
    peer_options: TcpOptions | None = None,
    window: int = REMOTE_WIN,
) -> TcpConnection:
    """An ESTABLISHED connection: SND.UNA = SND.NXT = ISS+1, RCV.NXT = IRS+1."""
    conn = syn_sent(config, now)
    conn.receive(
        seg(IRS, ISS + 1, SYN | ACK, window=window,
            options=peer_options or TcpOptions(mss=1460)),
        now,
    )
    ack = one(conn, now)
    assert ack.flags == ACK and ack.ack == IRS + 1
    assert conn.state is TcpState.ESTABLISHED
    conn.events()
    return conn


def fin_wait_1(config: TcpConfig | None = None, now: float = 0.0) -> TcpConnection:
    conn = established(config, now)
    conn.close()
    fin = one(conn, now)
    assert fin.flags == FIN | ACK and fin.seq == ISS + 1
    assert conn.state is TcpState.FIN_WAIT_1
    return conn


def fin_wait_2(config: TcpConfig | None = None, now: float = 0.0) -> TcpConnection:
    conn = fin_wait_1(config, now)
    conn.receive(seg(IRS + 1, ISS + 2), now)
    assert conn.state is TcpState.FIN_WAIT_2
    none(conn, now)
    return conn


def close_wait(config: TcpConfig | None = None, now: float = 0.0) -> TcpConnection:
    conn = established(config, now)
    conn.receive(seg(IRS + 1, ISS + 1, FIN | ACK), now)
    ack = one(conn, now)
    assert ack.ack == IRS + 2
    assert conn.state is TcpState.CLOSE_WAIT
    conn.events()
    return conn


def time_wait(config: TcpConfig | None = None, now: float = 0.0) -> TcpConnection:
    conn = fin_wait_2(config, now)
    conn.receive(seg(IRS + 1, ISS + 2, FIN | ACK), now)
    ack = one(conn, now)
    assert ack.ack == IRS + 2
    assert conn.state is TcpState.TIME_WAIT
    return conn
