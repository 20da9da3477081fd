"""A deterministic in-memory network for two TCP cores.

Segments are encoded to bytes with ``emit_tcp`` (checksum included), pass through a
seeded impairment model (loss, duplication, corruption, delay with jitter, which
reorders, and a rate-limited bottleneck with a drop-tail queue), and are parsed again
with checksum verification, so corruption is caught by the wire layer and counted.

Time is simulated: the loop jumps to the next event (a delivery or a timer), so a
transfer that takes 30 simulated seconds costs only the CPU time of its segments.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from dataclasses import dataclass, field

from joyride.tcp.config import TcpConfig
from joyride.tcp.connection import TcpConnection
from joyride.tcp.isn import IsnGenerator
from joyride.tcp.listener import Listener
from joyride.tcp.state import TcpState
from joyride.wire.errors import ParseError
from joyride.wire.tcp import TcpSegment, emit_tcp, parse_tcp

CLIENT_IP = bytes([10, 0, 0, 1])
SERVER_IP = bytes([10, 0, 0, 2])
SERVER_PORT = 8080
CLIENT_PORT = 40000


@dataclass
class Impairment:
    loss: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    delay: float = 0.010  # one-way propagation delay, seconds
    jitter: float = 0.0  # uniform extra delay in [0, jitter): reorders segments
    rate: float = 100e6 / 8  # bottleneck bytes/second
    queue: int = 256 * 1024  # drop-tail queue at the bottleneck, bytes


@dataclass
class Link:
    """One direction: bottleneck queue, then propagation with impairments."""

    imp: Impairment
    rng: random.Random
    src_ip: bytes
    dst_ip: bytes
    busy_until: float = 0.0
    stats: Counter[str] = field(default_factory=Counter)

    def send(self, seg: TcpSegment, now: float, heap: list[tuple[float, int, int, bytes]],
             seq: list[int], direction: int) -> None:
        frame = emit_tcp(seg, self.src_ip, self.dst_ip)
        self.stats["sent"] += 1
        start = max(now, self.busy_until)
        backlog = (start - now) * self.imp.rate
        if backlog + len(frame) > self.imp.queue:
            self.stats["queue_drop"] += 1
            return
        self.busy_until = start + (len(frame) + 40) / self.imp.rate
        if self.rng.random() < self.imp.loss:
            self.stats["lost"] += 1
            return
        copies = 2 if self.rng.random() < self.imp.duplicate else 1
        self.stats["duplicated"] += copies - 1
        for _ in range(copies):
            data = frame
            if self.rng.random() < self.imp.corrupt:
                b = bytearray(frame)
                i = self.rng.randrange(len(b))
                b[i] ^= 1 << self.rng.randrange(8)
                data = bytes(b)
                self.stats["corrupted"] += 1
            at = self.busy_until + self.imp.delay + self.rng.random() * self.imp.jitter
            seq[0] += 1
            heapq.heappush(heap, (at, seq[0], direction, data))


@dataclass
class TransferResult:
    elapsed: float  # simulated seconds from SYN to both sides seeing EOF
    client: TcpConnection
    server: TcpConnection
    parse_drops: Counter[str]
    links: tuple[Counter[str], Counter[str]]
    received_by_server: bytes
    received_by_client: bytes


def transfer(
    up: bytes,
    down: bytes,
    *,
    seed: int,
    imp: Impairment,
    config: TcpConfig | None = None,
    server_config: TcpConfig | None = None,
    time_limit: float = 600.0,
    max_steps: int = 2_000_000,
) -> TransferResult:
    """Connect, send ``up`` client→server and ``down`` server→client at the same time,
    half-close both ways, and run until both have read EOF (or the limits hit)."""
    rng = random.Random(seed)
    cfg = config or TcpConfig()
    scfg = server_config or cfg
    isn = IsnGenerator(secret=rng.randbytes(32))
    listener = Listener(scfg, SERVER_PORT, isn_generator=isn)
    client = TcpConnection.connect(
        cfg, CLIENT_IP, CLIENT_PORT, SERVER_IP, SERVER_PORT, 0.0, isn,
        ts_offset=rng.getrandbits(32),
    )
    heap: list[tuple[float, int, int, bytes]] = []
    counter = [0]
    c2s = Link(imp, random.Random(rng.getrandbits(64)), CLIENT_IP, SERVER_IP)
    s2c = Link(imp, random.Random(rng.getrandbits(64)), SERVER_IP, CLIENT_IP)
    parse_drops: Counter[str] = Counter()
    server: TcpConnection | None = None
    got_up = bytearray()
    got_down = bytearray()
    up_off = down_off = 0
    now = 0.0

    def pump(t: float) -> None:
        nonlocal up_off, down_off, server
        # Applications: write what fits, read everything, half-close when done.
        if up_off < len(up):
            up_off += client.send(memoryview(up)[up_off : up_off + 65536])
            if up_off == len(up):
                client.shutdown_write()
        got_down.extend(client.recv(-1, now=t))
        if server is None:
            server = listener.accept()
        if server is not None:
            if down_off < len(down):
                down_off += server.send(memoryview(down)[down_off : down_off + 65536])
            if down_off == len(down):
                server.shutdown_write()  # idempotent
            got_up.extend(server.recv(-1, now=t))
        for seg in client.segments_to_send(t):
            c2s.send(seg, t, heap, counter, 0)
        for out in listener.segments_to_send(t):
            s2c.send(out.segment, t, heap, counter, 1)
        if server is not None:
            for seg in server.segments_to_send(t):
                s2c.send(seg, t, heap, counter, 1)

    if not up:
        client.shutdown_write()
    pump(now)
    steps = 0
    while steps < max_steps:
        steps += 1
        finished = (TcpState.TIME_WAIT, TcpState.CLOSED)
        done = (
            server is not None and client.eof and server.eof
            and client.state in finished and server.state in finished
        )
        if done or (client.state is TcpState.CLOSED and client.error):
            break
        candidates = [t for t in (client.poll_at(), listener.poll_at(),
                                  server.poll_at() if server else None) if t is not None]
        if heap:
            candidates.append(heap[0][0])
        if not candidates:
            break
        now = max(now, min(candidates))
        if now > time_limit:
            break
        while heap and heap[0][0] <= now:
            _, _, direction, data = heapq.heappop(heap)
            src, dst = (CLIENT_IP, SERVER_IP) if direction == 0 else (SERVER_IP, CLIENT_IP)
            try:
                seg = parse_tcp(data, src, dst, verify_checksum=True)
            except ParseError as e:
                parse_drops[e.reason] += 1
                continue
            if direction == 1:
                client.receive(seg, now)
            elif server is not None and seg.src_port == server.remote_port:
                server.receive(seg, now)
            else:
                listener.receive(seg, src, dst, now)
        client.on_timer(now)
        listener.on_timer(now)
        if server is not None:
            server.on_timer(now)
        pump(now)
    if up_off == len(up) and server is None:
        server = listener.accept()
    assert server is not None, "handshake never completed"
    return TransferResult(
        elapsed=now, client=client, server=server, parse_drops=parse_drops,
        links=(c2s.stats, s2c.stats), received_by_server=bytes(got_up),
        received_by_client=bytes(got_down),
    )
