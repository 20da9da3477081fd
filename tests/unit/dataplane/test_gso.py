"""GSO transmit in the C data plane (dataplane.h, ``dp_set_gso``) over the in-memory wire:
runs of data segments leave as super-segments, the peer receives what the per-frame
path would have sent, and no segment overtakes one still waiting in the NIC."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import socket

import pytest

from joyride.dataplane.membed import Bed
from joyride.dataplane.plane import lib
from joyride.wire.frame import parse_frame
from joyride.wire.tcp import TcpSegment

pytestmark = pytest.mark.skipif(lib is None, reason="the C data plane is not built")


def download(bed: Bed, payload: bytes, steps: int = 20000,
             dt: float = 0.0001) -> tuple[bytes, list[TcpSegment]]:
    """The application sends ``payload`` to the peer; returns what the peer's TCP
    received and every segment the wire carried towards it, in order."""
    seen: list[TcpSegment] = []

    def record(frame: bytes, to_svc: bool) -> bool:
        if not to_svc:
            seen.append(parse_frame(frame).tcp)
        return True

    client, server = bed.connect(dt)
    _ours, app = bed.adopt(server)
    bed.impair = record
    sent, got = 0, bytearray()
    for _ in range(steps):
        if sent < len(payload):
            with contextlib.suppress(BlockingIOError):
                sent += app.send(payload[sent:sent + 65536])
        bed.step(dt)
        got += client.recv()
        if len(got) == len(payload):
            break
    return bytes(got), seen


def in_sequence(segs: list[TcpSegment]) -> bool:
    """Each data segment starts where the one before it ended: no hole, no overtaking."""
    data = [s for s in segs if s.payload]
    return all(int(b.seq) - int(a.seq) == len(a.payload) for a, b in itertools.pairwise(data))


def test_a_download_leaves_in_super_segments() -> None:
    bed = Bed(gso=True)
    payload = os.urandom(2_000_000)
    got, _ = download(bed, payload)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    st = bed.plane.stats()
    assert st["gso_sends"] > 0 and st["gso_segs"] >= 2 * st["gso_sends"]
    assert st["gso_segs"] * 1448 >= len(payload) // 2, st
    assert st["gso_fallbacks"] == 0 and st["tx_dropped"] == 0
    # Once on GSO, all of the flow's data went that way, its short last segments too.
    assert st["tx_data_segs"] == st["gso_segs"], st


def test_super_segments_are_sized_to_the_path_as_linux_sizes_tso() -> None:
    """TSO autosizing (tcp_tso_autosize): on a path of tens of milliseconds a super-
    segment carries about a millisecond at the pacing rate, a few segments, not 64 KiB
    at once; on a path of microseconds it carries all the window allows."""
    payload = os.urandom(400_000)
    short, long_ = Bed(gso=True), Bed(gso=True)
    assert download(short, payload)[0] == payload
    assert download(long_, payload, steps=400, dt=0.02)[0] == payload  # RTT ~20 ms
    # The first flight (IW10, slow start): one super-segment of ten on a short path;
    # on the long one ~2 x 14.5 KB / 20 ms = 1.4 MB/s, 1.4 KB a millisecond: the
    # minimum of two segments each.
    assert short.gso_runs[0] >= 9, short.gso_runs[:5]
    assert long_.gso_runs[:4] == [2, 2, 2, 2], long_.gso_runs[:8]
    assert max(short.gso_runs) > max(long_.gso_runs), (short.gso_runs, long_.gso_runs)


def test_the_peer_sees_the_same_segments_with_and_without_gso() -> None:
    """Differential: GSO changes how segments reach the device, not which segments
    TCP sends. The same download, at the same times, gives the peer the same sequence
    of segments (every header field and payload; only IPv4 IDs may differ)."""
    payload = os.urandom(600_000)
    plain_got, plain = download(Bed(gso=False), payload)
    bed = Bed(gso=True)
    gso_got, with_gso = download(bed, payload)
    assert plain_got == gso_got == payload
    assert bed.plane.stats()["gso_sends"] > 0
    assert relative(with_gso) == relative(plain)


def relative(segs: list[TcpSegment]) -> list[tuple[object, ...]]:
    """Each segment with its numbers relative to the first's: the two runs draw their
    own ISNs, ports and timestamp offsets."""
    first = segs[0]
    ts0 = first.options.timestamps or (0, 0)
    out: list[tuple[object, ...]] = []
    for s in segs:
        ts = s.options.timestamps
        out.append((int(s.seq) - int(first.seq), int(s.ack) - int(first.ack), s.flags,
                    s.window, s.payload, None if ts is None else
                    ((ts[0] - ts0[0]) & 0xFFFFFFFF, (ts[1] - ts0[1]) & 0xFFFFFFFF),
                    s.options.sack_blocks))
    return out


@pytest.mark.parametrize("wire_frames", [1, 3])
def test_nothing_overtakes_a_frame_still_in_the_nic(wire_frames: int) -> None:
    """A wire that carries 1 or 3 of the port's frames a step keeps a flow's frames
    queued on the port across rounds (its consumer behind its producer); the flow's
    later data must not leave by GSO before them. The peer receives every data segment
    in sequence order, so it never sees a hole, and nothing is retransmitted."""
    bed = Bed(gso=True, wire_frames=wire_frames)
    payload = os.urandom(1_000_000)
    got, seen = download(bed, payload, steps=60000)
    assert got == payload
    assert in_sequence(seen), "a segment arrived out of order"
    st = bed.plane.stats()
    assert st["gso_sends"] > 0 and st["tx_frames"] > st["gso_segs"]


@pytest.mark.parametrize("queued", [1, 6])
def test_data_waits_behind_its_frames_on_the_tx_ring(queued: int) -> None:
    """The wire stalls (it carries nothing) while the application writes a little at a
    time: each write leaves as one frame, and they queue on the port. Then a large
    write: its segments must not leave by GSO ahead of the queued frames. Once the wire
    moves again the peer sees every data segment in sequence, and GSO is used again once
    the queue is drained."""
    bed = Bed(gso=True)
    seen: list[TcpSegment] = []

    def record(frame: bytes, to_svc: bool) -> bool:
        if not to_svc:
            seen.append(parse_frame(frame).tcp)
        return True

    client, server = bed.connect()
    _ours, app = bed.adopt(server)
    bed.impair = record
    payload = os.urandom(200_000)
    bed.wire_frames = 0  # stalled
    for i in range(queued):
        app.send(payload[i * 700:(i + 1) * 700])
        bed.step()
    assert seen == [] and bed.plane.stats()["gso_sends"] == 0
    sent = queued * 700
    sent += app.send(payload[sent:sent + 30_000])
    bed.step()  # the window allows several segments: GSO, were the queue not in the way
    bed.wire_frames = None
    got = bytearray()
    for _ in range(2000):
        if sent < len(payload):
            with contextlib.suppress(BlockingIOError):
                sent += app.send(payload[sent:sent + 65536])
        bed.step()
        got += client.recv()
        if len(got) == len(payload):
            break
    assert bytes(got) == payload
    assert in_sequence(seen), "a segment overtook a queued one"
    assert bed.plane.stats()["gso_sends"] > 0
    assert server.counters.get("retransmitted_segments", 0) == 0


def test_a_refusing_socket_falls_back_to_frames_and_loses_nothing() -> None:
    """The GSO socket full (a send buffer that takes nothing): every run goes out as
    frames instead, counted, and the download completes intact."""
    bed = Bed(gso=True)
    assert bed.gso_in is not None
    # Fill the datagram pair until the sender's buffer refuses more.
    out = bed.plane._keep[-1]
    out.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            out.send(b"\x00" * 60000)
    stuffed = bed.gso_in
    bed.gso_in = None  # the bed no longer drains it: it stays full
    payload = os.urandom(400_000)
    got, _ = download(bed, payload)
    assert got == payload
    st = bed.plane.stats()
    assert st["gso_sends"] == 0 and st["gso_fallbacks"] > 0
    stuffed.close()


def frames_of_data(stats: dict[str, int]) -> int:
    """Data segments that went by AF_XDP (not in a GSO frame)."""
    return stats["tx_data_segs"] - stats["gso_segs"]


def test_a_flow_on_gso_waits_for_a_full_socket_and_never_switches_path() -> None:
    """A flow that has sent by GSO keeps its data on that path: its earlier super-
    segments may still wait in a qdisc, which AF_XDP frames would overtake. When the
    socket refuses, the flow waits (tx_wait) and sends again by GSO once it takes more."""
    bed = Bed(gso=True)
    client, server = bed.connect()
    _ours, app = bed.adopt(server)
    payload = os.urandom(1_500_000)
    sent, got = 0, bytearray()

    def step() -> None:
        nonlocal sent
        if sent < len(payload):
            with contextlib.suppress(BlockingIOError):
                sent += app.send(payload[sent:sent + 65536])
        bed.step()
        got.extend(client.recv())

    while bed.plane.stats()["gso_sends"] < 3:
        step()
    out = bed.plane._keep[-1]  # the plane's end of the datagram pair
    assert bed.gso_in is not None
    junk = 0
    with contextlib.suppress(BlockingIOError):
        while True:  # fill the pair: the plane's next sends are refused
            out.send(b"\x00" * 60000, socket.MSG_DONTWAIT)
            junk += 1
    reader, bed.gso_in = bed.gso_in, None  # the bed no longer drains it
    before = bed.plane.stats()
    for _ in range(20):
        step()
    during = bed.plane.stats()
    assert during["gso_fallbacks"] > before["gso_fallbacks"]
    assert during["tx_waits"] > before["tx_waits"]
    assert frames_of_data(during) == frames_of_data(before)  # no data left by AF_XDP
    for _ in range(junk):  # the filler goes, unread by the peer
        reader.recv(65536)
    bed.gso_in = reader
    for _ in range(5000):
        step()
        if len(got) == len(payload):
            break
    assert bytes(got) == payload
    after = bed.plane.stats()
    assert frames_of_data(after) == frames_of_data(before)
    assert after["gso_sends"] > during["gso_sends"]
