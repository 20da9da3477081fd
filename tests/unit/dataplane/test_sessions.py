"""OP_CONNECT answered in C (``sessions.c``): the data plane's loop accepts the
service's application sessions and answers a non-blocking connect alone once the
control plane has opened a connection to that destination itself; everything else
reaches the control plane as it came. Over the in-memory bed (a Python peer engine),
at explicit times, through a real ``Datapath`` and real unix sessions."""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from joyride.dataplane.membed import IP_PEER, IP_SVC, MAC_PEER, MAC_SVC, PORT, Bed, read_all
from joyride.dataplane.plane import WAKE_SESSION, ffi, lib
from joyride.engine.network import StaticNetwork
from joyride.engine.nic import MemoryNic
from joyride.service import apps, protocol
from joyride.service.datapath import CONNECT_ROUTE_TTL, Datapath
from joyride.steer.ports import PortSet
from joyride.tcp.connection import TcpConnection
from joyride.tcp.listener import Listener
from joyride.wire.frame import parse_frame
from joyride.wire.tcp import TcpFlags

pytestmark = pytest.mark.skipif(lib is None, reason="the C data plane is not built")

PEER_PORT = 9090


class Service:
    """A ``Datapath`` over the bed, its loop taking the application sessions as the
    service's ``register`` makes it (``_connects_in_c``, ``sessions_listen``)."""

    def __init__(self, tmp_path: Path, ephemeral: PortSet) -> None:
        self.bed = b = Bed()
        self.app_socket = apps.listen_app_socket(tmp_path / "app.sock", None)
        self.dp = Datapath([MemoryNic()], StaticNetwork("svc0", MAC_SVC, frozenset({IP_SVC}),
                                                        {IP_PEER: MAC_PEER}),
                           ports=PortSet([PORT]), ephemeral=ephemeral,
                           app_socket=self.app_socket, group=None, plane=b.plane,
                           clock=b.clock)
        self.dp._connects_in_c()
        b.plane.sessions_listen(self.app_socket.fileno())
        self.sessions: list[socket.socket] = []

    def ask(self, request: protocol.Request, *, send: bool = True) -> socket.socket:
        session = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        session.settimeout(5)
        session.connect(self.app_socket.getsockname())
        if send:
            session.send(request.encode())
        self.sessions.append(session)
        return session

    def round(self) -> int:
        """One round of the loop; what it left to the control plane, answered there."""
        woke = self.bed.plane.round(self.bed.clock.now)
        if woke & WAKE_SESSION:
            self.dp._sessions_from_c()
        return woke

    def connect(self, port: int = PEER_PORT, flags: int = protocol.FLAG_NONBLOCK
                ) -> socket.socket:
        return self.ask(protocol.Request(protocol.OP_CONNECT, IP_PEER, port, flags=flags))

    def stats(self) -> dict[str, int]:
        return self.bed.plane.stats()

    def accepted(self, listener: Listener, count: int) -> list[TcpConnection]:
        """The bed's steps until the peer's listener accepted ``count`` connections."""
        servers: list[TcpConnection] = []
        for _ in range(100):
            self.bed.step()
            server = self.bed.peer.accept(listener)
            if server is not None:
                servers.append(server)
            if len(servers) == count:
                break
        return servers

    def close(self) -> None:
        for session in self.sessions:
            session.close()
        self.bed.plane.sessions_listen(-1)
        self.app_socket.close()


def answer(session: socket.socket) -> tuple[protocol.Reply, socket.socket | None]:
    msg, fds, _flags, _addr = socket.recv_fds(session, 1024, 1)
    conn = socket.socket(fileno=fds[0]) if fds else None
    return protocol.Reply.decode(msg), conn


def name_of(conn: socket.socket) -> str:
    return conn.getpeername().lstrip(b"\0").decode()


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Service]:
    s = Service(tmp_path, PortSet(range(60000, 60004)))
    try:
        yield s
    finally:
        s.close()


def test_the_first_connect_to_a_destination_is_python_s_the_next_are_c_s(
        svc: Service) -> None:
    """The first connect goes to the control plane, which opens it in C and tells the
    route; the next one C answers alone, with what the control plane would have: the
    source address, a free ephemeral port, the engine's ISS and timestamp offset, a
    socket named for the 4-tuple and owned by the caller. Its bytes then go both ways
    (by hash) through C."""
    listener = svc.bed.peer.listen(PEER_PORT)
    toward_peer: list[bytes] = []
    svc.bed.impair = lambda frame, toward_plane: toward_plane or not toward_peer.append(frame)
    first = svc.connect()
    assert svc.round() & WAKE_SESSION
    reply1, conn1 = answer(first)
    assert reply1.status == 0 and conn1 is not None
    assert svc.dp.counters["connect_in_c"] == 1
    assert svc.stats()["sessions_python"] == 1 and svc.stats()["sessions_answered"] == 0

    second = svc.connect()
    assert not svc.round() & WAKE_SESSION
    reply2, conn2 = answer(second)
    assert reply2.status == 0 and conn2 is not None
    assert svc.stats()["sessions_answered"] == 1 and svc.dp.counters["connect_in_c"] == 1
    key = (reply2.local_ip, reply2.local_port, reply2.remote_ip, reply2.remote_port)
    assert key[0] == IP_SVC and key[2:] == (IP_PEER, PEER_PORT)
    assert 60000 <= key[1] < 60004 and key[1] != reply1.local_port
    parsed = protocol.parse_name(name_of(conn2))
    assert parsed is not None and parsed.key() == key
    tcb = svc.bed.plane.peek_key(key)
    assert tcb is not None and tcb.tcp_state == lib.DP_SYN_SENT
    assert tcb.active and tcb.app_uid == os.getuid()
    # engine.active_open's numbers for the same 4-tuple at the same time.
    now = svc.bed.clock.now
    engine = svc.dp.engine
    assert int(tcb.iss) == int(engine._isn.isn(*key, now))
    assert int(tcb.ts_offset) == engine._ts_offsets.offset(key[0], 0, key[2], 0)
    servers = svc.accepted(listener, 2)
    server = next(s for s in servers if s.local_port == PEER_PORT and s.remote_port == key[1])
    segs = [parse_frame(f).tcp for f in toward_peer]
    assert next((s.flags, int(s.seq)) for s in segs if s is not None and s.src_port == key[1]) \
        == (TcpFlags.SYN, int(tcb.iss))
    assert svc.bed.plane.peek_key(key).tcp_state == lib.DP_ESTABLISHED
    data = os.urandom(20000)
    conn2.setblocking(True)
    conn2.sendall(data)
    got = b""
    for _ in range(400):
        svc.bed.step()
        got += server.recv()
        if len(got) == len(data):
            break
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    back = os.urandom(30000)
    conn2.setblocking(False)
    got = b""
    sent = 0
    for _ in range(400):
        if sent < len(back):
            sent += server.send(back[sent:])
            svc.bed.peer.mark(server)
        svc.bed.step()
        got += read_all(conn2)
        if len(got) == len(back):
            break
    assert hashlib.sha256(got).digest() == hashlib.sha256(back).digest()
    conn1.close()
    conn2.close()


def test_a_route_expires_and_the_control_plane_checks_the_destination_again(
        svc: Service) -> None:
    first = svc.connect()
    svc.round()
    answer(first)[1].close()  # type: ignore[union-attr]
    svc.bed.clock.advance(CONNECT_ROUTE_TTL + 0.01)
    again = svc.connect()
    assert svc.round() & WAKE_SESSION  # Python's again ...
    reply, conn = answer(again)
    assert reply.status == 0 and conn is not None
    assert svc.stats()["sessions_python"] == 2 and svc.dp.counters["connect_in_c"] == 2
    conn.close()
    third = svc.connect()  # ... which told the route again
    assert not svc.round() & WAKE_SESSION
    reply, conn = answer(third)
    assert reply.status == 0 and conn is not None
    conn.close()


def test_ports_the_engine_uses_are_left_alone(tmp_path: Path) -> None:
    """C picks no port the control plane's engine uses (a connection, a listener, a
    TIME-WAIT record: engine.port_watch), and hands a connect over when no port is free;
    a port the engine lets go is C's to use again."""
    s = Service(tmp_path, PortSet([60000, 60001, 60002]))
    try:
        engine = s.dp.engine
        engine.listen(60002)
        held = engine.connect(IP_PEER, PEER_PORT, local_port=60000)
        first = s.connect()
        s.round()
        reply, conn1 = answer(first)
        assert reply.status == 0 and reply.local_port == 60001  # the engine's pick
        # Every port is taken for that destination: the control plane answers.
        second = s.connect()
        assert s.round() & WAKE_SESSION
        reply, conn = answer(second)
        assert reply.status == errno.EADDRNOTAVAIL and conn is None
        assert s.stats()["sessions_answered"] == 0
        held.abort()
        engine.mark(held)
        engine.flush()
        assert (IP_SVC, 60000, IP_PEER, PEER_PORT) not in engine.connections
        third = s.connect()
        assert not s.round() & WAKE_SESSION
        reply, conn3 = answer(third)
        assert reply.status == 0 and reply.local_port == 60000
        assert s.stats()["sessions_answered"] == 1
        for c in (conn1, conn3):
            assert c is not None
            c.close()
    finally:
        s.close()


def test_what_c_does_not_answer_reaches_the_control_plane_as_it_came(
        svc: Service) -> None:
    """A blocking connect, another request, a malformed one: each goes to the control
    plane with the bytes C read, and is answered (or counted) there as before. A
    session whose request comes late waits in C, then is answered."""
    first = svc.connect()
    svc.round()
    answer(first)[1].close()  # type: ignore[union-attr]
    info = svc.ask(protocol.Request(protocol.OP_GETINFO, bytes(4), 0, "joyride/c/x"))
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    raw.connect(svc.app_socket.getsockname())
    raw.send(b"JRD1" + bytes(protocol.REQUEST.size - 4))  # a bad magic
    svc.sessions.append(raw)
    before = svc.dp.counters["app_bad_request"]
    svc.round()
    reply, _conn = answer(info)
    assert reply.op == protocol.OP_GETINFO and reply.status == errno.EINVAL
    assert svc.dp.counters["app_bad_request"] == before + 1
    blocking = svc.connect(flags=0)
    svc.round()
    assert svc.dp.connecting  # a blocking connect: the engine's, answered once it is up
    late = svc.ask(protocol.Request(protocol.OP_CONNECT, IP_PEER, PEER_PORT,
                                    flags=protocol.FLAG_NONBLOCK), send=False)
    answered = svc.stats()["sessions_answered"]
    svc.round()
    assert svc.stats()["sessions_answered"] == answered  # accepted; its request waits
    assert svc.stats()["sessions_waited"] == 1
    late.send(protocol.Request(protocol.OP_CONNECT, IP_PEER, PEER_PORT,
                               flags=protocol.FLAG_NONBLOCK).encode())
    svc.round()
    assert svc.stats()["sessions_answered"] == answered + 1
    reply, conn = answer(late)
    assert reply.status == 0 and conn is not None
    conn.close()
    assert blocking in svc.sessions


def test_a_refused_connect_c_answered_fails_with_its_own_name(svc: Service) -> None:
    """Nobody listens: the RST ends the flow C answered, and its ECONNREFUSED waits for
    one OP_GETINFO of its owner under the name of the socket the application held."""
    first = svc.connect()
    svc.round()
    conn1 = answer(first)[1]
    assert conn1 is not None
    second = svc.connect()
    svc.round()
    reply, conn2 = answer(second)
    assert reply.status == 0 and conn2 is not None and svc.stats()["sessions_answered"] == 1
    name = name_of(conn2)
    svc.bed.run(5)
    assert svc.stats()["connect_refused"] == 2
    assert conn2.recv(10) == b""
    other = apps.Credentials(os.getpid(), os.getuid() + 4242, os.getgid())
    ask = protocol.Request(protocol.OP_GETINFO, bytes(4), 0, name)
    assert svc.dp.get_info(ask, other)[0] == errno.EPERM
    mine = apps.Credentials(os.getpid(), os.getuid(), os.getgid())
    status, info, _conn = svc.dp.get_info(ask, mine)
    assert status == 0 and info is not None and info.so_error == errno.ECONNREFUSED
    assert svc.dp.get_info(ask, mine)[0] == errno.ENOTCONN  # once
    conn1.close()
    conn2.close()


def test_a_connection_c_opened_stays_its_owner_s_in_python(svc: Service) -> None:
    """C keeps the owner of an active open (dp_tcb.app_uid): when the control plane
    takes the connection (an option, a question), its pump is the owner's, who may go
    on asking; another user may not."""
    listener = svc.bed.peer.listen(PEER_PORT)
    owner = apps.Credentials(os.getpid(), 4321, 4321)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    request = protocol.Request(protocol.OP_CONNECT, IP_PEER, PEER_PORT,
                               flags=protocol.FLAG_NONBLOCK)
    try:
        assert svc.dp._connect_in_c(ours, request, owner, False)
        reply, conn = answer(theirs)
        assert reply.status == 0 and conn is not None
        assert len(svc.accepted(listener, 1)) == 1
        ask = protocol.Request(protocol.OP_GETINFO, bytes(4), 0, name_of(conn))
        other = apps.Credentials(os.getpid(), 4242, 4242)
        assert svc.dp.get_info(ask, other)[0] == errno.ENOTCONN  # C's: not the asker's
        for _ in range(2):  # the first takes it from C; the second asks Python's pump
            status, info, taken = svc.dp.get_info(ask, owner)
            assert status == 0 and info is not None and taken is not None
        assert svc.dp.pumps[taken].uid == 4321
        assert svc.dp.get_info(ask, other)[0] == errno.EPERM
        conn.close()
    finally:
        ours.close()
        theirs.close()


def test_sessions_c_holds_end_with_the_service(svc: Service) -> None:
    """A session accepted before its request came gets an end, not silence, when the
    service stops."""
    first = svc.connect()
    svc.round()
    answer(first)[1].close()  # type: ignore[union-attr]
    late = svc.ask(protocol.Request(protocol.OP_CONNECT, IP_PEER, PEER_PORT), send=False)
    svc.round()
    assert svc.stats()["sessions_waited"] == 1
    svc.dp.close()
    assert late.recv(64) == b""


def test_an_answer_nobody_takes_ends_the_connection(svc: Service) -> None:
    """The application gave up before the answer: C counts it, and the connection it
    opened ends without a byte sent (its end of the pair was closed)."""
    listener = svc.bed.peer.listen(PEER_PORT)
    first = svc.connect()
    svc.round()
    answer(first)[1].close()  # type: ignore[union-attr]
    second = svc.connect()
    second.close()
    svc.sessions.remove(second)
    svc.round()
    assert svc.stats()["connect_abandoned"] == 1 and svc.stats()["sessions_answered"] == 1
    servers = svc.accepted(listener, 2)
    assert len(servers) == 2
    svc.bed.run(100)  # their FINs
    for server in servers:  # both closed before a byte: a FIN, nothing else
        assert server.recv() == b"" and server.eof
    svc.bed.peer.unlisten(listener)


# -- the request C reads: protocol.Request.decode's rule ---------------------------------


def c_reads(raw: bytes) -> tuple[bytes, int, int] | None:
    ip = ffi.new("uint8_t[16]")
    ipv6 = ffi.new("uint8_t *")
    port = ffi.new("uint16_t *")
    flags = ffi.new("uint16_t *")
    if not lib.dp_connect_request(raw, len(raw), ip, ipv6, port, flags):
        return None
    wide = bytes(ffi.buffer(ip, 16))
    return (wide if ipv6[0] else wide[:4]), int(port[0]), int(flags[0])


def python_reads(raw: bytes) -> tuple[bytes, int, int] | None:
    """What _start_connect would take to C: a decoded non-blocking OP_CONNECT of an
    explicit family (family 0, which decode reads as IPv4, C leaves to Python)."""
    try:
        request = protocol.Request.decode(raw)
    except protocol.ProtocolError:
        return None
    family = struct.unpack_from("<H", raw, 8)[0]
    if (request.op != protocol.OP_CONNECT or not request.flags & protocol.FLAG_NONBLOCK
            or request.port == 0 or family == 0):
        return None
    return request.ip, request.port, request.flags


def mutated(raw: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(raw)
    for where, value in edits:
        if out:
            out[where % len(out)] = value
    return bytes(out)


requests = st.builds(
    lambda ip, port, flags, name: protocol.Request(protocol.OP_CONNECT, ip, port, name,
                                                   flags).encode(),
    st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16)),
    st.integers(0, 65535), st.integers(0, 7), st.text("abc/:.", max_size=20))


@settings(max_examples=400, deadline=None)
@given(raw=st.one_of(
    requests,
    st.builds(mutated, requests, st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)),
                                          max_size=3)),
    st.binary(max_size=140)))
def test_c_takes_a_request_exactly_when_the_control_plane_would(raw: bytes) -> None:
    assert c_reads(raw) == python_reads(raw)
