"""Whatever arrives on the wire, the engine counts it and keeps serving."""

from __future__ import annotations

import hashlib
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from joyride.engine import Engine, MemoryNic, StaticNetwork
from joyride.wire.ethernet import EthernetHeader
from joyride.wire.frame import build_frame
from joyride.wire.ipv4 import Ipv4Header
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpFlags, TcpOptions, TcpSegment

IP_A, IP_B = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


class Clock:
    now = 50.0

    def __call__(self) -> float:
        return self.now


def engine_pair() -> tuple[Engine, Engine, Clock]:
    clock = Clock()
    nic_a, nic_b = MemoryNic.pair()
    a = Engine(nic_a, StaticNetwork("a", MAC_A, frozenset({IP_A}), {IP_B: MAC_B}), clock=clock)
    b = Engine(nic_b, StaticNetwork("b", MAC_B, frozenset({IP_B}), {IP_A: MAC_A}), clock=clock)
    return a, b, clock


segments = st.builds(
    TcpSegment,
    src_port=st.integers(1, 65535),
    dst_port=st.sampled_from([8080, 8081, 1]),
    seq=st.builds(Seq, st.integers(0, 2**32 - 1)),
    ack=st.builds(Seq, st.integers(0, 2**32 - 1)),
    flags=st.builds(TcpFlags, st.integers(0, 255)),
    window=st.integers(0, 65535),
    payload=st.binary(max_size=64),
    options=st.builds(
        TcpOptions,
        mss=st.none() | st.integers(0, 65535),
        wscale=st.none() | st.integers(0, 255),
        sack_permitted=st.booleans(),
        timestamps=st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    ),
)


def frame_for(seg: TcpSegment) -> bytes:
    return build_frame(EthernetHeader(MAC_A, MAC_B), Ipv4Header(IP_B, IP_A), seg)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(segments | st.binary(max_size=200), min_size=1, max_size=40),
       st.lists(st.integers(0, 1999), max_size=5))
def test_hostile_frames_are_counted_and_the_engine_keeps_serving(
    items: list[TcpSegment | bytes], flips: list[int]
) -> None:
    server, client, clock = engine_pair()
    listener = server.listen(8080)
    frames = [frame_for(x) if isinstance(x, TcpSegment) else x for x in items]
    for k, pos in enumerate(flips):  # damage some valid frames too
        f = bytearray(frames[k % len(frames)])
        if f:
            f[pos % len(f)] ^= 0x5A
            frames[k % len(frames)] = bytes(f)
    server.nic.inbox.extend(frames)  # type: ignore[attr-defined]
    for _ in range(5):
        server.poll()
        clock.now += 0.01
    assert not [k for k in server.counters if k.startswith("internal_error")]
    # And a legitimate client still gets through, data intact.
    conn = client.connect(IP_A, 8080)
    original = payload = os.urandom(20_000)
    got = bytearray()
    accepted = None
    for _ in range(400):
        server.poll()
        client.poll()
        clock.now += 0.005
        if accepted is None:
            accepted = server.accept(listener)
        if conn.writable and payload:
            payload = payload[conn.send(payload):]
            client.mark(conn)
            client.flush()
        if accepted is not None:
            got += accepted.recv()
            server.mark(accepted)
        if len(got) == 20_000:
            break
    assert got == original
    assert not [k for k in server.counters if k.startswith("internal_error")]


def test_data_through_engines_matches_by_hash() -> None:
    server, client, clock = engine_pair()
    listener = server.listen(8081)
    conn = client.connect(IP_A, 8081)
    data = os.urandom(1 << 20)
    sent, got, peer = 0, bytearray(), None
    for _ in range(5000):
        if sent < len(data) and conn.writable:
            sent += conn.send(data[sent:])
            client.mark(conn)
            client.flush()
        server.poll()
        client.poll()
        clock.now += 0.001
        peer = peer or server.accept(listener)
        if peer is not None:
            got += peer.recv()
            server.mark(peer)
        if len(got) == len(data):
            break
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
