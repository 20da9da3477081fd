"""Fast path and slow path agree: the same segment sequences through a connection the C
data plane runs and one that Python's ``TcpConnection`` runs (the authority), byte for
byte on the wire (sequence numbers relative to each side's ISS; timestamps' values and
the window field excepted: the first depends on random per-connection offsets, the
second on when each bed's application drains the buffer) and in the state they end in.
The peer's segments may be held back behind later ones or lost on their way, so that
out-of-order data, its SACK blocks and the filling of its holes are compared too; its
pure ACKs may arrive behind its next segment (old ACKs, RFC 9293 §3.10.7.4); and the
plane's data segments may be held back or lost on their way to the peer, whose SACK
blocks and duplicate ACKs then drive the sender's side (RACK, RFC 6675, RFC 3042).
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from joyride.dataplane.membed import Bed, read_all
from joyride.dataplane.plane import lib
from joyride.tcp.config import TcpConfig
from joyride.tcp.connection import TcpConnection
from joyride.wire.frame import parse_frame

pytestmark = pytest.mark.skipif(lib is None, reason="the C data plane is not built")

Op = tuple[str, float]
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("peer"), st.integers(1, 6000).map(float)),
        st.tuples(st.just("app"), st.integers(1, 6000).map(float)),
        st.tuples(st.just("wait"), st.sampled_from([0.0001, 0.002, 0.03, 0.05, 0.3])),
        # The peer's next data segment arrives after this many later ones (reordering).
        st.tuples(st.just("hold"), st.integers(1, 4).map(float)),
        # The peer's next data segment is lost (the peer's recovery resends it).
        st.tuples(st.just("drop"), st.just(1.0)),
        # The peer's next pure ACK arrives after its next segment (an old ACK then).
        st.tuples(st.just("swap"), st.just(1.0)),
        # The plane's next data segment reaches the peer after this many later ones, or
        # never: the peer's SACK blocks and duplicate ACKs, the sender's side of SACK.
        st.tuples(st.just("down_hold"), st.integers(1, 4).map(float)),
        st.tuples(st.just("down_drop"), st.just(1.0)),
        # From now on the peer's frames reach the plane this much later (a queue on
        # the path: the RTT samples rise, and HyStart++ (RFC 9406) acts on them).
        st.tuples(st.just("lag"), st.sampled_from([0.0, 0.006, 0.02])),
        # The application shuts down writing (its FIN follows its bytes), or the peer
        # does: the close, which C runs up to FIN-WAIT-2 for a connection Python gave it.
        st.tuples(st.just("eof"), st.just(1.0)),
        st.tuples(st.just("peer_eof"), st.just(1.0)),
    ),
    min_size=1, max_size=25,
)


def stream(seed: int, n: int) -> bytes:
    return hashlib.shake_256(seed.to_bytes(8, "little")).digest(n)


CONFIGS = {
    "cubic": TcpConfig(nodelay=True),
    "newreno": TcpConfig(nodelay=True, congestion_control="newreno"),
    # Keepalive probes after 0.4 s idle: C hands the flow back for each one.
    "keepalive": TcpConfig(nodelay=True, keepalive=True, keepalive_idle=0.4,
                           keepalive_interval=0.2),
    # Nagle on: C holds back small segments as Python does.
    "nagle": TcpConfig(nodelay=False),
}


def data_segment(frame: bytes, to_drop: list[int], to_hold: list[int],
                 held: list[list[object]], deliver: Callable[[bytes], object],
                 deliver_held: Callable[[bytes], object]) -> None:
    """One data segment on its way: lost if a drop is due, held back if a hold is due
    (``held``: [frame, later segments still to let by]), else delivered, and the held
    ones whose turn came after it."""
    if to_drop[0]:
        to_drop[0] -= 1
        return
    if to_hold[0]:
        held.append([frame, to_hold[0]])
        to_hold[0] = 0
        return
    deliver(frame)
    for entry in list(held):
        entry[1] -= 1  # type: ignore[operator]
        if entry[1] == 0:
            held.remove(entry)
            deliver_held(entry[0])  # type: ignore[arg-type]


def play(ops: list[Op], in_c: bool, config: str = "cubic",
         ipv6: bool = False) -> dict[str, object]:
    bed = Bed(config=CONFIGS[config], ipv6=ipv6)
    client, server = bed.connect()
    wire: list[tuple[object, ...]] = []
    blackout = [0.0]  # ("blackout", s): the peer's frames are lost for s seconds
    to_drop = [0]  # ("drop", n): the peer's next n data segments are lost
    to_hold = [0]  # ("hold", n): its next data segment waits for n later ones
    held: list[list[object]] = []  # [frame, later data segments still to let by]
    to_swap = [0]  # ("swap", 1): its next pure ACK goes behind its next segment
    swapped: list[bytes] = []
    down_drop = [0]  # ("down_drop", 1): the plane's next data segment is lost
    down_hold = [0]  # ("down_hold", n): it reaches the peer after n later ones
    held_down: list[list[object]] = []
    lag = [0.0]  # ("lag", s): the peer's frames toward the plane arrive s later
    lagged: list[tuple[float, bytes]] = []  # (due, frame), in the order sent

    def rel(seq: int) -> int:
        return (seq - client.iss) & 0xFFFFFFFF

    def arrive(frame: bytes) -> None:
        bed.port.push(frame)
        if swapped:  # the old ACK, right behind the segment that overtook it
            bed.port.push(swapped.pop())

    def toward_plane(frame: bytes) -> bool:
        if bed.clock() < blackout[0]:
            return False
        if lag[0] or lagged:  # FIFO: a frame lagged less waits for those before it
            lagged.append((bed.clock() + lag[0], frame))
            return False
        return reach_plane(frame)

    def reach_plane(frame: bytes) -> bool:
        if not parse_frame(frame, ipv6=True).tcp.payload:
            if to_swap[0] and not swapped:
                to_swap[0] = 0
                swapped.append(frame)
            else:
                arrive(frame)
            return False
        data_segment(frame, to_drop, to_hold, held, arrive, bed.port.push)
        return False

    def toward_peer(frame: bytes, payload: bool) -> bool:
        if not payload:
            return True
        inbox = bed.peer_nic.inbox.append
        data_segment(frame, down_drop, down_hold, held_down, inbox, inbox)
        return False

    def record(frame: bytes, to_plane: bool) -> bool:
        if to_plane:
            return toward_plane(frame)
        seg = parse_frame(frame, ipv6=True).tcp
        wire.append(((seg.seq - server.iss) & 0xFFFFFFFF,
                     rel(seg.ack) if seg.flags & 0x10 else 0,
                     int(seg.flags), len(seg.payload), seg.options.timestamps is not None,
                     tuple((rel(left), rel(right)) for left, right in seg.options.sack_blocks)))
        return toward_peer(frame, bool(seg.payload))

    def release_lagged() -> None:
        while lagged and lagged[0][0] <= bed.clock():
            reach_plane(lagged.pop(0)[1])

    def release_held() -> None:
        for frame, _ in held:
            bed.port.push(frame)  # type: ignore[arg-type]
        held.clear()
        for frame in swapped:
            bed.port.push(frame)
        swapped.clear()
        for frame, _ in held_down:
            bed.peer_nic.inbox.append(frame)  # type: ignore[arg-type]
        held_down.clear()

    bed.impair = record
    # The application is behind a socket either way, pumped by the bed as the service
    # pumps it while Python runs the connection; in the Python-only run it never goes
    # to C. So both see the application's reads and writes at the same moments.
    if in_c:
        _, app = bed.adopt(server)
    else:
        bed.readopt = False
        _, app = bed.attach(server)
    app_got, peer_got = bytearray(), bytearray()

    def app_reads() -> None:
        app_got.extend(read_all(app))
    up = down = 0
    app_eof = peer_eof = False
    for i, (kind, value) in enumerate(ops):
        if (kind in ("app", "eof") and app_eof) or (kind in ("peer", "peer_eof") and peer_eof):
            pass  # nothing more to write after the EOF
        elif kind == "eof":
            app_eof = True
            app.shutdown(socket.SHUT_WR)
            if not server.parked:
                bed.pump()  # as for "app": Python sees it now, C in its next round
        elif kind == "peer_eof":
            peer_eof = True
            client.shutdown_write()
            bed.peer.mark(client)
        elif kind == "peer":
            data = stream(i, int(value))
            client.send(data)
            up += len(data)
            bed.peer.mark(client)
        elif kind == "app":
            data = stream(1000 + i, int(value))
            down += len(data)
            app.sendall(data)
            if not server.parked:
                # Python runs it now: the bytes enter the connection here (as C reads
                # them in its next round, before any receive), not after the next
                # step's receive (the pump's place in Bed.step).
                bed.pump()
        elif kind == "blackout":
            blackout[0] = bed.clock() + value
        elif kind == "drop":
            to_drop[0] += int(value)
        elif kind == "hold":
            to_hold[0] = int(value)
        elif kind == "swap":
            to_swap[0] = 1
        elif kind == "down_drop":
            down_drop[0] += 1
        elif kind == "down_hold":
            down_hold[0] = int(value)
        elif kind == "lag":
            lag[0] = value
        else:
            bed.clock.advance(value)
        for _ in range(3):
            release_lagged()
            bed.step()
            app_reads()
            peer_got += client.recv()
        if kind == "wait":  # what is still held arrives now, in the order it was held
            release_held()
    release_held()
    for _ in range(40):
        release_lagged()
        bed.step(0.01)
        app_reads()
        peer_got += client.recv()
    if in_c and server.parked:
        bed.plane.release(server)
    return {"wire": wire, "state": state(server, client), "app": bytes(app_got),
            "peer": bytes(peer_got), "reasons": bed.reasons}


def state(server: TcpConnection, client: TcpConnection) -> dict[str, object]:
    recovery = server.recovery
    return {
        "rcv_nxt": (server.rcv_nxt - client.iss) & 0xFFFFFFFF,
        "snd_una": (server.snd_una - server.iss) & 0xFFFFFFFF,
        "snd_nxt": (server.snd_nxt - server.iss) & 0xFFFFFFFF,
        "cwnd": server.congestion.cwnd,
        "ssthresh": server.congestion.ssthresh,
        "srtt": server.rtt.srtt,
        "rto": server.rtt.rto,
        "send_window": server.send_window,
        "send_queue": server.send_queue,
        "state": server.state.name,
        # RACK (RFC 8985 §6.2): what C keeps while it runs the connection.
        "rack": (recovery.rack_xmit_ts, recovery.rack_rtt, recovery.rack_min_rtt,
                 None if recovery.rack_end_seq is None
                 else (recovery.rack_end_seq - server.iss) & 0xFFFFFFFF,
                 [((end - server.iss) & 0xFFFFFFFF, at) for end, at in recovery.tx_records()],
                 recovery.reordering_seen, recovery.rack_timeout),
        # The sender's side of SACK: the scoreboard and the duplicate ACKs counted.
        "sack": (recovery.dupacks, recovery.in_recovery,
                 [((left - server.iss) & 0xFFFFFFFF, (right - server.iss) & 0xFFFFFFFF)
                  for left, right in recovery.board.blocks()]),
        "counters": {key: server.counters[key] for key in (
            "retransmitted_segments", "fast_retransmits", "limited_transmit_segments",
            "rack_reordering_seen", "drop_paws", "internal_error_parked",
            "hystart_css_entered", "hystart_css_abandoned", "hystart_slow_start_exits",
            "hystart_ack_train_exits")},
        # HyStart++ (RFC 9406): where the initial slow start stands.
        "hystart": (server.congestion.hystart.phase, server.congestion.hystart.samples,
                    server.congestion.hystart.current_round_min,
                    server.congestion.hystart.css_rounds),
    }


# Derandomized: the same 200 sequences every run, so CI is deterministic; run with
# --hypothesis-seed=N (and derandomize off) to explore further.
@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(OPS, st.sampled_from(sorted(CONFIGS)))
def test_c_and_python_send_the_same_segments_and_end_in_the_same_state(
        ops: list[Op], config: str) -> None:
    python, c = play(ops, in_c=False, config=config), play(ops, in_c=True, config=config)
    assert c["app"] == python["app"]
    assert c["peer"] == python["peer"]
    assert c["wire"] == python["wire"]
    assert c["state"] == python["state"]


@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_ipv6_flows_agree_too(ops: list[Op]) -> None:
    """The same over IPv6 (issue 18): frames of the family, its MSS (1440), the
    16-byte flow key."""
    python, c = play(ops, in_c=False, ipv6=True), play(ops, in_c=True, ipv6=True)
    assert c["app"] == python["app"]
    assert c["peer"] == python["peer"]
    assert c["wire"] == python["wire"]
    assert c["state"] == python["state"]


def test_a_bulk_transfer_agrees_too() -> None:
    ops: list[Op] = [("app", 6000.0)] * 40 + [("peer", 5000.0)] * 20 + [("wait", 0.3)]
    python, c = play(ops, in_c=False), play(ops, in_c=True)
    assert c["wire"] == python["wire"] and c["state"] == python["state"]
    assert len(c["peer"]) == 240_000 and len(c["app"]) == 100_000  # type: ignore[arg-type]


@pytest.mark.parametrize("config", ["cubic", "newreno"])
def test_loss_probes_agree_rfc8985_7(config: str) -> None:
    """The peer's ACKs are lost for a while: C hands the flow back when the loss probe
    timeout comes due, as Python's own timer fires, and what follows (the probe, the
    RTO after it, the recovery) is the same on the wire."""
    ops: list[Op] = ([("app", 6000.0)] * 4 + [("blackout", 0.1), ("app", 3000.0)]
                     + [("wait", 0.002)] * 30 + [("wait", 0.3), ("app", 2000.0),
                                                 ("peer", 100.0), ("wait", 0.3)])
    python, c = play(ops, in_c=False, config=config), play(ops, in_c=True, config=config)
    assert c["wire"] == python["wire"] and c["state"] == python["state"]
    assert c["peer"] == python["peer"] and c["app"] == python["app"]
    assert "rto" in c["reasons"]


def test_an_owed_ack_waiting_to_leave_does_not_put_off_the_loss_probe() -> None:
    """C puts off a due RTO or loss probe while the flow's data frames still wait to
    leave (Linux's skb_still_in_host_queue). A pure ACK waiting says nothing about the
    data: here the ACK owed at once for out-of-order data is queued in the round the
    probe comes due, and C must still hand the flow back for Python's probe. (Found by
    a random sequence: C sent the probe's ACK and no probe.)"""
    ops: list[Op] = [("drop", 1.0), ("drop", 1.0), ("hold", 3.0), ("peer", 5864.0),
                     ("drop", 1.0), ("drop", 1.0), ("hold", 1.0), ("peer", 3576.0),
                     ("app", 2841.0)]
    python, c = play(ops, in_c=False), play(ops, in_c=True)
    assert c["wire"] == python["wire"] and c["state"] == python["state"]
    assert c["peer"] == python["peer"] and c["app"] == python["app"]
    assert "rto" in c["reasons"]  # the probe is Python's


def test_hystart_agrees() -> None:
    """Slow start ends on the same ACK in both planes. The peer's ACKs come back 2 ms
    late, then 10 ms: here the ACK train (Linux's HyStart rule) ends it, with cwnd
    past 16 segments and ACKs back to back for longer than half the smallest RTT.
    C, which runs the flow all the way, does it on the same ACK as Python. (The delay
    rule and conservative slow start, which need rounds whose ACKs come in bursts
    more than 2 ms apart, are stepped in tests/unit/tcp/components/test_hystart.py.)"""
    burst: list[Op] = [("app", 6000.0)] * 60
    ops: list[Op] = ([("lag", 0.002)] + burst + [("lag", 0.01)] + [("wait", 0.002)] * 40
                     + (burst + [("wait", 0.002)] * 40) * 2)
    python, c = play(ops, in_c=False), play(ops, in_c=True)
    assert c["wire"] == python["wire"] and c["state"] == python["state"]
    assert c["peer"] == python["peer"] and len(c["peer"]) == 180 * 6000  # type: ignore[arg-type]
    counters = c["state"]["counters"]  # type: ignore[index]
    assert counters["hystart_ack_train_exits"] == 1
    assert c["state"]["ssthresh"] < 0x7FFFFFFF  # type: ignore[index]
    assert not c["reasons"]  # C ran it throughout


def test_conservative_slow_start_agrees_rfc9406_4_2() -> None:
    """The application writes in bursts 10 ms apart, so the peer's ACKs come back in
    bursts too and no ACK train forms; then the path's delay doubles. The rounds'
    minimum RTT rises, HyStart++ enters conservative slow start and leaves slow start
    after CSS_ROUNDS rounds of it, in C (which runs the flow from before the rise to
    the end) as in Python."""
    burst: list[Op] = [("app", 6000.0)] * 8 + [("wait", 0.002)] * 5
    ops: list[Op] = [("lag", 0.01)] + burst * 6 + [("lag", 0.02)] + burst * 20
    python, c = play(ops, in_c=False), play(ops, in_c=True)
    assert c["wire"] == python["wire"] and c["state"] == python["state"]
    assert c["peer"] == python["peer"] and len(c["peer"]) == 26 * 8 * 6000  # type: ignore[arg-type]
    counters = c["state"]["counters"]  # type: ignore[index]
    assert counters["hystart_css_entered"] == 1 and counters["hystart_slow_start_exits"] == 1
    assert counters["hystart_ack_train_exits"] == 0
    assert c["state"]["ssthresh"] == c["state"]["cwnd"]  # type: ignore[index]
    assert c["reasons"] == ["rto"]  # the loss probe before the first ACK: long before


def test_the_immediate_ack_restarts_the_idle_clock_in_both() -> None:
    """The ACK owed at once for out-of-order data counts as a send for the idle restart
    (RFC 5681 §4.1) in Python as it does in C; Python's receive path had not counted it,
    so after 0.3 s with nothing else sent it restarted the window and C did not. (Found
    by a random sequence: cwnd 10,987 against C's 11,311.)"""
    ops: list[Op] = [("hold", 3.0), ("down_drop", 1.0), ("peer", 2242.0), ("hold", 4.0),
                     ("peer", 71.0), ("drop", 1.0), ("down_hold", 1.0), ("app", 3034.0),
                     ("app", 5287.0), ("wait", 0.3), ("app", 2736.0), ("app", 3483.0)]
    python, c = play(ops, in_c=False), play(ops, in_c=True)
    assert c["wire"] == python["wire"] and c["state"] == python["state"]
    assert c["peer"] == python["peer"] and c["app"] == python["app"]


def test_a_peer_fin_held_out_of_order_keeps_fin_wait_1_in_python() -> None:
    """The peer's FIN arrived ahead of a hole (Python holds it: _peer_fin) while the
    connection was in FIN-WAIT-1: C must not take the connection then, or the FIN is
    forgotten and the ACK that fills the hole leaves it out. (Found by a random
    sequence once C took FIN-WAIT-1.)"""
    ops: list[Op] = [("lag", 0.02), ("peer", 2309.0), ("down_drop", 1.0), ("lag", 0.006),
                     ("app", 340.0), ("eof", 1.0), ("swap", 1.0), ("swap", 1.0),
                     ("drop", 1.0), ("peer_eof", 1.0)]
    python, c = play(ops, in_c=False, config="newreno"), play(ops, in_c=True, config="newreno")
    assert c["wire"] == python["wire"] and c["state"] == python["state"]
    assert c["peer"] == python["peer"] and c["app"] == python["app"]
    assert c["state"]["state"] == "TIME_WAIT"  # type: ignore[index]
