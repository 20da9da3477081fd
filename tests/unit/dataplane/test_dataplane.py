"""The C data plane at explicit times over an in-memory wire: what it runs, what it
gives back, and that bytes arrive intact (hashes) either way."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from typing import Any

import pytest

from joyride.dataplane import plane
from joyride.dataplane.membed import IP_SVC, MAC_PEER, MAC_SVC, Bed, read_all, transfer
from joyride.dataplane.plane import ffi, lib
from joyride.tcp.config import TcpConfig
from joyride.tcp.connection import TcpConnection
from joyride.tcp.recovery import EPISODE_FAST
from joyride.tcp.state import TcpState
from joyride.tcp.timers import Timer
from joyride.wire.addr import widen
from joyride.wire.frame import parse_frame

pytestmark = pytest.mark.skipif(lib is None, reason="the C data plane is not built")


def exchange(bed: Bed, client, app, request: bytes, reply: bytes) -> bytes:  # type: ignore[no-untyped-def]
    client.send(request)
    bed.peer.mark(client)
    got = b""
    for _ in range(50):
        bed.step()
        got += read_all(app)
        if len(got) >= len(request):
            break
    assert got == request
    app.sendall(reply)
    back = b""
    for _ in range(50):
        bed.step()
        back += client.recv()
        if len(back) >= len(reply):
            break
    return back


def test_request_response_runs_in_c_without_python() -> None:
    bed = Bed()
    client, server = bed.connect()
    _ours, app = bed.adopt(server)
    declined_before = bed.plane.stats()["declined"]
    received_before = server.counters["segments_received"]
    for i in range(200):
        req, rep = f"GET key{i}\r\n".encode(), os.urandom(64 + i)
        assert exchange(bed, client, app, req, rep) == rep
    st = bed.plane.stats()
    assert st["declined"] == declined_before  # not one segment went to Python
    assert st["rx_fast"] >= 200 and st["flows"] == 1  # requests carry the ACKs
    assert server.parked and bed.reasons == []
    assert server.counters["segments_received"] == received_before


@pytest.mark.parametrize(("nic_frames", "gso"), [(None, False), (6, False), (None, True)],
                         ids=["frames", "full-nic", "gso"])
def test_bulk_both_ways_arrives_intact(nic_frames: int | None, gso: bool) -> None:
    """Both ways at once, all in C. With a NIC that takes 6 frames a step, C's frames
    wait in the arena and its flows stop sending until there is room: nothing is
    dropped, so nothing needs retransmitting or Python. With GSO (test_gso.py) the
    download leaves in super-segments and still stays in C."""
    bed = Bed(nic_frames=nic_frames, gso=gso)
    client, server = bed.connect()
    _ours, app = bed.adopt(server)
    up, down = os.urandom(3_000_000), os.urandom(2_000_000)
    got_up, got_down = transfer(bed, client, app, up, down)
    assert hashlib.sha256(got_up).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(got_down).digest() == hashlib.sha256(down).digest()
    assert server.parked  # nothing in a loss-free transfer needed Python
    stats = bed.plane.stats()
    assert stats["tx_dropped"] == 0
    if nic_frames is not None:
        assert stats["tx_deferred"] > 0  # the NIC was full, and C kept its frames
    if gso:
        assert stats["gso_sends"] > 0


def test_flows_wait_for_a_full_nic_and_lose_nothing() -> None:
    """Eight downloads at once through a NIC that takes 2 of C's frames a step: their
    windows together outgrow the transmit arena, so flows stop sending (tx_wait) and
    resume in later rounds with what they had left; nothing is dropped, so no byte is
    retransmitted and every flow stays in C."""
    from joyride.dataplane.membed import IP_SVC, PORT

    bed = Bed(nic_frames=2)
    listener = bed.svc.listen(PORT)
    flows = []
    for _ in range(8):
        client = bed.peer.connect(IP_SVC, PORT)
        server = None
        for _ in range(20):
            bed.step()
            if (server := bed.svc.accept(listener)) is not None:
                break
        assert server is not None
        bed.run(5)
        _ours, app = bed.adopt(server)
        flows.append((client, server, app, os.urandom(400_000), bytearray()))
    sent = [0] * len(flows)
    for _ in range(60000):
        for k, (_client, _server, app, payload, _got) in enumerate(flows):
            if sent[k] < len(payload):
                with contextlib.suppress(BlockingIOError):
                    sent[k] += app.send(payload[sent[k]:sent[k] + 65536])
        bed.step()
        for client, _server, _app, _payload, got in flows:
            got += client.recv()
        if all(len(got) == len(payload) for *_, payload, got in flows):
            break
    for _client, server, _app, payload, got in flows:
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        assert server.parked and server.counters.get("retransmitted_segments", 0) == 0
    stats = bed.plane.stats()
    assert stats["tx_dropped"] == 0
    assert stats["tx_waits"] > 0 and stats["tx_deferred"] > 0


def test_transmit_modes_are_the_xsk_modules() -> None:
    """dataplane.h's enum dp_tx_mode names xsk.h's enum xsk_tx_mode by value."""
    from xsk._native import lib as xsk_lib

    assert (lib.DP_TX_QUEUE, lib.DP_TX_NOWAIT) == (xsk_lib.XSK_TX_QUEUE, xsk_lib.XSK_TX_NOWAIT)


def test_peer_fin_hands_the_flow_back_after_its_data() -> None:
    bed = Bed()
    client, server = bed.connect()
    _ours, app = bed.adopt(server)
    payload = os.urandom(50_000)
    client.send(payload)
    client.shutdown_write()
    bed.peer.mark(client)
    got = bytearray()
    for _ in range(200):
        bed.step()
        got += read_all(app)
        if not server.parked:
            break
    assert bed.reasons == ["segment"]
    assert server.state is TcpState.CLOSE_WAIT and server.eof
    got += read_all(app) + server.recv()  # the rest, from Python's receive buffer
    assert bytes(got) == payload


class HoldFirstData:
    """An impairment: the peer's first data segment toward the plane waits (``held``),
    and its retransmissions are lost, so that the test says when the hole fills; every
    later one passes, and a copy of the second is kept (``second``). The plane's frames
    are recorded in ``out``."""

    def __init__(self) -> None:
        self.held: list[bytes] = []
        self.second: list[bytes] = []
        self.out: list[bytes] = []

    def __call__(self, frame: bytes, toward_plane: bool) -> bool:
        if not toward_plane:
            self.out.append(frame)
            return True
        seg = parse_frame(frame).tcp
        if seg.payload:
            if not self.held:
                self.held.append(frame)
                return False
            if seg.seq == parse_frame(self.held[0]).tcp.seq:
                return False
            if not self.second:
                self.second.append(frame)
        return True

    def send(self, bed: Bed, client, n: int) -> bytes:  # type: ignore[no-untyped-def]
        """The peer sends n random bytes through this impairment, for three steps."""
        bed.impair = self
        payload = os.urandom(n)
        client.send(payload)
        bed.peer.mark(client)
        bed.run(3)
        return payload


def test_out_of_order_data_is_held_in_c_until_the_hole_fills() -> None:
    """RFC 9293 §3.10.7.4, RFC 5681 §4.2, RFC 2018 §4: segments past a hole are kept in
    C, each answered at once by an ACK of RCV.NXT whose first SACK block covers what is
    held; the late segment fills the hole and everything reaches the application in
    order. Python sees none of it."""
    bed = Bed()
    client, server = bed.connect()
    _ours, app = bed.adopt(server)
    declined_before = bed.plane.stats()["declined"]  # the handshake's
    impair = HoldFirstData()
    payload = impair.send(bed, client, 20_000)
    st = bed.plane.stats()
    assert st["rx_ooo"] >= 3 and st["ooo_filled"] == 0
    hole = parse_frame(impair.held[0]).tcp
    acks = [parse_frame(f).tcp for f in impair.out]
    dupacks = [a for a in acks if a.options.sack_blocks]
    assert len(dupacks) >= 3  # one ACK for each held segment
    for ack in dupacks:
        assert ack.ack == hole.seq
        left, right = ack.options.sack_blocks[0]
        assert left == hole.seq + len(hole.payload) and right > left
    assert read_all(app) == b""  # nothing past the hole is given to the application
    bed.port.push(impair.held[0])  # late, after the segments behind it
    got = bytearray()
    for _ in range(100):
        bed.step()
        got += read_all(app)
    assert bytes(got) == payload
    st = bed.plane.stats()
    assert st["ooo_filled"] == 1 and st["declined"] == declined_before
    assert server.parked and bed.reasons == []
    last = parse_frame(impair.out[-1]).tcp
    assert not last.options.sack_blocks  # nothing held: no SACK blocks any more
    bed.plane.release(server)
    assert server.counters["out_of_order_segments"] == st["rx_ooo"]


class StaleAcks:
    """An impairment: each pure ACK of the peer's toward the plane arrives with a late
    copy of the one before it behind it (reordered and duplicated), which is old (its
    SEG.ACK below SND.UNA) when the new one acknowledged more. ``old`` counts them."""

    def __init__(self, bed: Bed) -> None:
        self.bed = bed
        self.previous: bytes | None = None
        self.old = 0

    def __call__(self, frame: bytes, toward_plane: bool) -> bool:
        if not toward_plane or parse_frame(frame).tcp.payload:
            return True
        self.bed.port.push(frame)
        previous, self.previous = self.previous, frame
        if previous is not None:
            self.bed.port.push(previous)
            self.old += parse_frame(previous).tcp.ack != parse_frame(frame).tcp.ack
        return False


def test_old_acks_are_ignored_in_c_rfc9293_3_10_7_4() -> None:
    """A reordered, older ACK (SND.UNA - MAX.SND.WND =< SEG.ACK < SND.UNA) is ignored
    and its segment taken in C, as Python takes it: neither SND.UNA nor the window
    goes back, nothing is handed back, and the bytes arrive intact. One whose TSval is
    older than TS.Recent is dropped by PAWS, in C too."""
    bed = Bed()
    client, server = bed.connect()
    _ours, app = bed.adopt(server)
    declined_before = bed.plane.stats()["declined"]
    stale = StaleAcks(bed)
    bed.impair = stale
    payload = os.urandom(300_000)
    sent, got = 0, bytearray()
    for _ in range(2000):
        with contextlib.suppress(BlockingIOError):
            sent += app.send(payload[sent:sent + 65536])
        bed.step()
        got += client.recv()
        if len(got) == len(payload):
            break
    bed.run(3)
    got += client.recv()
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    assert stale.old >= 5  # old ACKs did reach C
    assert bed.plane.stats()["declined"] == declined_before
    assert server.parked and bed.reasons == []
    bed.plane.release(server)
    assert server.snd_una == server.snd_nxt  # everything acknowledged, nothing undone
    # A copy whose TSval is older than TS.Recent fails PAWS (RFC 7323 §5.3 R1): C
    # drops it and counts it for Python, as Python would.
    assert server.counters["drop_paws"] >= 1


class TowardPeer:
    """An impairment of the plane's data segments on their way to the peer: every
    ``every``-th one arrives behind the ``hold`` after it (reordering), and the one
    numbered ``lose`` is lost the first time it goes (its retransmission passes)."""

    def __init__(self, bed: Bed, every: int, hold: int, lose: int | None = None) -> None:
        self.bed, self.every, self.hold, self.lose = bed, every, hold, lose
        self.count = 0
        self.lost_seq: int | None = None
        self.held: list[list[object]] = []  # [frame, later segments still to let by]

    def __call__(self, frame: bytes, toward_plane: bool) -> bool:
        if toward_plane:
            return True
        seg = parse_frame(frame).tcp
        if not seg.payload:
            return True
        inbox = self.bed.peer_nic.inbox
        self.count += 1
        if self.count == self.lose:
            self.lost_seq = int(seg.seq)
            return False
        if self.count % self.every == 0:
            self.held.append([frame, self.hold])
            return False
        inbox.append(frame)
        for entry in list(self.held):
            entry[1] -= 1  # type: ignore[operator]
            if entry[1] == 0:
                self.held.remove(entry)
                inbox.append(entry[0])
        return False

    def flush(self) -> None:
        for frame, _ in self.held:
            self.bed.peer_nic.inbox.append(frame)
        self.held.clear()


def _download(bed: Bed, app, client, payload: bytes, impair: TowardPeer) -> bytes:  # type: ignore[no-untyped-def]
    sent, got = 0, bytearray()
    for i in range(5000):
        with contextlib.suppress(BlockingIOError):
            sent += app.send(payload[sent:sent + 65536])
        bed.step(0.0001 if i % 50 else 0.01)  # now and then a pause: held frames go
        if i % 50 == 0:
            impair.flush()
        got += client.recv()
        if len(got) == len(payload):
            break
    return bytes(got)


def _downloaded(in_c: bool, impair_args: dict[str, int]) -> tuple[Bed, TcpConnection]:
    """A 400 kB download through TowardPeer(**impair_args), the connection run by C
    (and Python when C hands it back) or by Python alone; its bytes checked."""
    bed = Bed()
    client, server = bed.connect()
    if in_c:
        _ours, app = bed.adopt(server)
    else:
        bed.readopt = False
        _ours, app = bed.attach(server)
    impair = TowardPeer(bed, **impair_args)
    bed.impair = impair
    payload = os.urandom(400_000)
    got = _download(bed, app, client, payload, impair)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    return bed, server


RECOVERY_COUNTERS = ("fast_retransmits", "retransmitted_segments", "undo_fast_recovery",
                     "rack_reordering_seen", "spurious_detected_timestamps")


def test_reordering_on_the_way_to_the_peer_stays_in_c_rfc8985_6() -> None:
    """The peer's SACK blocks and duplicate ACKs for reordered data are C's: it keeps
    the scoreboard and counts the duplicate ACKs. The first reordering looks like loss
    (RFC 6675: three ranges SACKed above the hole) and C hands the flow back on that
    ACK; Python enters recovery, finds it spurious and undoes it, exactly as Python
    alone does. The hole filled by the original transmission is reordering (RFC 8985
    §6.2 step 3): from then on RACK's time decides, and every later reordering stays
    in C."""
    alone = _downloaded(False, {"every": 7, "hold": 2})[1]
    bed, server = _downloaded(True, {"every": 7, "hold": 2})
    assert bed.reasons == ["recovery"] and server.parked
    stats = bed.plane.stats()
    bed.plane.release(server)
    assert {k: server.counters[k] for k in RECOVERY_COUNTERS} == {
        k: alone.counters[k] for k in RECOVERY_COUNTERS}
    assert server.counters["fast_retransmits"] == 1
    assert server.counters["undo_fast_recovery"] == 1
    assert server.recovery.reordering_seen
    # Every later SACK ACK was C's: none handed the flow back ("segment").
    assert stats["rx_fast"] > stats["declined"]


def test_a_loss_on_the_way_to_the_peer_hands_back_for_recovery_rfc6675_5() -> None:
    """A data segment lost on the way to the peer: C counts the SACKs above the hole,
    and on the ACK that makes it lost hands the flow back (reason "recovery"); Python
    enters fast recovery on that ACK's account and retransmits, as Python alone does;
    the bytes arrive intact and C takes the flow again once recovery is over."""
    alone = _downloaded(False, {"every": 10**9, "hold": 0, "lose": 30})[1]
    bed, server = _downloaded(True, {"every": 10**9, "hold": 0, "lose": 30})
    assert bed.reasons[0] == "recovery"
    assert server.parked  # C has it again
    bed.plane.release(server)
    assert {k: server.counters[k] for k in RECOVERY_COUNTERS} == {
        k: alone.counters[k] for k in RECOVERY_COUNTERS}
    assert server.counters["fast_retransmits"] == 1
    assert server.counters["retransmitted_segments"] >= 1


def test_a_duplicate_of_held_data_hands_the_flow_and_its_ranges_to_python() -> None:
    """A segment that overlaps what C holds is a duplicate: its D-SACK (RFC 2883) is
    Python's. C hands the flow back with the held ranges (dp_flow_release packs their
    bytes after the in-order ones), Python reports the duplicate and, with nothing
    else owed, gives the flow back to C with the ranges (dp_flow_adopt puts them at
    their offsets), where the late segment fills the hole: the bytes arrive intact."""
    bed = Bed()
    client, server = bed.connect()
    _ours, app = bed.adopt(server)
    impair = HoldFirstData()
    payload = impair.send(bed, client, 20_000)
    bed.impair = None
    bed.port.push(impair.second[0])  # again: a duplicate of held data
    bed.step()
    assert bed.reasons == ["segment"]
    assert server.counters["out_of_order_segments"] >= 3
    assert server.counters["dsack_sent"] == 1
    assert server.parked  # back in C, holding the ranges
    handle = bed.plane._handle_of[server]
    assert lib.dp_flow_ooo_len(bed.plane._dp, handle) > 0
    bed.port.push(impair.held[0])
    got = bytearray()
    for _ in range(100):
        bed.step()
        got += read_all(app)
    assert bytes(got) == payload
    assert bed.reasons == ["segment"] and bed.plane.stats()["ooo_filled"] == 1


def test_export_leaves_no_python_timer_behind() -> None:
    """Every timer a connection has when C takes it is C's from then on: RACK's
    reordering timer too (it rides in the TCB). One left in Python would fire on a
    parked connection (internal_error_parked)."""
    bed = Bed()
    _client, server = bed.connect()
    due = bed.clock() + 1.0
    server.recovery.rack_timeout = due
    server._timers.set(Timer.REORDER, due)
    tcb = ffi.new("struct dp_tcb *")
    assert server.export_hot(tcb) is not None
    assert tcb.rack_timeout == due
    assert not any(server._timers.is_set(timer) for timer in Timer)


def test_python_and_c_keep_the_same_number_of_rack_records() -> None:
    from joyride.tcp.recovery import HOT_TX_RECORDS

    assert HOT_TX_RECORDS == lib.DP_TX_RECORDS


def test_python_and_c_hold_the_same_number_of_ranges() -> None:
    from joyride.tcp.connection import HOT_OOO_RANGES

    assert HOT_OOO_RANGES == lib.DP_OOO_RANGES


def exported(server: TcpConnection, tcb: Any, ours: socket.socket) -> tuple[bytes, bytes]:
    """``server``'s hot half in ``tcb`` with the identity plane.adopt adds (for a test
    that calls dp_flow_adopt itself): the bytes of its receive and send buffers."""
    moved = server.export_hot(tcb)
    assert moved is not None
    ffi.memmove(tcb.local_ip, widen(server.local_ip), 16)
    ffi.memmove(tcb.remote_ip, widen(server.remote_ip), 16)
    tcb.ipv6 = len(server.local_ip) == 16
    tcb.local_port, tcb.remote_port = server.local_port, server.remote_port
    tcb.app_fd = ours.fileno()
    return moved


def test_adopt_refuses_ranges_that_are_out_of_order_or_do_not_fit() -> None:
    """dp_flow_adopt checks the ranges a TCB brings before it takes anything: in order
    above RCV.NXT, not touching, stamped, their bytes given, inside the ring."""
    bed = Bed()
    _client, server = bed.connect()
    ours, _app = bed.attach(server)
    tcb = plane.ffi.new("struct dp_tcb *")
    good = {"start": 100, "end": 200, "stamp": 1}
    cases = {
        "fits": ([good], 100, True),
        # The second range lies past the ring's first allocation: it grows, and the
        # first range's bytes must move with the rest.
        "two, far apart": ([good, {"start": 20_000, "end": 20_300, "stamp": 2}], 400, True),
        "touching RCV.NXT": ([dict(good, start=0)], 200, False),
        "unstamped": ([dict(good, stamp=0)], 100, False),
        "bytes missing": ([good], 99, False),
        "touching each other": ([good, {"start": 200, "end": 300, "stamp": 2}], 200, False),
        "out of order": ([good, {"start": 50, "end": 60, "stamp": 2}], 110, False),
        "past the ring": ([{"start": 1 << 24, "end": (1 << 24) + 10, "stamp": 1}], 10, False),
    }
    for name, (ranges, length, ok) in cases.items():
        rcv, snd = exported(server, tcb, ours)
        base = int(tcb.rcv_nxt)
        tcb.ooo_count, tcb.ooo_clock = len(ranges), len(ranges)
        for i, r in enumerate(ranges):
            tcb.ooo[i].start = (base + r["start"]) & 0xFFFFFFFF
            tcb.ooo[i].end = (base + r["end"]) & 0xFFFFFFFF
            tcb.ooo[i].stamp = r["stamp"]
        data = rcv + bytes(range(256)) * (length // 256) + bytes(range(length % 256))
        handle = int(lib.dp_flow_adopt(bed.plane._dp, tcb, data, len(data), snd, len(snd)))
        assert (handle > 0) == ok, name
        if handle > 0:  # C gives the range back as it took it
            assert lib.dp_flow_ooo_len(bed.plane._dp, handle) == length
            out = plane.ffi.new("struct dp_tcb *")
            buf = plane.ffi.new("uint8_t[]", len(data))
            sbuf = plane.ffi.new("uint8_t[]", max(len(snd), 1))
            assert lib.dp_flow_release(bed.plane._dp, handle, out, buf, len(data), sbuf,
                                       max(len(snd), 1)) == 0
            assert bytes(plane.ffi.buffer(buf, len(data))) == data
            assert out.ooo_count == len(ranges)
            assert [(int(out.ooo[i].start), int(out.ooo[i].end)) for i in range(len(ranges))] \
                == [(int(tcb.ooo[i].start), int(tcb.ooo[i].end)) for i in range(len(ranges))]
        tcb.ooo_count = 0
        tcb.reason = 0
        server.import_hot(tcb, rcv, snd)  # as plane.adopt does when C refuses
        assert server.hot_blocker() is None


def test_adopt_refuses_a_sender_state_that_does_not_fit() -> None:
    """dp_flow_adopt checks the sender's state a TCB brings (send-time records, SACKed
    ranges, HyStart++'s phase) before it takes anything: C's arrays bound them, and
    sack_ack assumes them ordered inside [SND.UNA, SND.NXT]."""
    bed = Bed()
    _client, server = bed.connect()
    ours, _app = bed.attach(server)
    tcb = plane.ffi.new("struct dp_tcb *")
    flight = 3000
    good = {"tx": [(1448, 1.0), (3000, 1.1)], "sacked": [(1448, 2896)], "bytes": 1448,
            "dupthresh": 3, "hs_phase": 1}
    cases: dict[str, tuple[dict[str, object], bool]] = {
        "fits": (good, True),
        "nothing": ({"tx": [], "sacked": [], "bytes": 0, "dupthresh": 3, "hs_phase": 0},
                    True),
        "HyStart++ off": (dict(good, hs_phase=2), True),
        "no such HyStart++ phase": (dict(good, hs_phase=3), False),
        "a record past SND.NXT": (dict(good, tx=[(1448, 1.0), (3001, 1.1)]), False),
        "records out of order": (dict(good, tx=[(3000, 1.0), (1448, 1.1)]), False),
        "too many records": (dict(good, tx=[(k + 1, 1.0 + k) for k in range(33)]), False),
        "a range past SND.NXT": (dict(good, sacked=[(1448, 3001)], bytes=1553), False),
        "ranges touching": (dict(good, sacked=[(100, 200), (200, 300)], bytes=200), False),
        "too many ranges": (dict(good, sacked=[(10 * k + 1, 10 * k + 5) for k in range(9)],
                                  bytes=36), False),
        "wrong byte count": (dict(good, bytes=1000), False),
        "DupThresh 0": (dict(good, dupthresh=0), False),
    }
    for name, (state, ok) in cases.items():
        rcv, snd = exported(server, tcb, ours)
        una = int(tcb.snd_una)
        tcb.snd_nxt = (una + flight) & 0xFFFFFFFF
        sent = bytes(flight)
        records = state["tx"]
        ranges = state["sacked"]
        assert isinstance(records, list) and isinstance(ranges, list)
        tcb.tx_count = len(records)
        for i, (end, at) in enumerate(records[:32]):
            tcb.tx[i].end, tcb.tx[i].at = (una + end) & 0xFFFFFFFF, at
        tcb.sacked_count = len(ranges)
        for i, (left, right) in enumerate(ranges[:8]):
            tcb.sacked[i].start = (una + left) & 0xFFFFFFFF
            tcb.sacked[i].end = (una + right) & 0xFFFFFFFF
        tcb.sacked_bytes = state["bytes"]
        tcb.dupthresh = state["dupthresh"]
        tcb.hs_phase = state["hs_phase"]
        handle = int(lib.dp_flow_adopt(bed.plane._dp, tcb, rcv, len(rcv), sent, flight))
        assert (handle > 0) == ok, name
        if handle > 0:
            out = plane.ffi.new("struct dp_tcb *")
            rbuf = plane.ffi.new("uint8_t[]", max(len(rcv), 1))
            sbuf = plane.ffi.new("uint8_t[]", flight)
            assert lib.dp_flow_release(bed.plane._dp, handle, out, rbuf, max(len(rcv), 1),
                                       sbuf, flight) == 0
        tcb.snd_nxt = una
        tcb.tx_count = tcb.sacked_count = tcb.sacked_bytes = 0
        tcb.dupthresh = 3
        tcb.hs_phase = 0
        tcb.reason = 0
        server.import_hot(tcb, rcv, snd)  # as plane.adopt does when C refuses


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_lost_reply_hands_back_on_rto_and_python_retransmits(ipv6: bool) -> None:
    bed = Bed(ipv6=ipv6)
    client, server = bed.connect()
    _ours, app = bed.adopt(server)
    dropped: list[bytes] = []

    def drop_reply(frame: bytes, toward_plane: bool) -> bool:
        if not toward_plane and not dropped and parse_frame(frame, ipv6=True).tcp.payload:
            dropped.append(frame)
            return False
        return True

    bed.impair = drop_reply
    app.sendall(b"reply that is lost once")
    bed.run(3)
    assert dropped and server.parked
    bed.step(dt=1.5)  # past the RTO (min 200 ms; the initial 1 s at most)
    assert bed.reasons == ["rto"]
    bed.run(5)
    assert client.recv() == b"reply that is lost once"
    assert server.counters["retransmitted_segments"] == 1


def test_lost_tail_hands_back_at_the_pto_and_python_probes_rfc8985_7() -> None:
    """RFC 8985 §7: C keeps the loss probe deadline (2*SRTT + TLP.max_ack_delay for one
    segment in flight) and hands the flow back when it comes due; Python resends the
    last segment as the probe, long before the RTO."""
    bed = Bed()
    client, server = bed.connect()
    _ours, app = bed.adopt(server)
    sent_at: list[float] = []

    def drop_first_reply(frame: bytes, toward_plane: bool) -> bool:
        if not toward_plane and parse_frame(frame).tcp.payload:
            sent_at.append(bed.clock())
            return len(sent_at) > 1
        return True

    bed.impair = drop_first_reply
    app.sendall(b"a tail that is lost once")
    bed.run(3)
    assert len(sent_at) == 1 and server.parked
    for _ in range(400):
        bed.step(dt=0.001)
        if bed.reasons:
            break
    assert bed.reasons == ["rto"]  # the retransmission timer's reason: the PTO's
    bed.run(5)
    assert client.recv() == b"a tail that is lost once"
    assert server.counters["tlp_probes_retransmitted"] == 1
    assert server.counters["rto_expired"] == 0
    srtt = server.rtt.srtt
    assert srtt is not None
    # Due at 2*SRTT + 200 ms after the send, or at the RTO's expiry if that is sooner
    # (§7.2; here the 200 ms minimum RTO); acted on at the first 1 ms step past it.
    assert 0.2 <= sent_at[1] - sent_at[0] < 2 * srtt + 0.2 + 0.0012


def test_application_eof_and_close_are_handed_back() -> None:
    bed = Bed()
    _client, server = bed.connect()
    _ours, app = bed.adopt(server)
    app.sendall(b"last words")
    app.shutdown(2)  # SHUT_RDWR: the service reads EOF
    bed.run(5)
    assert bed.reasons == ["app_eof"]
    assert not server.parked


def test_table_full_leaves_the_connection_in_python_untouched() -> None:
    bed = Bed(max_flows=1)
    _c1, s1 = bed.connect()
    channel = bed.adopt(s1)  # kept open: a closed one is handed back (app_gone)
    listener = bed.svc.listeners[8080]
    c2 = bed.peer.connect(s1.local_ip, 8080)
    s2 = None
    for _ in range(20):
        bed.step()
        s2 = s2 or bed.svc.accept(listener)
    assert s2 is not None
    assert not bed.plane.adopt(s2, MAC_SVC, MAC_PEER, -1)
    assert s1.parked and channel
    assert not s2.parked and s2.state is TcpState.ESTABLISHED
    c2.send(b"still served by Python")
    bed.peer.mark(c2)
    bed.run(5)
    assert s2.recv() == b"still served by Python"


def test_stale_handles_are_refused_and_counted() -> None:
    bed = Bed()
    _client, server = bed.connect()
    _channel = bed.adopt(server)
    assert bed.plane.release(server) is not None
    assert bed.plane.release(server) is None  # Python forgot it
    from joyride.dataplane.plane import ffi

    tcb = ffi.new("struct dp_tcb *")
    buf = ffi.new("uint8_t[]", 16)
    for bogus in (0, -1, 1, (7 << 32) | 3, (1 << 40)):
        assert lib.dp_flow_release(bed.plane._dp, bogus, tcb, buf, 16, buf, 16) < 0
    assert bed.plane.stats()["bad_handle"] == 5


def test_hostile_frames_never_crash_and_are_declined() -> None:
    bed = Bed()
    client, server = bed.connect()
    _ours, app = bed.adopt(server)
    client.send(b"x")
    bed.peer.mark(client)
    bed.run(2)
    rng = __import__("random").Random(7)
    good = []
    bed.impair = lambda f, toward: (good.append(f) or True) if toward else True
    client.send(b"y" * 3000)
    bed.peer.mark(client)
    bed.run(2)
    bed.impair = None
    for _ in range(3000):
        frame = bytearray(rng.choice(good)) if good and rng.random() < 0.7 \
            else bytearray(os.urandom(rng.randrange(0, 200)))
        for _ in range(rng.randrange(1, 6)):
            if frame:
                frame[rng.randrange(len(frame))] = rng.randrange(256)
        bed.port.push(bytes(frame[: rng.randrange(len(frame) + 1)]))
        if rng.random() < 0.1:
            bed.step()
    bed.run(20)
    assert bed.plane.stats()["rx_frames"] > 3000
    assert read_all(app).startswith(b"x")


def test_parked_connection_refuses_python_work() -> None:
    bed = Bed()
    _client, server = bed.connect()
    _channel = bed.adopt(server)
    assert server.segments_to_send(bed.clock.now) == []
    assert server.counters["internal_error_parked"] == 1
    assert not server.hot_ready()


def test_config_that_c_does_not_run_stays_in_python() -> None:
    bed = Bed(config=TcpConfig(nodelay=True, congestion_control="newreno"))
    _client, server = bed.connect()
    server.congestion.in_recovery = True  # as if a loss were being repaired
    assert not bed.plane.adopt(server, MAC_SVC, MAC_PEER, -1)
    assert not server.parked


def test_keepalive_runs_in_c_and_its_probe_in_python() -> None:
    """Redis and many daemons set SO_KEEPALIVE: C re-arms the idle timer on every
    segment and hands the flow back when it expires, for Python's probe."""
    config = TcpConfig(nodelay=True, keepalive=True, keepalive_idle=5.0,
                       keepalive_interval=1.0)
    bed = Bed(config=config)
    client, server = bed.connect()
    _ours, app = bed.adopt(server)
    bed.readopt = False
    for i in range(3):
        bed.step(dt=3.0)  # idle for less than keepalive_idle each time...
        client.send(b"ping %d" % i)
        bed.peer.mark(client)
        bed.run(3)
        assert server.parked  # ... and each segment re-arms it in C
    assert read_all(app) == b"ping 0ping 1ping 2"
    bed.step(dt=6.0)
    assert bed.reasons == ["keepalive"]
    bed.run(3)
    assert server.counters["keepalive_probes"] == 1
    assert server.state is TcpState.ESTABLISHED  # the peer answered the probe


def test_rst_in_the_middle_of_a_batch_stops_c_there() -> None:
    """Segments before the RST are C's, the RST and everything after it Python's, in
    order: the bytes before it reach the application, the connection is reset."""
    bed = Bed()
    client, server = bed.connect()
    _ours, app = bed.adopt(server)
    bed.readopt = False
    frames: list[bytes] = []
    bed.impair = lambda f, toward: (frames.append(f) or False) if toward else True
    client.send(b"a" * 1000)
    bed.peer.mark(client)
    bed.run(1)
    client.send(b"b" * 1000)
    bed.peer.mark(client)
    bed.run(1)
    client.abort()  # RST at SND.NXT
    bed.peer.mark(client)
    bed.run(1)
    bed.impair = None
    assert len(frames) == 3
    late = bytearray(frames[1])  # a copy of a data segment after the RST: stale
    for f in (frames[0], frames[1], frames[2], bytes(late)):
        bed.port.push(f)
    bed.run(3)
    assert bed.reasons == ["segment"]
    assert server.state.name == "CLOSED" and server.error == "reset"
    assert read_all(app) == b"a" * 1000 + b"b" * 1000
    st = bed.plane.stats()
    assert st["rx_fast"] >= 2 and st["declined_segment"] == 1


def deliver_then_close_from_fin_wait_2(bed: Bed, client: TcpConnection,
                                       server: TcpConnection, held: list[bytes],
                                       data: bytes) -> None:
    """The frames held from the peer reach it: it gets ``data`` and the FIN C sent,
    C gives ``server`` back once the FIN is acknowledged (FIN-WAIT-2, Python's), and
    the peer's own FIN takes it to TIME-WAIT."""
    bed.impair = None
    for frame in held:
        bed.peer_nic.inbox.append(frame)
    got = bytearray()
    for _ in range(30):
        bed.step(0.001)
        got += client.recv()
    assert bytes(got) == data and client.eof
    assert bed.reasons == ["app_eof"]
    assert not server.parked and server.state is TcpState.FIN_WAIT_2
    assert server.send_queue == 0 and server.bytes_in_flight == 0
    assert bed.plane.stats()["flows"] == 0
    client.close()  # the peer's FIN: TIME-WAIT, Python's
    bed.peer.mark(client)
    bed.run(5)
    assert server.state is TcpState.TIME_WAIT


def test_application_closing_with_bytes_in_flight_stays_in_c_until_its_fin_is_acked() -> None:
    """A connection Python gave C: its application closes with bytes still to send.
    C sends them and the FIN after them itself (FIN-WAIT-1, RFC 9293 §3.10.4), and
    hands the connection back once the FIN is acknowledged: FIN-WAIT-2 is Python's."""
    bed = Bed()
    client, server = bed.connect()
    _ours, app = bed.adopt(server)
    bed.readopt = False
    held: list[bytes] = []
    bed.impair = lambda f, toward: (held.append(f) or False) if not toward else True
    data = os.urandom(20_000)
    app.sendall(data)  # the initial window goes, the peer does not see it yet
    bed.run(2)
    app.close()  # nothing unread on its side: the service reads EOF
    bed.run(2)
    assert bed.reasons == [] and server.parked
    tcb = bed.plane.peek(server)
    assert int(tcb.tcp_state) == 2 and tcb.fin_queued and not tcb.fin_sent  # FIN-WAIT-1
    deliver_then_close_from_fin_wait_2(bed, client, server, held, data)


@pytest.mark.parametrize("fin_out", [False, True])
def test_a_connection_in_fin_wait_1_goes_to_c_and_comes_back_in_fin_wait_2(
        fin_out: bool) -> None:
    """Python runs the connection when its application shuts down writing (FIN-WAIT-1,
    the FIN queued behind unsent bytes, or already out and unacknowledged); C takes
    it, sends what is left and the FIN, and gives it back once the FIN is
    acknowledged."""
    bed = Bed()
    client, server = bed.connect()
    ours, app = bed.attach(server)
    bed.readopt = False
    held: list[bytes] = []
    bed.impair = lambda f, toward: (held.append(f) or False) if not toward else True
    data = os.urandom(300 if fin_out else 30_000)
    app.sendall(data)
    app.shutdown(socket.SHUT_WR)
    bed.run(3)
    assert server.state is TcpState.FIN_WAIT_1 and server.hot_ready()
    assert bed.plane.adopt(server, MAC_SVC, MAC_PEER, ours.fileno())
    tcb = bed.plane.peek(server)
    assert int(tcb.tcp_state) == 2 and tcb.fin_queued and tcb.app_eof
    assert bool(tcb.fin_sent) is fin_out
    deliver_then_close_from_fin_wait_2(bed, client, server, held, data)


def test_adopt_refuses_a_close_c_does_not_run() -> None:
    """dp_flow_adopt takes ESTABLISHED, or FIN-WAIT-1 after the application's EOF; not
    a FIN-WAIT-1 without it, nor a state with the peer's FIN, nor a queued FIN in
    ESTABLISHED."""
    bed = Bed()
    _client, server = bed.connect()
    ours, _app = bed.attach(server)
    tcb = plane.ffi.new("struct dp_tcb *")
    cases = {
        "established": (0, 0, 0, 0, True),
        "FIN-WAIT-1 after the application's EOF": (2, 1, 1, 0, True),
        "FIN-WAIT-1 without the EOF": (2, 1, 0, 0, False),
        "a FIN queued in ESTABLISHED": (0, 1, 1, 0, False),
        "the peer's FIN": (2, 1, 1, 1, False),
        "CLOSE-WAIT": (4, 0, 0, 1, False),
    }
    for name, (state, fin_queued, app_eof, peer_fin, ok) in cases.items():
        rcv, snd = exported(server, tcb, ours)
        tcb.tcp_state, tcb.fin_queued, tcb.app_eof = state, fin_queued, app_eof
        tcb.peer_fin = peer_fin
        handle = int(lib.dp_flow_adopt(bed.plane._dp, tcb, rcv, len(rcv), snd, len(snd)))
        assert (handle > 0) == ok, name
        if handle > 0:
            out = plane.ffi.new("struct dp_tcb *")
            rbuf = plane.ffi.new("uint8_t[]", max(len(rcv), 1))
            sbuf = plane.ffi.new("uint8_t[]", max(len(snd), 1))
            assert lib.dp_flow_release(bed.plane._dp, handle, out, rbuf, max(len(rcv), 1),
                                       sbuf, max(len(snd), 1)) == 0
        tcb.tcp_state = tcb.fin_queued = tcb.app_eof = tcb.peer_fin = 0
        tcb.reason = 0
        server.import_hot(tcb, rcv, snd)


def test_a_descriptor_epoll_refuses_leaves_the_connection_in_python() -> None:
    bed = Bed()
    client, server = bed.connect()
    import socket as socket_module

    a, b = socket_module.socketpair()
    bad = a.fileno()
    a.close()  # a closed descriptor: epoll_ctl answers EBADF
    assert not bed.plane.adopt(server, MAC_SVC, MAC_PEER, bad)
    assert not server.parked and bed.plane.flows == 0
    assert bed.plane.stats()["flows_adopted"] == 0
    client.send(b"still Python's")
    bed.peer.mark(client)
    bed.run(5)
    assert server.recv() == b"still Python's"
    b.close()


def test_delayed_acks_of_many_flows_fire_on_time_from_the_wheel() -> None:
    """Each flow's delayed ACK (40 ms) leaves at its own deadline, not before, not a
    wheel turn later: the timing wheel's buckets, and deadlines inside a millisecond."""
    bed = Bed()
    listener = bed.svc.listen(8080)
    pairs = []
    for _ in range(20):
        client = bed.peer.connect(IP_SVC, 8080)
        server = None
        for _ in range(20):
            bed.step()
            server = server or bed.svc.accept(listener)
            if server is not None and client.state is TcpState.ESTABLISHED:
                break
        assert server is not None
        pairs.append((client, server, bed.adopt(server)))
    bed.readopt = False
    for client, _server, _channel in pairs:  # a first byte: its ACK opens the window
        client.send(b"w")
        bed.peer.mark(client)
    bed.run(100, dt=0.001)
    sent_at: list[float] = []
    acked_at: dict[int, float] = {}

    def note_acks() -> None:
        for k, (client, _server, _channel) in enumerate(pairs):
            if k < len(sent_at) and k not in acked_at and client.snd_una == client.snd_nxt:
                acked_at[k] = bed.clock.now

    for client, _server, _channel in pairs:
        client.send(b"x")
        bed.peer.mark(client)
        sent_at.append(bed.clock.now)
        for _ in range(7):  # spread over several buckets and within them
            bed.step(dt=0.0001)
            note_acks()
    for _ in range(1200):
        bed.step(dt=0.0001)
        note_acks()
    assert len(acked_at) == len(pairs) and bed.reasons == []
    for k, t in acked_at.items():
        waited = t - sent_at[k]
        assert 0.040 <= waited < 0.0415, (k, waited)


def test_a_signal_returns_the_loop_to_python() -> None:
    """The service stops on SIGTERM through a Python handler, which runs only once the
    C loop returns: a signal ends dp_run's wait at once, not at its timeout."""
    import signal
    import threading
    import time

    from joyride.dataplane.plane import DataPlane

    plane = DataPlane(mtu=1500, max_flows=4)
    plane.add_memory_port()
    seen: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, _frame: seen.append(signum))
    try:
        timer = threading.Timer(0.1, lambda: os.kill(os.getpid(), signal.SIGUSR1))
        timer.start()
        started = time.monotonic()
        plane.run(30.0)
        assert time.monotonic() - started < 10.0  # the wait was 30 s
        timer.join()
        assert seen == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)


def _bulk_upload(bed: Bed, client, server, app, payload: bytes) -> bytes:  # type: ignore[no-untyped-def]
    """The peer sends ``payload``; the application reads all it can every step (from
    its channel when C owns ``server``, else from the connection itself)."""
    sent, got = 0, bytearray()
    for _ in range(20000):
        if sent < len(payload):
            sent += client.send(payload[sent:sent + 262144])
            bed.peer.mark(client)
        bed.step()
        got += read_all(app) if app is not None else server.recv()
        if app is None:
            bed.svc.mark(server)
        if len(got) == len(payload):
            break
    return bytes(got)


def test_receive_buffer_autotunes_in_c_as_in_python() -> None:
    """ReceiveBuffer.note_read runs in C while C owns the flow (rcv_note_read): a reader
    that keeps up grows the buffer, and so the window, as Python grows it for the same
    transfer at the same times; the grown buffer goes back to Python at hand-back."""
    payload = os.urandom(6_000_000)
    python_bed = Bed()
    client, server = python_bed.connect()
    initial = server.recv_buffer
    got = _bulk_upload(python_bed, client, server, None, payload)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    grown_in_python = server.recv_buffer
    assert grown_in_python > initial  # the transfer is long enough to autotune

    c_bed = Bed()
    client, server = c_bed.connect()
    _ours, app = c_bed.adopt(server)
    got = _bulk_upload(c_bed, client, server, app, payload)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    view = c_bed.plane.view(server)
    assert view is not None and server.parked and c_bed.reasons == []
    assert view["recv_buffer"] == grown_in_python
    c_bed.plane.release(server)
    assert server.recv_buffer == grown_in_python


@pytest.mark.parametrize("ack_past_deadline", [False, True])
def test_an_open_undo_episode_rides_a_c_stint(ack_past_deadline: bool) -> None:
    """A recovery episode that may still be undone (RFC 3708) does not keep the flow in
    Python; C notes whether it took an ACK after the episode's deadline, and the
    episode ends at hand-back exactly when it did, as that ACK would have ended it in
    RecoveryState.on_ack."""
    bed = Bed()
    client, server = bed.connect()
    recovery = server._recovery
    recovery._begin_episode(EPISODE_FAST, server.snd_una)  # as a fast retransmit would
    recovery._undo_deadline = bed.clock() + 0.05  # ... after its retransmission
    assert server.hot_ready()
    _ours, app = bed.adopt(server)
    assert server.parked
    assert exchange(bed, client, app, b"before", b"reply before") == b"reply before"
    if ack_past_deadline:
        bed.step(dt=0.06)
        assert exchange(bed, client, app, b"after", b"reply after") == b"reply after"
    client.shutdown_write()  # the peer's FIN hands the flow back
    bed.peer.mark(client)
    bed.run(5)
    assert not server.parked and bed.reasons == ["segment"]
    assert recovery.undo_pending is (not ack_past_deadline)


def test_more_declined_frames_than_a_batch_reach_python_a_batch_at_a_time() -> None:
    """C's decline buffer holds several batches (one round may decline up to four);
    the engine takes them a batch at a time, in order, and answers every one. (Taking
    them all at once overflowed the engine's parser: the whole batch, ACKs included,
    was lost and the connections waited for their RTO.)"""
    from joyride.dataplane.membed import IP_PEER
    from joyride.wire.ethernet import EthernetHeader
    from joyride.wire.frame import build_frame
    from joyride.wire.ipv4 import Ipv4Header
    from joyride.wire.seq import Seq
    from joyride.wire.tcp import TcpFlags, TcpSegment

    bed = Bed(rx_batches=8)
    count = 300  # more than the decline buffer: the rest waits in the rx ring
    for i in range(count):
        syn = TcpSegment(src_port=20000 + i, dst_port=9, seq=Seq(i), ack=Seq(0),
                         flags=TcpFlags(TcpFlags.SYN), window=65535)
        bed.port.push(build_frame(EthernetHeader(MAC_SVC, MAC_PEER),
                                  Ipv4Header(IP_PEER, IP_SVC), syn))
    bed.plane.round(bed.clock.now)
    assert bed.plane.declined_count() > 64  # several batches declined in one round
    bed.impair = lambda f, toward: toward or not resets.append(parse_frame(f))
    resets: list = []  # type: ignore[type-arg]
    bed.run(20)
    answered = sorted(f.tcp.dst_port for f in resets if f.tcp.flags & TcpFlags.RST)
    assert answered == list(range(20000, 20000 + count))  # RFC 9293 §3.10.7.1
    assert not any(k.startswith("internal_error") for k in bed.svc.counters)


def test_spin_from_env_overrides_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's 0 and embedded mode's spin are defaults; the variable wins, and 0
    turns the spin off; a bad value is a clear error."""
    monkeypatch.delenv(plane.SPIN_ENV, raising=False)
    assert plane.spin_from_env() == 0.0
    assert plane.spin_from_env(0.0002) == 0.0002
    monkeypatch.setenv(plane.SPIN_ENV, "0")
    assert plane.spin_from_env(0.0002) == 0.0
    monkeypatch.setenv(plane.SPIN_ENV, "50")
    assert plane.spin_from_env() == pytest.approx(50e-6)
    monkeypatch.setenv(plane.SPIN_ENV, "fast")
    with pytest.raises(ValueError, match="microseconds"):
        plane.spin_from_env()
