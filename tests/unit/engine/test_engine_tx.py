"""The engine's transmit step: an established connection's segments, built by wire.c a
run at a time from what the state machine wants to send, reach the NIC in order through
loss and recovery, byte for byte as the reference builder makes them, and a round that
sent data lets the NIC offload its kick."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from joyride.engine import Engine, MemoryNic, StaticNetwork
from joyride.tcp.config import TcpConfig
from joyride.tcp.connection import TcpConnection
from joyride.wire.frame import build_frame, parse_frame
from joyride.wire.tcp import TcpFlags

IP_A, IP_B = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _pair(clock: Clock, cfg: TcpConfig | None = None, nic_a: MemoryNic | None = None
          ) -> tuple[Engine, Engine, MemoryNic]:
    """A server engine (on ``nic_a``) and a client engine wired to each other."""
    nic_a, nic_b = nic_a or MemoryNic(), MemoryNic()
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


def _established(clock: Clock, cfg: TcpConfig | None = None, nic_a: MemoryNic | None = None
                 ) -> tuple[Engine, Engine, TcpConnection, TcpConnection, MemoryNic]:
    server, client, nic_a = _pair(clock, cfg, nic_a)
    listener = server.listen(8080)
    conn_c = client.connect(IP_A, 8080)
    _run([server, client], clock, 5)
    conn_s = server.accept(listener)
    assert conn_s is not None
    return server, client, conn_s, conn_c, nic_a


def _upload(server: Engine, client: Engine, conn_s: TcpConnection, conn_c: TcpConnection,
            clock: Clock, payload: bytes) -> bytes:
    """``payload`` from the client's connection to the server's, in steps of 10 ms
    (bounded); what the server's end received."""
    sent, got = 0, bytearray()
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
    return bytes(got)


def test_bulk_transfer_with_sack_recovery_still_completes() -> None:
    """Loss on the wire: SACK-carrying ACKs and retransmissions, the stream intact."""
    clock = Clock()
    server, client, conn_s, conn_c, _ = _established(clock)
    payload = bytes(range(256)) * 2000
    nic_b = client.nic
    assert isinstance(nic_b, MemoryNic)
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
    assert _upload(server, client, conn_s, conn_c, clock, payload) == payload
    assert conn_c.counters["retransmitted_segments"] > 0


def test_frames_built_in_c_are_the_reference_builders_bytes() -> None:
    """Data and ACK segments leave through wire.c (``Engine._build_run``), the rest
    through wire/frame.py: every frame of a handshake, a lossy bulk transfer (SACK
    blocks, timestamps, retransmissions) and a close, both ways, is byte for byte what
    the reference builder makes of its parsed headers."""
    clock = Clock()
    seen: list[bytes] = []
    server, client, _pair_nic = _pair(clock)
    for engine, drop_every in ((server, 0), (client, 13)):
        nic = engine.nic
        assert isinstance(nic, MemoryNic)
        real = nic.transmit
        count = [0]

        def tapped(frames: Any, real: Any = real, count: list[int] = count,
                   drop_every: int = drop_every) -> int:
            keep = []
            for f in frames:
                seen.append(bytes(f))
                count[0] += 1
                if not drop_every or count[0] % drop_every != 4:
                    keep.append(f)
            real(keep)
            return len(frames)

        nic.transmit = tapped  # type: ignore[method-assign]
    listener = server.listen(8080)
    conn_c = client.connect(IP_A, 8080)
    _run([server, client], clock, 5)
    conn_s = server.accept(listener)
    assert conn_s is not None
    payload = os.urandom(200_000)
    got = _upload(server, client, conn_s, conn_c, clock, payload)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    conn_c.close()
    conn_s.close()
    _run([server, client], clock, 20)
    frames = [parse_frame(f) for f in seen]
    assert any(f.tcp.options.sack_blocks for f in frames)  # the receiver's SACKs
    assert any(f.tcp.flags & TcpFlags.SYN for f in frames)  # and the other builder's
    assert sum(bool(f.tcp.payload) for f in frames) > len(payload) // 1448
    for raw, f in zip(seen, frames, strict=True):
        assert build_frame(f.eth, f.ip, f.tcp) == raw
        # ... and addressed as the engine that sent it would address it.
        to_server = f.ip.dst == IP_A
        assert (f.eth.src, f.eth.dst) == ((MAC_B, MAC_A) if to_server else (MAC_A, MAC_B))
        assert f.ip.src == (IP_B if to_server else IP_A)
        assert (f.tcp.dst_port if to_server else f.tcp.src_port) == 8080


class KickNic(MemoryNic):
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
