"""The engine frames an established connection's segments with its fast path's C
builder: the same bytes as the Python frame builder, in order, and a small
request/response exchange never takes the per-segment Python emit."""

from __future__ import annotations

from typing import Any

import pytest

from joyride.engine import Engine, MemoryNic, StaticNetwork
from joyride.engine.engine import FAST_PATH_AFTER
from joyride.tcp import fastpath
from joyride.tcp.config import TcpConfig
from joyride.tcp.connection import TcpConnection
from joyride.wire.ethernet import EthernetHeader
from joyride.wire.frame import build_frame_into, frame_len, parse_frame
from joyride.wire.ipv4 import Ipv4Header
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpFlags, TcpOptions, TcpSegment

pytestmark = pytest.mark.skipif(not fastpath.available(), reason=fastpath.BUILD_HINT)

IP_A, IP_B = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
ACK, PSH = TcpFlags.ACK, TcpFlags.PSH


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class BulkNic(MemoryNic):
    """A MemoryNic that also takes frames built elsewhere, as XskNic does."""

    def __init__(self, mtu: int = 1500) -> None:
        super().__init__(mtu)
        self.bulk_frames = 0

    def transmit_from(self, base: Any, offsets: Any, lengths: Any, n: int) -> int:
        from joyride.wire._native import ffi

        buf = ffi.buffer(base, int(offsets[n - 1]) + int(lengths[n - 1]))
        frames = [bytes(buf[int(offsets[i]) : int(offsets[i]) + int(lengths[i])])
                  for i in range(n)]
        self.bulk_frames += n
        return self.transmit(frames)


def _pair(clock: Clock, cfg: TcpConfig | None = None, nic_a: BulkNic | None = None
          ) -> tuple[Engine, Engine, BulkNic]:
    """A server engine (on ``nic_a``) and a client engine wired to each other."""
    nic_a, nic_b = nic_a or BulkNic(), BulkNic()
    nic_a.peer, nic_b.peer = nic_b, nic_a
    net_a = StaticNetwork("a0", MAC_A, frozenset({IP_A}), {IP_B: MAC_B})
    net_b = StaticNetwork("b0", MAC_B, frozenset({IP_B}), {IP_A: MAC_A})
    return (Engine(nic_a, net_a, cfg, clock=clock), Engine(nic_b, net_b, cfg, clock=clock),
            nic_a)


def _run(engines: list[Engine], clock: Clock, rounds: int) -> None:
    for _ in range(rounds):
        for e in engines:
            e.poll()
        clock.now += 0.001


def _established(clock: Clock, cfg: TcpConfig | None = None, nic_a: BulkNic | None = None
                 ) -> tuple[Engine, Engine, TcpConnection, TcpConnection, BulkNic]:
    server, client, nic_a = _pair(clock, cfg, nic_a)
    # These tests are about the C framing: every connection takes its fast path at once
    # (test_short_connections_never_build_a_fast_path covers the default).
    server.fast_path_after = client.fast_path_after = 0
    listener = server.listen(8080)
    conn_c = client.connect(IP_A, 8080)
    _run([server, client], clock, 5)
    conn_s = server.accept(listener)
    assert conn_s is not None
    return server, client, conn_s, conn_c, nic_a


def test_request_response_frames_are_built_in_c_and_arrive_in_order() -> None:
    clock = Clock()
    server, client, conn_s, conn_c, nic_a = _established(clock)
    bulk0, frames0 = nic_a.bulk_frames, server.counters["tx_frames"]
    for i in range(20):
        request = bytes([i]) * 64
        assert conn_c.send(request) == 64
        client.mark(conn_c)
        client.flush()
        server.poll()
        assert conn_s.recv() == request
        conn_s.send(request[::-1] + b"!")
        server.mark(conn_s)
        server.flush()
        client.poll()
        assert conn_c.recv() == request[::-1] + b"!"
        clock.now += 0.001
    _run([server, client], clock, 60)  # delayed ACKs
    # Every frame the server sent once established was built in C: the small replies
    # by the fast path's send_batch, the (delayed) ACKs by _build_segments.
    sent = server.counters["tx_frames"] - frames0
    assert sent >= 20
    assert nic_a.bulk_frames - bulk0 == sent
    assert conn_s.counters["internal_error"] == conn_c.counters["internal_error"] == 0
    assert not any(k.startswith("internal_error") for k in server.counters)


def _python_frame(engine: Engine, conn: TcpConnection, seg: TcpSegment, ident: int) -> bytes:
    eth = EthernetHeader(MAC_B, MAC_A)
    ip = Ipv4Header(conn.local_ip, conn.remote_ip, ident=ident)
    buf = bytearray(frame_len(eth, ip, seg))
    build_frame_into(buf, 0, eth, ip, seg)
    return bytes(buf)


@pytest.mark.parametrize(
    ("ts", "blocks"),
    [(None, 0), ((7, 9), 0), ((7, 9), 1), ((7, 9), 3), (None, 4), (None, 2)],
)
def test_c_built_frames_equal_the_python_frame_builder(
    ts: tuple[int, int] | None, blocks: int
) -> None:
    clock = Clock()
    server, _, conn_s, _, nic_a = _established(clock)
    fp = server._fast_path(conn_s, clock.now)
    assert fp is not None
    sack = tuple((Seq(1000 * k + 10), Seq(1000 * k + 500)) for k in range(blocks))
    opts = TcpOptions(timestamps=ts, sack_blocks=sack)
    segs = [
        TcpSegment(8080, conn_s.remote_port, Seq(5 + i), Seq(77), ACK | (PSH if i else 0),
                   1000 + i, bytes([i]) * (i * 300), opts)
        for i in range(4)
    ]
    nic_a.peer = None  # capture instead of delivering
    sent: list[bytes] = []

    def capture(frames: Any) -> int:
        sent.extend(bytes(f) for f in frames)
        return len(frames)

    nic_a.transmit = capture  # type: ignore[method-assign]
    first_id = (server._ip_id + 1) & 0xFFFF
    assert server._build_segments(fp, segs) == 4
    assert sent == []  # in the shared arena until the round's transmit step drains it
    server._drain_arena()
    want = [_python_frame(server, conn_s, s, (first_id + i) & 0xFFFF) for i, s in enumerate(segs)]
    assert sent == want
    assert [parse_frame(f).tcp.payload for f in sent] == [s.payload for s in segs]


def test_segments_the_builder_does_not_write_stop_the_batch_in_order() -> None:
    clock = Clock()
    server, _, conn_s, _, _ = _established(clock)
    fp = server._fast_path(conn_s, clock.now)
    assert fp is not None
    data = TcpSegment(8080, conn_s.remote_port, Seq(5), Seq(7), ACK, 100, b"x", TcpOptions())
    rst = TcpSegment(8080, conn_s.remote_port, Seq(6), Seq(0), TcpFlags.RST, 0, b"",
                     TcpOptions())
    syn = TcpSegment(8080, conn_s.remote_port, Seq(6), Seq(7), TcpFlags.SYN | ACK, 100, b"",
                     TcpOptions(mss=1460))
    mss_opt = TcpSegment(8080, conn_s.remote_port, Seq(6), Seq(7), ACK, 100, b"",
                         TcpOptions(mss=1460))
    assert server._build_segments(fp, [data, data, rst, data]) == 2
    assert server._build_segments(fp, [syn, data]) == 0
    assert server._build_segments(fp, [mss_opt]) == 0
    big = TcpSegment(8080, conn_s.remote_port, Seq(5), Seq(7), ACK, 100, b"y" * 1500,
                     TcpOptions())
    assert server._build_segments(fp, [data, big]) == 1  # too big for the arena: _emit


def test_bulk_transfer_with_sack_recovery_still_completes() -> None:
    """Loss on the wire: SACK-carrying ACKs and retransmissions built in C."""
    clock = Clock()
    server, client, conn_s, conn_c, _ = _established(clock)
    payload = bytes(range(256)) * 2000
    nic_b = client.nic
    assert isinstance(nic_b, BulkNic)
    real = nic_b.transmit
    count = [0]

    def lossy(frames: Any) -> int:
        keep = []
        for f in frames:
            count[0] += 1
            if count[0] % 17 != 5:  # drop one frame in 17
                keep.append(f)
        real(keep)
        return len(frames)

    nic_b.transmit = lossy  # type: ignore[method-assign]
    sent = 0
    got = bytearray()
    for _ in range(5000):
        if sent < len(payload):
            sent += conn_c.send(payload[sent:])
            client.mark(conn_c)
        _run([server, client], clock, 1)
        got += conn_s.recv()
        server.mark(conn_s)
        if len(got) == len(payload):
            break
        clock.now += 0.01
    assert bytes(got) == payload
    assert server.counters["tx_built_in_c"] > 0


def test_short_connections_never_build_a_fast_path() -> None:
    """A connection earns its fast path only after FAST_PATH_AFTER slow-path events:
    one request/response with Connection: close never builds one (its cost would not
    be paid back); a longer exchange does, and both deliver every byte in order."""
    clock = Clock()
    server, client, _ = _pair(clock)
    assert server.fast_path_after == FAST_PATH_AFTER > 0
    listener = server.listen(8080)
    conn_c = client.connect(IP_A, 8080)
    _run([server, client], clock, 5)
    conn_s = server.accept(listener)
    assert conn_s is not None
    conn_c.send(b"GET / HTTP/1.1\r\n\r\n")
    client.mark(conn_c)
    _run([server, client], clock, 3)
    assert conn_s.recv() == b"GET / HTTP/1.1\r\n\r\n"
    conn_s.send(b"HTTP/1.1 200 OK\r\n\r\nhello")
    conn_s.close()
    server.mark(conn_s)
    _run([server, client], clock, 3)
    assert conn_c.recv() == b"HTTP/1.1 200 OK\r\n\r\nhello"
    conn_c.close()
    client.mark(conn_c)
    _run([server, client], clock, 5)
    assert server.counters["fast_paths_built"] == 0
    assert not server._fast and not server._slow_seen  # nothing left per connection

    # A keep-alive exchange of many round trips earns it and keeps every byte in order.
    conn_c = client.connect(IP_A, 8080)
    _run([server, client], clock, 5)
    conn_s = server.accept(listener)
    assert conn_s is not None
    for i in range(12):
        conn_c.send(bytes([i]) * 100)
        client.mark(conn_c)
        _run([server, client], clock, 2)
        assert conn_s.recv() == bytes([i]) * 100
        conn_s.send(bytes([i]) * 300)
        server.mark(conn_s)
        _run([server, client], clock, 2)
        assert conn_c.recv() == bytes([i]) * 300
    assert server.counters["fast_paths_built"] == 1
    assert list(server._fast) == [conn_s]
    assert server.counters["rx_fast_path"] > 0


class CountingNic(BulkNic):
    def __init__(self) -> None:
        super().__init__()
        self.bulk_calls = 0

    def transmit_from(self, base: Any, offsets: Any, lengths: Any, n: int) -> int:
        self.bulk_calls += 1
        return super().transmit_from(base, offsets, lengths, n)


def test_a_round_of_many_connections_reaches_the_nic_in_few_calls_and_in_order() -> None:
    """The fast paths of every connection build into one shared arena, which the
    transmit step hands to the NIC in one call (and mid-round when it fills): 100
    replies of 4 full segments (the short tail waits for an ACK: Nagle) take 2 NIC
    calls, not 100, and each reply arrives intact."""
    clock = Clock()
    nic_a = CountingNic()
    server, client, _ = _pair(clock, nic_a=nic_a)
    server.fast_path_after = client.fast_path_after = 0
    listener = server.listen(8080)
    clients = [client.connect(IP_A, 8080) for _ in range(100)]
    _run([server, client], clock, 10)
    servers = []
    while (conn := server.accept(listener)) is not None:
        servers.append(conn)
    assert len(servers) == 100
    for k, conn_c in enumerate(clients):
        conn_c.send(k.to_bytes(2, "big"))
        client.mark(conn_c)
    client.flush()
    server.poll(transmit=False)
    server.poll(transmit=False)  # 64 frames per poll
    capacity = server._arena.capacity if server._arena else 0
    replies = {}
    for conn_s in servers:
        k = int.from_bytes(conn_s.recv(), "big")
        replies[conn_s.remote_port] = bytes([k % 251]) * 2000 + k.to_bytes(2, "big") * 2000
        assert conn_s.send(replies[conn_s.remote_port]) == 6000
        server.mark(conn_s)
    calls0, frames0 = nic_a.bulk_calls, nic_a.bulk_frames
    server.flush()
    assert nic_a.bulk_frames - frames0 == 400
    assert capacity < 400  # so the arena filled once in that round
    assert nic_a.bulk_calls - calls0 == 2
    _run([client, server], clock, 10)
    for conn_c in clients:
        assert conn_c.recv() == replies[conn_c.local_port]
    assert not any(k.startswith("internal_error") for k in server.counters)


class KickNic(BulkNic):
    """Records the offload hint of every kick (XskNic hands offloaded kicks to its
    tx thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.kicks: list[bool] = []

    def kick(self, offload: bool = True) -> None:
        self.kicks.append(offload)


def test_rounds_that_send_data_offload_the_kick_and_ack_only_rounds_do_not() -> None:
    nic_a = KickNic()
    server, client, conn_s, conn_c, _ = _established(Clock(), nic_a=nic_a)
    # The client sends a bulk stream: the server answers with ACKs only.
    conn_c.send(bytes(20 * 1448))
    client.mark(conn_c)
    client.flush()
    nic_a.kicks.clear()
    frames0 = server.counters["tx_frames"]
    server.poll()
    assert server.counters["tx_frames"] > frames0  # the ACKs (every second segment)
    assert nic_a.kicks == [False]
    # The server replies with data: that round's kick may go to the tx thread.
    conn_s.recv()
    conn_s.send(b"reply")
    server.mark(conn_s)
    nic_a.kicks.clear()
    server.flush()
    assert nic_a.kicks == [True]
