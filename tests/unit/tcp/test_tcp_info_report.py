"""A connection as Linux's TCP_INFO, SO_ERROR and SIOCOUTQ report it
(``sockopts.connection_info``: the service's ``OP_GETINFO`` answer, issue 14)."""

from __future__ import annotations

import errno

from tcp_helpers import (
    ACK,
    FIN,
    IRS,
    ISS,
    PSH,
    RST,
    close_wait,
    established,
    fin_wait_2,
    out,
    plain_config,
    seg,
)

from joyride import sockopts
from joyride.service import protocol
from joyride.tcp.state import TcpState
from joyride.wire.tcp import TcpOptions

NAMES = [name for name, _ in sockopts.TCP_INFO_FIELDS]


def fields(info: sockopts.ConnectionInfo) -> dict[str, int]:
    return dict(zip(NAMES, sockopts.TCP_INFO.unpack(info.tcp_info), strict=True))


def test_the_layout_is_linuxs_and_the_wire_carries_it() -> None:
    assert sockopts.TCP_INFO.size == protocol.TCP_INFO_SIZE == 232  # struct tcp_info, 6.1
    info = protocol.Info(errno.ECONNREFUSED, 3, 2, 1, bytes(range(232)))
    assert protocol.Info.decode(info.encode()) == info
    assert protocol.INFO.size == 248  # so_error, outq, notsent, window_clamp, tcp_info


def test_an_established_connection() -> None:
    conn = established(plain_config(), peer_options=TcpOptions(mss=1000))
    info = sockopts.connection_info(conn, pmtu=1500)
    f = fields(info)
    assert f["state"] == 1  # TCP_ESTABLISHED
    assert f["snd_mss"] == 1000 and f["advmss"] == 1460  # no timestamps: no 12 bytes off
    assert f["options"] == 0  # neither side offered timestamps, SACK, window scaling
    assert f["pmtu"] == 1500 and f["reordering"] == 3
    assert f["snd_ssthresh"] == sockopts.INFINITE_SSTHRESH  # Linux's "not yet set"
    assert f["snd_cwnd"] == -(-conn.congestion.cwnd // 1000)  # segments, not bytes
    assert f["rto"] == int(conn.rtt.rto * 1e6) and f["ato"] == 40000
    assert f["max_pacing_rate"] == sockopts.UNLIMITED_RATE
    assert f["bytes_sent"] == f["bytes_received"] == f["unacked"] == 0
    assert (info.so_error, info.outq, info.notsent) == (0, 0, 0)
    assert info.window_clamp == conn.config.receive_buffer_max


def test_queues_and_byte_counts_follow_the_data() -> None:
    conn = established(plain_config())
    conn.send(b"a" * 2920)
    sent = out(conn, 0.0)
    assert sum(len(s.payload) for s in sent) == 2920  # two full segments
    conn.send(b"b" * 100)  # Nagle holds it while data is unacknowledged
    assert out(conn, 0.0) == []
    info = sockopts.connection_info(conn, pmtu=1500, app_queued=50)
    f = fields(info)
    assert info.outq == 3020 + 50  # SIOCOUTQ: unacknowledged, unsent, still in the socket
    assert info.notsent == f["notsent_bytes"] == 100 + 50
    assert f["unacked"] == 2 and f["bytes_sent"] == 2920
    conn.receive(seg(IRS + 1, ISS + 2921, ACK | PSH, b"x" * 700), 0.01)
    f = fields(sockopts.connection_info(conn, pmtu=1500))
    assert f["bytes_received"] == 700 and f["bytes_acked"] == 2920


def test_closing_states_and_errors() -> None:
    assert fields(sockopts.connection_info(fin_wait_2(), pmtu=1500))["state"] == 5
    waiting = close_wait()
    assert fields(sockopts.connection_info(waiting, pmtu=1500))["state"] == 8
    reset = established()
    reset.receive(seg(IRS + 1, ISS + 1, RST), 0.0)
    assert reset.state is TcpState.CLOSED
    info = sockopts.connection_info(reset, pmtu=1500)
    assert fields(info)["state"] == 7 and info.so_error == errno.ECONNRESET
    gone = sockopts.closed_info(errno.ECONNREFUSED)
    assert gone.so_error == errno.ECONNREFUSED and fields(gone)["state"] == 7


def test_a_fin_is_not_a_byte_received() -> None:
    conn = established()
    conn.receive(seg(IRS + 1, ISS + 1, FIN | ACK | PSH, b"y" * 10), 0.0)
    assert fields(sockopts.connection_info(conn, pmtu=1500))["bytes_received"] == 10
