"""RFC 6675 SACK loss recovery as the connection drives it: NextSeg rules 1-4,
RescueRxt, the scoreboard kept exact on every ACK, and what congestion control hears.

Scenarios send ten full segments (IW10, RFC 6928) from ISS+1 and play the peer's
ACKs; ``S(k)`` is the first sequence number of segment ``k``.
"""

from __future__ import annotations

import pytest
from tcp_helpers import ACK, IRS, ISS, established, out, plain_config, seg

from joyride.tcp.connection import TcpConnection
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpOptions, TcpSegment

MSS = 1460
BASE = ISS + 1


def S(k: int) -> Seq:  # reads like the RFC's S1, S2
    return BASE + k * MSS


def sack_conn(cc: str = "cubic", **cfg: object) -> TcpConnection:
    return established(
        plain_config(sack=True, congestion_control=cc, **cfg),
        peer_options=TcpOptions(mss=MSS, sack_permitted=True),
    )


def sack_ack(
    ack: Seq, *blocks: tuple[int, int], window: int = 64000
) -> TcpSegment:
    """An ACK of ``ack`` SACKing segments [a, b) for each (a, b) in ``blocks``."""
    sack = tuple((S(a), S(b)) for a, b in blocks)
    return seg(IRS + 1, ack, ACK, window=window, options=TcpOptions(sack_blocks=sack))


def flight_of_ten(conn: TcpConnection, extra: int = 0) -> None:
    conn.send(b"d" * MSS * (10 + extra))
    sent = out(conn, 1.0)
    assert [s.seq for s in sent] == [S(k) for k in range(10)]


@pytest.mark.parametrize("why", ["no_new_data", "window_closed"])
def test_nextseg_rule3_runs_when_rule2_cannot_rfc6675_4(why: str) -> None:
    """RFC 6675 §4 NextSeg (2) applies only "if any [new data] exists and the
    receiver's advertised window allows"; otherwise (3) resends any unSACKed segment
    below the highest SACK, even if not yet deemed lost."""
    conn = sack_conn()
    # With new data queued, the peer advertises exactly up to S(10) so it cannot go.
    flight_of_ten(conn, extra=5 if why == "window_closed" else 0)
    # Segments 3, 6 and 9 SACKed: 0-2 are lost (DupThresh ranges above them), 4, 5,
    # 7, 8 are not (RFC 6675 §4 IsLost).
    conn.receive(sack_ack(BASE, (3, 4), (6, 7), (9, 10), window=10 * MSS), 1.1)
    assert conn.in_recovery
    # CUBIC: cwnd = 0.7 * 10 segments; pipe = 4 (not lost) + 1 (S(0) resent), so
    # §5 (4.3) resends S(0) and rule (1) fills the room with the lost S(1), S(2).
    assert [s.seq for s in out(conn, 1.1)] == [S(0), S(1), S(2)]
    # The retransmitted S(0) arrives: the partial ACK leaves room for one segment.
    conn.receive(sack_ack(S(1), (3, 4), (6, 7), (9, 10), window=9 * MSS), 1.2)
    assert [s.seq for s in out(conn, 1.2)] == [S(4)]  # rule (3), not silence


def test_nextseg_rule2_still_wins_with_new_data_and_window_rfc6675_4() -> None:
    conn = sack_conn()
    flight_of_ten(conn, extra=5)
    conn.receive(sack_ack(BASE, (3, 4), (6, 7), (9, 10)), 1.1)
    assert [s.seq for s in out(conn, 1.1)] == [S(0), S(1), S(2)]  # rule (1)
    conn.receive(sack_ack(S(1), (3, 4), (6, 7), (9, 10)), 1.2)
    assert [s.seq for s in out(conn, 1.2)] == [S(10)]  # rule (2) before rule (3)


def test_rescue_below_top_sack_block_sent_once_rfc6675_4_rule4() -> None:
    """RFC 6675 §4 NextSeg (4) / §5 (C.3): one rescue retransmission per recovery,
    recognised by the rule that chose it, even when it starts below the highest
    SACKed octet because the top SACK block reaches SND.MAX."""
    conn = sack_conn()
    flight_of_ten(conn)
    # S(0) and S(8) lost; the peer SACKs 1-7 and 9, the top block ending at SND.MAX.
    conn.receive(sack_ack(BASE, (1, 8), (9, 10)), 1.1)
    assert conn.in_recovery
    # (4.3) resends S(0); rule (3) then S(8), below the highest SACK but not lost.
    # No rescue yet: HighACK has not passed RescueRxt (the end of S(0)).
    assert [s.seq for s in out(conn, 1.1)] == [S(0), S(8)]
    # S(0) arrives; the ACK still reports S(8) missing. Rules 1-3 have nothing left,
    # so rule (4) resends the highest unSACKed segment, S(8) - once.
    conn.receive(sack_ack(S(8), (9, 10)), 1.2)
    assert [s.seq for s in out(conn, 1.2)] == [S(8)]
    conn.receive(sack_ack(S(8), (9, 10)), 1.25)
    assert out(conn, 1.25) == []
    assert conn.counters["retransmitted_segments"] == 3
    conn.receive(sack_ack(S(10)), 1.3)
    assert not conn.in_recovery


def test_ack_without_sack_blocks_prunes_scoreboard_rfc6675_5() -> None:
    """RFC 6675 §5: the scoreboard is updated from every ACK, so a cumulative ACK
    without a SACK option that covers SACKed data leaves ``sacked_bytes`` exact."""
    conn = sack_conn()
    flight_of_ten(conn)
    conn.receive(sack_ack(BASE, (3, 4), (6, 8)), 1.1)
    assert conn.sacked_bytes == 3 * MSS
    conn.receive(sack_ack(S(5)), 1.2)  # covers the first block, no SACK option
    assert conn.sacked_bytes == 2 * MSS
    conn.receive(sack_ack(S(10)), 1.3)
    assert conn.sacked_bytes == 0
