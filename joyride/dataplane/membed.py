"""An in-memory bed for the C data plane, at explicit times.

A Python peer engine (``MemoryNic``) on one side; on the other the service-side
engine, whose NIC is the data plane's (``DeclineNic``) over a ``MemoryPort``. Frames
cross in ``step``; ``impair`` may drop or hold frames on their way in either direction.
The unit and differential tests (``tests/unit/dataplane``) and the replay
microbenchmark (``joyride.bench.replay``) run on it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable

from joyride.dataplane.plane import Born, DataPlane, DeclineNic, MemoryPort
from joyride.engine.engine import Engine
from joyride.engine.network import StaticNetwork
from joyride.engine.nic import MemoryNic
from joyride.tcp.config import TcpConfig
from joyride.tcp.connection import TcpConnection
from joyride.wire import gso

IP_SVC, IP_PEER = socket.inet_aton("10.9.0.1"), socket.inet_aton("10.9.0.2")
# Both ends are dual-stack: a bed made with ipv6=True connects over these.
IP6_SVC = socket.inet_pton(socket.AF_INET6, "2001:db8:9::1")
IP6_PEER = socket.inet_pton(socket.AF_INET6, "2001:db8:9::2")
MAC_SVC, MAC_PEER = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
PORT = 8080

# A frame on its way and where it goes: (frame, toward_plane) -> keep it?
Impair = Callable[[bytes, bool], bool]


class Clock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class _Inbox:
    """What the peer's ``MemoryNic.transmit`` appends to: the way into the plane."""

    def __init__(self, bed: Bed) -> None:
        self.bed = bed

    def append(self, frame: bytes) -> None:
        if self.bed.impair is None or self.bed.impair(frame, True):
            self.bed.port.push(frame)

    def __len__(self) -> int:
        return 0


class _PlaneEnd:
    def __init__(self, bed: Bed) -> None:
        self.inbox = _Inbox(bed)
        self.capacity = 1 << 30


class Bed:
    def __init__(self, config: TcpConfig | None = None,
                 peer_config: TcpConfig | None = None, *, max_flows: int = 64,
                 rx_batches: int = 1, nic_frames: int | None = None,
                 gso: bool = False, wire_frames: int | None = None,
                 ipv6: bool = False) -> None:
        self.clock = Clock()
        # The family ``connect`` uses (both ends have an address of each).
        self.ip_svc, self.ip_peer = (IP6_SVC, IP6_PEER) if ipv6 else (IP_SVC, IP_PEER)
        self.impair: Impair | None = None
        # One batch a round by default: C in lockstep with the engine's one batch a
        # poll, so that a flow in C and the same flow in Python see the same times.
        self.plane = DataPlane(mtu=1500, max_flows=max_flows, rx_batches=rx_batches)
        # nic_frames: the wire takes that many of C's frames a step (a NIC that fills).
        self.port: MemoryPort = self.plane.add_memory_port(tx_limit=nic_frames)
        # gso: C's super-segments arrive on a datagram pair and reach the peer cut as a
        # device cuts them (joyride.wire.gso), ahead of the port's frames of the step,
        # as the real socket sends them at once and the port's frames later.
        # wire_frames: the wire carries that many of the port's frames a step; the rest
        # wait on the port as on a NIC's tx ring (the consumer behind the producer).
        self.wire_frames = wire_frames
        self.gso_in: socket.socket | None = None
        self.gso_runs: list[int] = []  # segments of each GSO datagram received, in order
        if gso:
            self.gso_in, out = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.gso_in.setblocking(False)
            out.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
            self.plane.set_gso(out)
        self.svc = Engine(DeclineNic(self.plane),
                          StaticNetwork("svc0", MAC_SVC, frozenset({IP_SVC, IP6_SVC}),
                                        {IP_PEER: MAC_PEER, IP6_PEER: MAC_PEER}),
                          config or TcpConfig(nodelay=True), clock=self.clock)
        self.peer_nic = MemoryNic()
        self.peer = Engine(self.peer_nic, StaticNetwork("peer0", MAC_PEER,
                                                        frozenset({IP_PEER, IP6_PEER}),
                                                        {IP_SVC: MAC_SVC, IP6_SVC: MAC_SVC}),
                           peer_config or TcpConfig(nodelay=True), clock=self.clock)
        self.peer_nic.peer = _PlaneEnd(self)  # type: ignore[assignment]
        self.reasons: list[str] = []
        # Adopted connections and the service end of their channel: while Python owns
        # one (handed back), ``step`` moves its bytes as the service's pump does, and
        # gives it back to C once it may (Datapath._hand_to_plane).
        self.channels: dict[TcpConnection, socket.socket] = {}
        self._held: dict[TcpConnection, bytes] = {}
        self.readopt = True
        self.born: list[TcpConnection] = []  # connections C opened and gave to Python
        self.round_ns = 0  # CPU time spent in the C rounds of ``step``

    def step(self, dt: float = 0.0001) -> None:
        """Time moves by ``dt``; one C round, the service engine's Python work (what C
        gave back first, then what it declined), the plane's frames to the peer, the
        peer's round."""
        self.clock.advance(dt)
        now = self.clock.now
        # The C round's CPU time (this thread's, system calls included; time spent
        # preempted by other work is not), for the replay benchmark.
        start = time.thread_time_ns()
        self.plane.round(now)
        self.round_ns += time.thread_time_ns() - start
        back: list[TcpConnection] = []
        for got in self.plane.handbacks(now):
            self.reasons.append(got.reason)
            if isinstance(got, Born):
                self._take_born(got, now)
                continue
            self.svc.adopt_back(got.conn)
            back.append(got.conn)
            if got.app_gone:  # gone with bytes it never took: Pump.app_closed
                got.conn.close(lost=True)
            elif got.app_eof:
                got.conn.shutdown_write()
        # What the application wrote that C had not read yet is taken before the
        # frames C declined, as C would have read it this round.
        self.pump(back)
        self.svc.poll()
        self.pump()
        self.svc.flush()
        for conn, ours in self.channels.items():
            if self.readopt and not conn.parked and conn.hot_ready() \
                    and not self.svc.marked(conn) and conn not in self._held:
                self.plane.adopt(conn, MAC_SVC, MAC_PEER, ours.fileno())
        for frame in [*self._gso_frames(), *self.port.pop_all(self.wire_frames)]:
            if self.impair is None or self.impair(frame, False):
                self.peer_nic.inbox.append(frame)
        self.peer.poll()
        self.peer.flush()

    def _gso_frames(self) -> list[bytes]:
        frames: list[bytes] = []
        while self.gso_in is not None:
            try:
                datagram = self.gso_in.recv(1 << 17)
            except BlockingIOError:
                break
            pieces = gso.segment(datagram)
            self.gso_runs.append(len(pieces))
            frames += pieces
        return frames

    def _take_born(self, got: Born, now: float) -> None:
        """A connection C opened itself comes to Python (Datapath's rule in miniature):
        the engine runs it, and its application channel, if C made one, is ours."""
        conn = TcpConnection.from_hot(self.svc.config, got.tcb, got.rcv, got.snd, now)
        self.svc.adopt_born(conn)
        self.born.append(conn)
        if got.reason == "app_gone":  # gone with bytes it never took: Pump.app_closed
            if int(got.tcb.app_fd) >= 0:
                os.close(int(got.tcb.app_fd))
            for chan in (int(got.tcb.chan), int(got.tcb.revert_chan)):
                if chan:
                    self.plane.chan_release(chan)  # as Pump.close
            conn.close(lost=True)
            self.svc.mark(conn)
            return
        if int(got.tcb.app_fd) >= 0:
            ours = socket.socket(fileno=int(got.tcb.app_fd))
            ours.setblocking(False)
            self.channels[conn] = ours
            if got.tcb.app_eof:
                conn.shutdown_write()

    def pump(self, only: list[TcpConnection] | None = None) -> None:
        """Service.Pump in miniature: TCP -> application only as far as its socket takes,
        application -> TCP only as far as the send buffer takes (for the connections
        in ``only``, or all that Python runs)."""
        for conn, ours in self.channels.items():
            if conn.parked or (only is not None and conn not in only):
                continue
            while conn.recv_queue:
                data = conn.recv(65536)
                try:
                    sent = ours.send(data)
                except BlockingIOError:
                    sent = 0
                if sent < len(data):  # put the rest back where it came from
                    self._held[conn] = self._held.get(conn, b"") + data[sent:]
                    break
            held = self._held.pop(conn, b"")
            if held:
                try:
                    sent = ours.send(held)
                except BlockingIOError:
                    sent = 0
                if sent < len(held):
                    self._held[conn] = held[sent:]
            while True:
                region = conn.send_region()
                if not region:
                    break
                try:
                    with region:
                        n = ours.recv_into(region)
                except BlockingIOError:
                    break
                if n == 0:
                    conn.shutdown_write()
                    break
                conn.send_commit(n)
            self.svc.mark(conn)

    def run(self, steps: int, dt: float = 0.0001) -> None:
        for _ in range(steps):
            self.step(dt)

    def connect(self, dt: float = 0.0001) -> tuple[TcpConnection, TcpConnection]:
        """A connection from the peer, its steps ``dt`` apart (the path's RTT)."""
        listener = self.svc.listen(PORT)
        client = self.peer.connect(self.ip_svc, PORT)
        server = None
        for _ in range(20):
            self.step(dt)
            server = self.svc.accept(listener)
            if server is not None:
                break
        assert server is not None
        self.run(5, dt)
        return client, server

    def attach(self, server: TcpConnection) -> tuple[socket.socket, socket.socket]:
        """Give ``server`` an application channel that ``step`` pumps as the service
        does, leaving it to Python: (service end, app end)."""
        ours, app = socket.socketpair()
        ours.setblocking(False)
        app.setblocking(False)
        self.channels[server] = ours
        return ours, app

    def adopt(self, server: TcpConnection) -> tuple[socket.socket, socket.socket]:
        """Give ``server`` to C with a fresh application channel: (service end, app end)."""
        ours, app = self.attach(server)
        assert self.plane.adopt(server, MAC_SVC, MAC_PEER, ours.fileno())
        return ours, app


def transfer(bed: Bed, client: TcpConnection, app: socket.socket, up: bytes, down: bytes,
             steps: int = 20000) -> tuple[bytes, bytes]:
    """``up`` from the peer's ``client`` to the application's socket ``app`` and
    ``down`` back, both at once, for at most ``steps`` steps: what each end got."""
    sent_up = sent_down = 0
    got_up, got_down = bytearray(), bytearray()
    for _ in range(steps):
        if sent_up < len(up):
            sent_up += client.send(up[sent_up:sent_up + 200_000])
            bed.peer.mark(client)
        if sent_down < len(down):
            with contextlib.suppress(BlockingIOError):
                sent_down += app.send(down[sent_down:sent_down + 65536])
        bed.step()
        got_up += read_all(app)
        got_down += client.recv()
        if len(got_up) == len(up) and len(got_down) == len(down):
            break
    return bytes(got_up), bytes(got_down)


def read_all(sock: socket.socket) -> bytes:
    out = bytearray()
    try:
        while chunk := sock.recv(1 << 20):
            out += chunk
    except BlockingIOError:
        pass
    return bytes(out)
