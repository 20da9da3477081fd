"""Ring mode on the service's side (issue 17, docs/channels.md): a connection C opens
for an application that claims ring mode waits for the claim, then moves its bytes
through the shared-memory channel both ways, in C and, after a hand-back, in Python's
``Pump`` with the same steps; a claim that does not come, comes late, or is not a claim
leaves a plain stream. The application's side is chan.h's, as the shim will run it
(``dp_app_*``). Over the in-memory bed, at explicit times, bytes checked by hash."""

from __future__ import annotations

import errno
import hashlib
import os
import selectors
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_born import Born, segment_of

from joyride.dataplane.membed import IP_PEER, IP_SVC, MAC_PEER, MAC_SVC, PORT, Bed, read_all
from joyride.dataplane.plane import CLAIM_WAIT, ChannelState, ffi, lib
from joyride.engine.network import StaticNetwork
from joyride.engine.nic import MemoryNic
from joyride.service import apps
from joyride.service.datapath import Datapath
from joyride.service.pump import WAIT_BYTES, Pump
from joyride.steer.ports import PortSet
from joyride.tcp.connection import TcpConnection
from joyride.tcp.state import TcpState

pytestmark = pytest.mark.skipif(lib is None, reason="the C data plane is not built")

RING = 4096  # small rings: full and empty, and so every wake-up path, come often


class App:
    """The application's end: its accepted socket and, once claimed, its channel."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.chan: object | None = None

    def claim(self, claim_id: int = 1, door: bool = False) -> None:
        self.chan = lib.dp_app_claim_door(self.sock.fileno(), RING, RING, claim_id, int(door))
        assert self.chan != ffi.NULL

    def claim_sibling(self, first: App, claim_id: int) -> None:
        """Claim slot 1 of ``first``'s arena (a door arena has two)."""
        self.chan = lib.dp_app_claim_sibling(first.chan, self.sock.fileno(), claim_id)
        assert self.chan != ffi.NULL

    def rings(self) -> tuple[int, int]:
        """Its wake-ups so far: (doorbells on its socket, rings of its arena's door)."""
        bells, doors = ffi.new("uint64_t *"), ffi.new("uint64_t *")
        lib.dp_app_rings(self.chan, bells, doors)
        return int(bells[0]), int(doors[0])

    def verdict(self) -> int:
        return int(lib.dp_app_verdict(self.chan, 0))

    def read(self, n: int = 1 << 16) -> bytes | None:
        """None: nothing now; b"": EOF."""
        buf = ffi.new("uint8_t[]", n)
        got = int(lib.dp_app_read(self.chan, buf, n))
        if got == -11:  # EAGAIN
            return None
        assert got >= 0, os.strerror(-got)
        return bytes(ffi.buffer(buf, got))

    def write(self, data: bytes) -> int:
        got = int(lib.dp_app_write(self.chan, data, len(data)))
        return 0 if got == -11 else got

    def close(self) -> None:
        if self.chan is not None:
            lib.dp_app_free(self.chan)
            self.chan = None
        self.sock.close()


class Claiming(Born):
    """test_born's bed, its application claiming ring mode, with the applications it
    accepted."""

    def __init__(self, claims: bool = True, max_flows: int = 64) -> None:
        super().__init__(backlog=16, max_flows=max_flows, claims=claims)
        self.apps: list[App] = []

    def connect(self) -> tuple[TcpConnection, App]:
        client = self.bed.peer.connect(IP_SVC, PORT)
        self.bed.run(5)
        assert client.state is TcpState.ESTABLISHED
        app = App(self.accept())
        self.apps.append(app)
        return client, app

    def close(self) -> None:
        for app in self.apps:
            app.close()
        super().close()


@pytest.fixture
def bed() -> Iterator[Claiming]:
    b = Claiming()
    yield b
    b.close()


def payload(n: int, seed: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}/{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


class AppEnd(Protocol):
    """What ``exchange`` needs of an application's end of a channel."""

    def read(self, n: int = 1 << 16) -> bytes | None: ...
    def write(self, data: bytes) -> int: ...


def exchange(bed: Born, client: TcpConnection, app: AppEnd, up: bytes, down: bytes,
             step: object = None, steps: int = 4000) -> tuple[bytes, bytes]:
    """Client sends ``up`` and reads; the application reads and sends ``down``."""
    got_app = bytearray()
    got_client = bytearray()
    sent_up = sent_down = 0
    for _ in range(steps):
        if sent_up < len(up):
            sent_up += client.send(up[sent_up:sent_up + 65536])
            bed.bed.peer.mark(client)
        if sent_down < len(down):
            sent_down += app.write(down[sent_down:sent_down + 8192])
        chunk = app.read()
        if chunk:
            got_app += chunk
        got_client += client.recv(1 << 20)
        (step or bed.bed.step)()  # type: ignore[operator]
        if len(got_app) == len(up) and len(got_client) == len(down):
            break
    return bytes(got_app), bytes(got_client)


def both_eofs(bed: Born, client: TcpConnection, app: AppEnd,
              shut_down: Callable[[], object]) -> None:
    """Both closes: the application's shutdown is a FIN after its bytes (the peer sees
    EOF); the peer's close is the application's EOF."""
    shut_down()
    bed.bed.run(10)
    assert client.eof
    client.close()
    bed.bed.peer.mark(client)
    for _ in range(50):
        bed.bed.step()
        if app.read() == b"":
            break
    assert app.read() == b""


def test_ring_mode_both_ways_hash_checked(bed: Claiming) -> None:
    client, app = bed.connect()
    client.send(b"first request")  # before the claim: held, not delivered
    bed.bed.peer.mark(client)
    bed.bed.run(5)
    assert read_all(app.sock) == b""  # nothing was put on the socket as a stream
    app.claim()
    bed.bed.run(3)
    assert app.verdict() == 1
    up, down = payload(300_000, 1), payload(200_000, 2)
    got_app, got_client = exchange(bed, client, app, up, down)
    assert hashlib.sha256(got_app).digest() == hashlib.sha256(b"first request" + up).digest()
    assert hashlib.sha256(got_client).digest() == hashlib.sha256(down).digest()
    st = bed.stats()
    assert st["chan_claims"] == 1 and st["chan_ring"] == 1 and st["chan_broken"] == 0
    # Both closes, then the slot is the application's again.
    both_eofs(bed, client, app, lambda: lib.dp_app_shutdown(app.chan))
    bed.bed.run(10)
    app.sock.close()
    bed.bed.run(10)
    assert lib.dp_app_slot_done(app.chan) == 1
    assert bed.stats()["chan_released"] == 1


def test_no_claim_in_time_is_a_stream_and_a_late_claim_is_refused(bed: Claiming) -> None:
    client, app = bed.connect()
    client.send(b"hello")
    bed.bed.peer.mark(client)
    bed.bed.run(5)
    assert read_all(app.sock) == b""
    bed.bed.run(int(CLAIM_WAIT / 0.0001) + 20)  # the claim's deadline passes
    assert read_all(app.sock) == b"hello"
    assert bed.stats()["claim_deadlines"] == 1
    # A claim after stream bytes is answered "stream mode", and its bytes go nowhere.
    app.claim()
    bed.bed.run(5)
    assert app.verdict() == 0
    app.sock.send(b"reply")
    bed.bed.run(5)
    assert client.recv(100) == b"reply"
    assert bed.stats()["chan_refused"] == 1


def test_an_application_that_speaks_first_is_a_stream(bed: Claiming) -> None:
    client, app = bed.connect()
    app.sock.send(b"220 banner\r\n")
    bed.bed.run(5)
    assert client.recv(100) == b"220 banner\r\n"
    client.send(b"QUIT\r\n")
    bed.bed.peer.mark(client)
    bed.bed.run(5)
    assert read_all(app.sock) == b"QUIT\r\n"
    st = bed.stats()
    assert st["chan_claims"] == 0 and st["claim_deadlines"] == 0


def test_a_listener_that_does_not_claim_gets_its_stream_at_once() -> None:
    b = Claiming(claims=False)
    try:
        client, app = b.connect()
        client.send(b"at once")
        b.bed.peer.mark(client)
        b.bed.run(3)
        assert read_all(app.sock) == b"at once"
    finally:
        b.close()


def python_ring_pump(bed: Claiming, door: bool = False
                     ) -> tuple[TcpConnection, App, TcpConnection, Pump]:
    """A claimed ring-mode connection taken into Python, as after a hand-back: the
    peer's end, the application (its arena with a door or not), the service's
    connection and its pump."""
    client, app = bed.connect()
    app.claim(door=door)
    bed.bed.run(3)
    assert app.verdict() == 1
    born = bed.bed.plane.claim((IP_SVC, PORT, IP_PEER, client.local_port))
    assert born is not None
    conn = TcpConnection.from_hot(bed.bed.svc.config, born.tcb, born.rcv, born.snd,
                                  bed.bed.clock.now)
    bed.bed.svc.adopt_born(conn)
    pump = Pump(conn, socket.socket(fileno=int(born.tcb.app_fd)), plane=bed.bed.plane,
                channel=ChannelState.of(born.tcb))
    assert pump.channel.chan > 0
    return client, app, conn, pump


def pump_turn(b: Bed, pump: Pump) -> None:
    """The service loop's turn for a pump Python runs: serve it, then its engine's
    transmit step."""
    pump.service()
    b.svc.mark(pump.conn)
    b.svc.flush()


def python_step(b: Bed, pump: Pump) -> None:
    """One step of the bed, then the pump's turn."""
    b.step()
    pump_turn(b, pump)


def until_eof(bed: Claiming, pump: Pump, client: TcpConnection, steps: int) -> bytes:
    """Step until the peer has read the service's FIN (at most ``steps``): its bytes."""
    got = bytearray()
    for _ in range(steps):
        python_step(bed.bed, pump)
        got += client.recv(1 << 20)
        if client.eof:
            break
    return bytes(got)


def test_a_ring_flow_handed_to_python_goes_on_in_ring_mode(bed: Claiming) -> None:
    """Python's Pump takes the channel with the flow and moves its bytes with the same
    steps (``DataPlane.chan_*``); given back to C, C goes on."""
    client, app, conn, pump = python_ring_pump(bed)

    def step() -> None:
        python_step(bed.bed, pump)

    up, down = payload(100_000, 3), payload(150_000, 4)
    got_app, got_client = exchange(bed, client, app, up, down, step)
    assert hashlib.sha256(got_app).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(got_client).digest() == hashlib.sha256(down).digest()
    # Back to C with its channel (Datapath._hand_to_plane), and on.
    assert bed.bed.plane.adopt(conn, bed.bed.svc.network.mac, bytes.fromhex("020000000002"),
                               pump.sock.fileno(), pump.channel)
    up2 = payload(50_000, 5)
    got_app, _ = exchange(bed, client, app, up2, b"")
    assert got_app == up2
    assert bed.stats()["chan_broken"] == 0


def test_a_full_send_buffer_and_a_closed_application_wait_for_acks(bed: Claiming) -> None:
    """The ring-mode livelock of docs/channels.md: TCP cannot take tx's bytes (its send
    buffer is full, the ACKs not yet in) and the application has closed its end, so
    its socket is readable for ever. The pump must wait for TCP, not for that socket
    (``service`` False, ``wanted`` 0), or the service loop spins on it; once the ACKs
    come, every byte the application wrote reaches the peer, then the FIN."""
    client, app, conn, pump = python_ring_pump(bed)
    data = payload(4 << 20, 11)
    written = 0
    for _ in range(10_000):  # no bed step: nothing reaches the peer, no ACK comes back
        written += app.write(data[written:written + RING])
        pump_turn(bed.bed, pump)
        if not conn.writable:
            break
    assert not conn.writable, "the send buffer never filled"
    written += app.write(data[written:written + RING])  # tx holds bytes TCP cannot take
    app.close()  # the application's close: its socket hangs up
    assert pump.service() is False
    assert pump.wanted() == 0
    got = until_eof(bed, pump, client, 20_000)
    assert client.eof
    assert hashlib.sha256(got).digest() == hashlib.sha256(data[:written]).digest()


@pytest.mark.parametrize("runner", ["c", "python", "c-adopted"])
def test_a_close_with_unread_bytes_resets_after_what_was_written(bed: Claiming,
                                                                 runner: str) -> None:
    """An application that closes with bytes in rx it never read (a server refusing a
    request it did not read) lost them: the peer gets what it wrote, then a reset, as
    from Linux's close with unread data (RFC 1122 §4.2.2.13), not a FIN. Whether C runs
    the flow (it counts app_closed_unread and hands it back, its bytes taken from tx)
    or Python's pump does; and for a flow Python gave C a second later (c-adopted), the
    bytes Python sends before the reset carry a timestamp no older than C's, or the
    peer's PAWS drops them."""
    if runner == "c":
        client, app = bed.connect()
        app.claim()
    else:
        client, app, conn, pump = python_ring_pump(bed)
    if runner == "c-adopted":
        bed.bed.clock.advance(1.0)  # time passes while Python runs it...
        for _ in range(3):
            python_step(bed.bed, pump)
        assert bed.bed.plane.adopt(conn, bed.bed.svc.network.mac, MAC_PEER,
                                   pump.sock.fileno(), pump.channel)
        bed.bed.clock.advance(1.0)  # ... and while C does
        assert exchange(bed, client, app, b"ping", b"pong") == (b"ping", b"pong")
    step = (lambda: python_step(bed.bed, pump)) if runner == "python" else bed.bed.step
    client.send(b"a request nobody reads")
    bed.bed.peer.mark(client)
    for _ in range(10):
        step()
    assert app.verdict() == 1
    assert app.write(b"refused\n") == len(b"refused\n")
    app.close()  # rx still holds the request
    for _ in range(10):
        step()
    if runner != "python":  # the bed takes the hand-back as Datapath does (app_closed)
        assert bed.stats()["app_closed_unread"] == 1
        assert bed.bed.reasons[-1:] == ["app_gone"]
    assert client.recv(100) == b"refused\n"
    assert client.state is TcpState.CLOSED and client.error is not None, client.state
    assert not client.eof  # a reset, not a FIN


def test_a_retoken_request_after_the_applications_eof_loses_nothing(bed: Claiming) -> None:
    """Once the peer's FIN reached the application (rx's EOF, the service's end shut for
    writing), a re-token request cannot be answered with a token (the send fails with
    EPIPE), and needs none: the EOF keeps the socket readable. Arming must not take
    that EPIPE for the application's end gone, which dropped the bytes it had written
    to tx and not yet collected (a truncated echo in ring mode, Python's pump)."""
    client, app, _conn, pump = python_ring_pump(bed)
    client.send(b"request")
    client.shutdown_write()
    bed.bed.peer.mark(client)
    got_app = bytearray()
    for _ in range(200):
        python_step(bed.bed, pump)
        chunk = app.read()
        if chunk == b"":
            break
        got_app += chunk or b""
    assert bytes(got_app) == b"request" and pump.fin_sent_to_app
    reply = payload(3000, 12)
    assert app.write(reply) == len(reply)
    lib.dp_app_retoken(app.chan)  # as a read racing the service asks
    rc = bed.bed.plane.chan_idle(pump.channel.chan, pump.sock.fileno(), WAIT_BYTES)
    assert rc == 0  # tx's bytes: work now (it was -EPIPE)
    lib.dp_app_shutdown(app.chan)
    got = until_eof(bed, pump, client, 200)
    assert client.eof and got == reply
    assert not pump.app_gone


def datapath_over(b: Bed, tmp_path: Path, ephemeral: PortSet | None = None
                  ) -> tuple[socket.socket, Datapath]:
    """A service ``Datapath`` whose C data plane is the bed's (its own NIC idle), and
    its application socket: the caller closes both."""
    app_socket = apps.listen_app_socket(tmp_path / "app.sock", None)
    dp = Datapath([MemoryNic()], StaticNetwork("svc0", MAC_SVC, frozenset({IP_SVC}),
                                               {IP_PEER: MAC_PEER}),
                  ports=PortSet([PORT]),
                  ephemeral=ephemeral if ephemeral is not None else PortSet(range(60000, 60100)),
                  app_socket=app_socket, group=None, plane=b.plane)
    return app_socket, dp


def test_the_service_loop_runs_c_while_a_descriptor_stays_ready(tmp_path: Path) -> None:
    """``Datapath.wait`` gives C a round even when Python's selector always has an
    event (a socket at EOF): the rx ring, which may hold the ACKs Python's connections
    wait for, is never left unread."""
    b = Bed()
    app_socket, dp = datapath_over(b, tmp_path)
    ready, gone = socket.socketpair()
    gone.close()  # ``ready`` is at EOF: readable for ever
    sel = selectors.DefaultSelector()
    try:
        sel.register(ready, selectors.EVENT_READ)
        client = b.peer.connect(IP_SVC, PORT)  # its SYN waits on the plane's port
        b.peer.flush()
        before = b.plane.stats()
        for _ in range(3):
            assert dp.wait(sel, 1.0)
        after = b.plane.stats()
        assert after["returns"] - before["returns"] == 3
        assert after["rx_frames"] - before["rx_frames"] == 1
        assert client.state is TcpState.SYN_SENT
    finally:
        sel.close()
        ready.close()
        dp.close()
        app_socket.close()


@pytest.mark.parametrize("tail", ["past the ring", "below what was taken"])
def test_an_impossible_index_resets_the_connection_and_nothing_else(bed: Claiming,
                                                                    tail: str) -> None:
    """The service trusts nothing the application writes: a tail past its ring, or one
    moved back below bytes the service took in place (its send ring borrows tx), is a
    reset of that connection, counted, and the service goes on."""
    _client, app = bed.connect()
    app.claim()
    bed.bed.run(3)
    assert app.verdict() == 1
    other_client, other = bed.connect()
    other.claim(2)
    bed.bed.run(3)
    assert other.verdict() == 1
    if tail == "past the ring":
        lib.dp_app_poke_tx_tail(app.chan, 1 << 30)
    else:
        # Nothing reaches the peer: the bytes stay taken, unacknowledged, in tx.
        bed.bed.impair = lambda frame, toward_plane: toward_plane
        assert app.write(b"x" * 1000) == 1000
        bed.bed.run(3)
        assert bed.stats()["chan_tx_borrowed"] >= 1
        lib.dp_app_poke_tx_tail(app.chan, 500)
        bed.bed.impair = None
    app.sock.send(b"B")  # its doorbell: the service looks
    bed.bed.run(20)
    st = bed.stats()
    assert st["chan_broken"] == 1
    assert "app_gone" in bed.bed.reasons  # handed to Python, which resets it
    # The other connection still works.
    got_app, got_client = exchange(bed, other_client, other, b"still", b"fine")
    assert (got_app, got_client) == (b"still", b"fine")



def python_delivered(b: Bed) -> tuple[TcpConnection, Pump, socket.socket]:
    """A connection Python delivers to a claiming application: the peer's end, the
    pump (its claim check and wait on), and the application's socket."""
    client, server = b.connect()
    ours, theirs = socket.socketpair()
    pump = Pump(server, ours, plane=b.plane,
                channel=ChannelState(claim_check=True, claim_wait=True,
                                     claim_by=b.clock.now + CLAIM_WAIT))
    return client, pump, theirs


def test_a_connection_python_delivers_takes_its_claim_in_the_pump() -> None:
    """A connection delivered by Python (its SYN went to Python: a full queue, a new
    listener) has its claim read by the pump; bytes and the peer's FIN that came
    before the claim wait for it, then go through the ring."""
    b = Bed()
    client, pump, theirs = python_delivered(b)
    client.send(b"before the claim")
    client.shutdown_write()  # its FIN, before the claim too
    b.peer.mark(client)

    def step() -> None:
        python_step(b, pump)

    for _ in range(5):
        step()
    assert read_all_nonblocking(theirs) == b""  # held for the claim
    app = App(theirs)
    app.claim(7)
    for _ in range(5):
        step()
    assert app.verdict() == 1 and pump.channel.chan > 0
    assert app.read() == b"before the claim"
    assert app.read() == b""  # the peer's FIN, after its bytes
    app.write(b"after")
    lib.dp_app_shutdown(app.chan)
    for _ in range(10):
        step()
    assert client.recv(100) == b"after" and client.eof
    pump.close()
    assert lib.dp_app_slot_done(app.chan) == 1
    app.close()


def test_a_pump_closed_before_its_claim_check_answers_the_claim() -> None:
    """A connection that ends before the pump read its application's first bytes (a
    non-blocking connect's handshake reset just after the claim was sent): the claim
    among them is refused at the close, as C's claim_refuse_unread does, so the
    application's slot is free again instead of waiting for ever for a verdict."""
    _client, pump, theirs = python_delivered(Bed())
    app = App(theirs)
    app.claim(9)
    assert app.verdict() == -errno.EAGAIN  # no answer yet
    pump.close()  # before any step read the claim
    assert app.verdict() == 0  # refused: a stream (whose service end is gone)
    assert lib.dp_app_slot_done(app.chan) == 1
    app.close()


@pytest.mark.parametrize("runner", ["python", "c"])
def test_bytes_waiting_in_tx_count_in_the_send_queue(tmp_path: Path, runner: str) -> None:
    """SIOCOUTQ and SIOCOUTQNSD (``Datapath.describe``) count the bytes an application
    wrote into its tx ring that the service has not taken yet, as a kernel socket
    counts its write queue, whether Python's pump or C runs the connection. Its socket's
    own unread bytes (doorbells, filler) are not payload and do not count."""
    b = Bed()
    app_socket, dp = datapath_over(b, tmp_path)
    client, pump, theirs = python_delivered(b)
    app = App(theirs)
    try:
        app.claim(5)
        for _ in range(5):
            python_step(b, pump)
        assert app.verdict() == 1 and pump.channel.chan > 0
        if runner == "c":
            assert b.plane.adopt(pump.conn, MAC_SVC, MAC_PEER, pump.sock.fileno(),
                                 pump.channel)
        written = app.write(b"w" * 3000)
        assert written == 3000
        info = dp.describe(pump.conn, pump)
        assert (info.outq, info.notsent) == (written, written)
        del client
    finally:
        app.close()
        pump.close()
        dp.close()
        app_socket.close()


def read_all_nonblocking(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    return read_all(sock)


def test_ring_flows_churning_through_a_small_table() -> None:
    """Slots of ended ring-mode flows are reused while the loop never sleeps (its polled
    list is never settled): each slot stays in the list once, whatever flows it held."""
    b = Claiming(max_flows=4)
    try:
        for i in range(12):
            client, app = b.connect()
            app.claim(i + 1)
            b.bed.run(3)
            assert app.verdict() == 1, i
            got_app, got_client = exchange(b, client, app, b"ping %d" % i, b"pong %d" % i)
            assert (got_app, got_client) == (b"ping %d" % i, b"pong %d" % i)
            lib.dp_app_shutdown(app.chan)
            client.close()
            b.bed.peer.mark(client)
            b.bed.run(20)
            app.sock.close()
            b.bed.clock.advance(b.bed.svc.config.time_wait + 1)  # TIME-WAIT ends
            b.bed.run(20)
            assert b.stats()["chan_polled"] <= 4  # each slot in the list at most once
        st = b.stats()
        assert st["chan_ring"] == 12 and st["chan_released"] == 12 and st["chan_broken"] == 0
    finally:
        b.close()


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=64), st.integers(0, 3), st.booleans())
def test_any_first_bytes_are_a_claim_only_when_well_formed(raw: bytes, tweak: int,
                                                           claimable: bool) -> None:
    """Hostile first bytes from an application, with a real arena's descriptor: the
    service never crashes, accepts only a well-formed claim of a slot on its grid, and
    bytes that are not a claim come back as payload (-ENOMSG)."""
    b = Bed(max_flows=4)
    ours, theirs = socket.socketpair()
    try:
        app = lib.dp_app_claim(theirs.fileno(), RING, RING, 1)  # an arena and a real claim
        assert app != ffi.NULL
        n, first, fd = b.plane.chan_recv(ours.fileno(), 64)
        assert n == 32 and fd >= 0
        if tweak == 0:
            msg = raw  # anything at all
        elif tweak == 1:
            msg = first[:4] + raw[:28].ljust(28, b"\0")  # the magic, then anything
        elif tweak == 2:
            msg = first[:24] + raw[:8].ljust(8, b"\0")  # a claim with any offset
        else:
            msg = first
        chan = b.plane.chan_first_bytes(msg, fd, claimable)
        os.close(fd)
        well_formed = len(msg) == 32 and msg[:4] == first[:4]
        if not well_formed:
            assert chan == -errno.ENOMSG  # payload, handed back untouched
        if chan > 0:
            assert claimable and msg[:24] == first[:24]
            offset = int.from_bytes(msg[24:32], "little")
            assert offset % 4096 == 0  # on the arena's grid
            b.plane.chan_release(chan)
        lib.dp_app_free(app)
    finally:
        ours.close()
        theirs.close()


# -- the arena's door ---------------------------------------------------------------------


def door_pair(bed: Claiming) -> list[tuple[TcpConnection, App]]:
    """Two ring-mode connections whose channels share one arena with a door, each having
    moved a little data (so the loop polls both), the frames sent so far taken away."""
    pairs = [bed.connect(), bed.connect()]
    pairs[0][1].claim(door=True)
    pairs[1][1].claim_sibling(pairs[0][1], claim_id=2)
    bed.bed.run(3)
    assert [app.verdict() for _, app in pairs] == [1, 1]
    assert bed.stats()["chan_doors"] == 1  # one arena, one door
    for i, (client, app) in enumerate(pairs):
        up, down = payload(20_000, 30 + i), payload(30_000, 40 + i)
        assert exchange(bed, client, app, up, down) == (up, down)
    bed.bed.run(20)
    bed.bed.port.pop_all()
    return pairs


def sent_payloads(bed: Claiming) -> set[bytes]:
    return {segment_of(f).payload for f in bed.bed.port.pop_all()} - {b""}


def test_a_door_wakes_the_loop_once_for_its_arena(bed: Claiming) -> None:
    """Before it sleeps the loop arms the arena's door, then its channels in door mode
    (``dp_settle``): the first write rings the door, which the loop watches, and the
    other channel's write finds the door taken and makes no system call; neither
    touches its connection's socket. The door's datagram makes the loop look at both."""
    (_, app1), (_, app2) = door_pair(bed)
    plane = bed.bed.plane._dp
    assert lib.dp_settle(plane) == 0 and bed.stats()["chan_polled"] == 0  # both armed
    assert app1.write(b"one") == 3 and app2.write(b"two") == 3
    assert (app1.rings(), app2.rings()) == ((0, 1), (0, 0))
    rings = bed.stats()["chan_door_rings"]
    lib.dp_round(plane, bed.bed.clock.now)  # the door is readable: the loop looks
    assert bed.stats()["chan_door_rings"] == rings + 1
    assert sent_payloads(bed) == {b"one", b"two"}
    # Armed again before the next sleep: the next write rings the door again.
    assert lib.dp_settle(plane) == 0
    assert app2.write(b"!") == 1
    assert app2.rings() == (0, 1)


def test_a_door_its_application_shuts_is_dropped_for_the_sockets(bed: Claiming) -> None:
    """An application that shuts the door's service end (it holds that file to send
    with its claims) would leave it readable for ever: the loop drops the door, looks
    at the arena's flows, and arms them on their sockets from then on; it does not spin
    on the door."""
    (_, app1), _ = door_pair(bed)
    plane = bed.bed.plane._dp
    assert lib.dp_settle(plane) == 0
    end = socket.socket(fileno=os.dup(lib.dp_app_door_fd(app1.chan, 1)))
    end.shutdown(socket.SHUT_RDWR)
    end.close()
    lib.dp_round(plane, bed.bed.clock.now)
    st = bed.stats()
    assert st["chan_doors_dropped"] == 1
    lib.dp_round(plane, bed.bed.clock.now)
    assert bed.stats()["chan_door_rings"] == st["chan_door_rings"]  # no longer watched
    assert lib.dp_settle(plane) == 0
    assert app1.write(b"by the socket") == 13
    assert app1.rings()[0] == 1  # a doorbell on its socket: the flag was a socket arm
    lib.dp_round(plane, bed.bed.clock.now)
    assert sent_payloads(bed) == {b"by the socket"}


def test_a_flow_python_runs_is_armed_on_its_socket_not_the_door(bed: Claiming) -> None:
    """The Python pump watches the connection's socket, not the door: a flow handed
    back leaves door mode, and its application's wake-ups go to the socket."""
    client, app, _, pump = python_ring_pump(bed, door=True)
    pump_turn(bed.bed, pump)  # nothing to move: it arms for bytes, on the socket
    assert app.write(b"to python") == 9
    bells, doors = app.rings()
    assert (bells, doors) == (1, 0)
    got = bytearray()
    for _ in range(50):
        python_step(bed.bed, pump)
        got += client.recv(1 << 16)
        if got == b"to python":
            break
    assert got == b"to python"


def test_an_idle_arena_is_unmapped_and_its_door_no_longer_watched(bed: Claiming) -> None:
    """Once no channel uses an arena, the loop's trim unmaps it (``dp_chan_trim``, every
    ten seconds in ``dp_run``), and its door leaves the epoll: the application still
    holds the door's file, so closing the service's copy alone would leave it watched."""
    client, app = bed.connect()
    app.claim(door=True)
    bed.bed.run(3)
    assert app.verdict() == 1
    plane = bed.bed.plane._dp
    assert lib.dp_chan_trim(plane) == 0  # in use
    both_eofs(bed, client, app, lambda: lib.dp_app_shutdown(app.chan))
    app.sock.close()
    bed.bed.run(20)
    assert bed.stats()["chan_released"] == 1
    assert lib.dp_chan_trim(plane) == 1
    assert bed.stats()["chan_arenas_trimmed"] == 1
    rings = bed.stats()["chan_door_rings"]
    door = socket.socket(fileno=os.dup(lib.dp_app_door_fd(app.chan, 0)))
    door.send(b"D")  # the application's end: a ring nobody listens to now
    door.close()
    lib.dp_round(plane, bed.bed.clock.now)
    assert bed.stats()["chan_door_rings"] == rings



def select_now(sock: socket.socket, event: int = selectors.EVENT_WRITE) -> bool:
    """What the application's poll would say of its descriptor now."""
    with selectors.DefaultSelector() as sel:
        sel.register(sock, event)
        return bool(sel.select(0))


def fill_tx(app: App, data: bytes, turn: Callable[[], object]) -> int:
    """The application writes ``data`` until a write finds tx full even after the
    service's ``turn``: its socket then holds filler. Bytes written."""
    written = 0
    for _ in range(20_000):
        n = app.write(data[written:written + RING])
        written += n
        turn()
        if n == 0 and app.write(data[written:written + 1]) == 0:
            return written
        written += n == 0  # the one byte went in
    raise AssertionError("tx never stayed full")


def holding(bed: Claiming) -> list[bytes]:
    """From now on the frames toward the peer are held, not sent: the list they go to
    (to hand to the peer later, late but not lost)."""
    held: list[bytes] = []

    def hold(frame: bytes, toward_plane: bool) -> bool:
        if not toward_plane:
            held.append(frame)
        return toward_plane

    bed.bed.impair = hold
    return held


def finish(bed: Claiming, client: TcpConnection, app: App,
           up: tuple[bytes, int, bytearray], down: tuple[bytes, int],
           step: Callable[[], object]) -> bytes:
    """Both directions to their end, from where they stand: ``up`` (the client's bytes,
    how many it sent, what the application read of them: extended in place), ``down``
    (the application's, how many it wrote). What the client got."""
    data, sent, got_app = up
    want, written = down
    got_down = bytearray()
    for _ in range(20_000):
        if sent < len(data):
            sent += client.send(data[sent:sent + 65536])
            bed.bed.peer.mark(client)
        written += app.write(want[written:written + 8192])
        got_app += app.read() or b""
        got_down += client.recv(1 << 20)
        step()
        if len(got_app) == len(data) and len(got_down) == len(want):
            break
    return bytes(got_down)


def test_c_does_not_wake_a_blocked_writer_with_rx_full(bed: Claiming) -> None:
    """docs/channels.md, "A writer blocked with rx full". C runs the flow; the peer's
    bytes fill rx and C's receive ring; nothing C sends reaches the peer (its frames are
    held, and time stands still, so no timer hands the flow to Python), so its send
    ring fills, then tx, then the writer's socket with filler. C stops watching that
    socket (the arena's door brings rx room): its rounds drain no filler, so the writer
    is not told of room that is not there. Before, each round drained the filler, and
    the writer filled again, the two spinning. Once the frames go on, every byte
    arrives, hash-checked."""
    client, app = bed.connect()
    app.claim(door=True)
    bed.bed.run(3)
    assert app.verdict() == 1
    up, down = payload(300_000, 21), payload(2 << 20, 22)
    sent_up = client.send(up)
    bed.bed.peer.mark(client)
    bed.bed.run(20)

    def still() -> None:
        bed.bed.step(0.0)

    held = holding(bed)
    written = fill_tx(app, down, still)
    tcb = bed.tcb(client)
    assert tcb.app_fd >= 0 and tcb.write_blocked  # C's, its send ring full
    assert not select_now(app.sock), "the filler did not make the socket unwritable"
    rings = bed.stats()["chan_socket_rings"]
    for _ in range(20):
        still()
    assert not select_now(app.sock), "the service drained a blocked writer's filler"
    assert bed.stats()["chan_socket_rings"] == rings
    # rx room is still heard: what C holds goes on into rx as the application reads.
    got_app = bytearray()
    for _ in range(40):
        got_app += app.read() or b""
        still()
    assert len(got_app) > 2 * RING
    assert app.rings()[0] == 0  # no doorbell on its socket
    bed.bed.peer_nic.inbox.extend(held)  # late, not lost
    bed.bed.impair = bed._watch
    got_down = finish(bed, client, app, (up, sent_up, got_app), (down, written),
                      bed.bed.step)
    assert hashlib.sha256(got_app).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(got_down).digest() == hashlib.sha256(down).digest()


def test_a_pump_sleeps_on_the_door_while_its_writer_is_blocked(bed: Claiming) -> None:
    """The same state in a flow Python runs (as after a hand-back for the peer's zero
    window): TCP takes nothing from tx, rx is full and TCP holds more for it. The pump
    arms rx room on the arena's door and stops watching the socket (``wanted`` 0)
    without draining it, so the writer stays unwritable; the application's read rings
    the door, which wakes Python (DP_WAKE_DOOR), and the pump moves on. Before, it
    drained the filler each time the socket woke it, and the writer filled again."""
    client, app, conn, pump = python_ring_pump(bed, door=True)
    plane = bed.bed.plane._dp
    up, down = payload(300_000, 23), payload(2 << 20, 24)
    sent_up = client.send(up)
    bed.bed.peer.mark(client)
    for _ in range(20):
        python_step(bed.bed, pump)
    assert conn.recv_queue, "TCP holds nothing more for rx"

    def still() -> None:
        bed.bed.step(0.0)
        pump_turn(bed.bed, pump)

    held = holding(bed)
    written = fill_tx(app, down, still)
    assert not conn.writable and not select_now(app.sock)
    assert pump.service() is False
    assert pump.door_waits and pump.wanted() == 0
    assert not select_now(app.sock), "the pump drained a blocked writer's filler"
    bells, doors = app.rings()
    got_app = bytearray(app.read() or b"")
    assert got_app and app.rings() == (bells, doors + 1)  # the door, not its socket
    assert lib.dp_round(plane, bed.bed.clock.now) & 16  # DP_WAKE_DOOR
    pump_turn(bed.bed, pump)  # rx room: TCP's bytes go on
    more = app.read()
    assert more, "the door's wake-up moved nothing"
    got_app += more
    assert not select_now(app.sock)
    bed.bed.peer_nic.inbox.extend(held)  # late, not lost
    bed.bed.impair = bed._watch
    got_down = finish(bed, client, app, (up, sent_up, got_app), (down, written),
                      lambda: python_step(bed.bed, pump))
    assert hashlib.sha256(got_app).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(got_down).digest() == hashlib.sha256(down).digest()


def test_a_door_waiting_pump_hears_its_application_close(bed: Claiming) -> None:
    """The pump asleep on the door does not watch its socket for bytes, but a close
    still counts at once: with rx unread it is a reset (RFC 1122 §4.2.2.13), which
    must not wait for the peer to open its window."""
    client, app, conn, pump = python_ring_pump(bed, door=True)
    client.send(payload(300_000, 25))
    bed.bed.peer.mark(client)
    for _ in range(20):
        python_step(bed.bed, pump)
    bed.bed.impair = lambda frame, toward_plane: toward_plane  # nothing reaches the peer

    def still() -> None:
        bed.bed.step(0.0)
        pump_turn(bed.bed, pump)

    fill_tx(app, payload(2 << 20, 26), still)
    assert pump.service() is False and pump.door_waits
    app.close()
    bed.apps.remove(app)
    pump.service()
    assert pump.app_gone and not pump.door_waits
    assert conn.state is TcpState.CLOSED  # reset: it closed with rx unread
