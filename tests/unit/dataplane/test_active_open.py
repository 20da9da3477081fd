"""Active opens the C data plane runs itself (``dp_connect``): the SYN and the
handshake as ``TcpConnection.connect`` and ``_receive_syn_sent`` make them, then data
both ways and the close in C; a refused or unanswered connect fails with the errno
SO_ERROR reports; hostile answers are dropped, counted, or reset. At explicit times,
over the in-memory bed (a Python peer engine), with bytes checked by hash."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_channels import datapath_over

from joyride.dataplane.membed import IP_PEER, MAC_PEER, MAC_SVC, Bed, read_all
from joyride.dataplane.plane import ffi, lib
from joyride.engine.engine import EngineError
from joyride.service import apps, protocol
from joyride.service.datapath import Datapath
from joyride.steer.ports import PortSet
from joyride.tcp.config import TcpConfig
from joyride.tcp.connection import TcpConnection
from joyride.tcp.state import TcpState
from joyride.wire.ethernet import EthernetHeader
from joyride.wire.frame import build_frame, parse_frame
from joyride.wire.ipv4 import Ipv4Header
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpFlags, TcpSegment

pytestmark = pytest.mark.skipif(lib is None, reason="the C data plane is not built")

PEER_PORT = 9090
UID = 4321  # the application's user, as OP_CONNECT's credentials give it
HOT_FIELDS = ("rcv_nxt", "rcv_adv", "last_ack_rcv_nxt", "ts_recent", "rcv_mss", "cfg_mss",
              "rcv_cap", "rcv_slack", "rcv_shift", "snd_shift", "ts_ok", "snd_una",
              "snd_nxt", "snd_wnd", "max_snd_wnd", "snd_wl1", "snd_wl2", "smss", "ts_offset",
              "srtt", "rttvar", "base_rto", "rto_backoff", "rtt_samples", "retries",
              "cwnd", "ssthresh", "cc_iw")


class Active:
    """A bed whose C plane connects to a listener of the Python peer."""

    def __init__(self, config: TcpConfig | None = None,
                 peer_config: TcpConfig | None = None) -> None:
        self.bed = Bed(config, peer_config)
        self.listener = self.bed.peer.listen(PEER_PORT)
        self.toward_peer: list[TcpSegment] = []
        self.toward_plane: list[bytes] = []
        self.bed.impair = self._watch
        self.drop_toward_plane = False
        self.drop_toward_peer = False

    def _watch(self, frame: bytes, toward_plane: bool) -> bool:
        if toward_plane:
            self.toward_plane.append(frame)
            return not self.drop_toward_plane
        seg = parse_frame(frame).tcp
        assert seg is not None
        self.toward_peer.append(seg)
        return not self.drop_toward_peer

    def connect(self, claims: bool = False) -> tuple[tuple[bytes, int, bytes, int], int,
                                                      socket.socket]:
        """C's connect to the peer's listener: (4-tuple, ISS, the application's end)."""
        key, iss, ts_offset = self.bed.svc.active_open(IP_PEER, PEER_PORT, self.held)
        _handle, app_end = self.bed.plane.connect(
            self.bed.svc.config, key, MAC_SVC, MAC_PEER, int(iss), ts_offset, uid=UID,
            claims=claims, now=self.bed.clock.now)
        app = socket.socket(fileno=app_end)
        app.setblocking(False)
        # C's end is bound to the name that spells the 4-tuple, as a delivery's is.
        parsed = protocol.parse_name(app.getpeername().lstrip(b"\0").decode())
        assert parsed is not None and parsed.key() == key
        return key, int(iss), app

    def held(self, key: tuple[bytes, int, bytes, int]) -> bool:
        return self.bed.plane.peek_key(key) is not None

    def tcb(self, key: tuple[bytes, int, bytes, int]) -> object:
        return self.bed.plane.peek_key(key)

    def accept(self) -> TcpConnection:
        for _ in range(50):
            self.bed.step()
            server = self.bed.peer.accept(self.listener)
            if server is not None:
                return server
        raise AssertionError("the peer accepted nothing")

    def stats(self) -> dict[str, int]:
        return self.bed.plane.stats()


@pytest.fixture
def active() -> Iterator[Active]:
    yield Active()


@settings(max_examples=40, deadline=None)
@given(mss=st.sampled_from([536, 1000, 1460]), wscale=st.booleans(),
       timestamps=st.booleans(), sack=st.booleans(), ours=st.tuples(*[st.booleans()] * 3),
       rtt=st.sampled_from([1e-4, 3e-3]))
def test_the_handshake_matches_python(mss: int, wscale: bool, timestamps: bool, sack: bool,
                                      ours: tuple[bool, bool, bool], rtt: float) -> None:
    """C's SYN is TcpConnection.connect's, for whatever our configuration offers; after
    the peer's SYN-ACK, C's TCB is the one TcpConnection._receive_syn_sent makes of the
    same segment at the same time."""
    peer_config = TcpConfig(mss=mss, window_scaling=wscale, timestamps=timestamps,
                            sack=sack, nodelay=True)
    config = TcpConfig(nodelay=True, window_scaling=ours[0], timestamps=ours[1],
                       sack=ours[2])
    a = Active(config, peer_config)
    bed = a.bed
    t0 = bed.clock.now
    key, _iss, app = a.connect()
    lip, lport, rip, rport = key
    python = TcpConnection.connect(bed.svc.config, lip, lport, rip, rport, t0,
                                   bed.svc._isn,
                                   ts_offset=bed.svc._ts_offsets.offset(lip, 0, rip, 0))
    bed.step(rtt / 2)  # C's SYN to the peer, whose SYN-ACK waits on C's port
    syn = a.toward_peer[0]
    assert [syn] == python.segments_to_send(t0)
    synack = parse_frame(a.toward_plane[0]).tcp
    assert synack is not None and synack.flags & TcpFlags.SYN and synack.flags & TcpFlags.ACK
    t1 = bed.clock.now + rtt / 2  # it reaches C half an RTT later, and Python with it
    bed.clock.now = t1
    bed.plane.round(t1)
    python.receive(synack, t1)
    assert python.state is TcpState.ESTABLISHED
    # The handshake's third segment, the same from both.
    assert [parse_frame(f).tcp for f in bed.port.pop_all()] == python.segments_to_send(t1)
    mine = ffi.new("struct dp_tcb *")
    assert python.export_hot(mine) is not None
    theirs = a.tcb(key)
    assert theirs.tcp_state == lib.DP_ESTABLISHED and theirs.born == 1
    for name in HOT_FIELDS:
        assert getattr(theirs, name) == getattr(mine, name), name
    assert theirs.sack_ok == int(python._sack_ok)
    assert theirs.ws_ok == int(python._negotiated.window_scaling)
    assert a.stats()["connect_established"] == 1
    app.close()


def close_from_app(active: Active, key: tuple[bytes, int, bytes, int], app: socket.socket,
                   server: TcpConnection) -> None:
    """The application closes first, then the peer: C's flow ends in TIME-WAIT."""
    app.close()
    active.bed.run(10)
    assert server.eof
    server.close()
    active.bed.peer.mark(server)
    active.bed.run(10)
    assert active.tcb(key).tcp_state == lib.DP_TIME_WAIT


def test_data_both_ways_and_the_close_all_in_c(active: Active) -> None:
    """After the handshake the flow is a born flow: a request up and a reply down,
    checked by hash, then the application closes first and C's TIME-WAIT holds the
    4-tuple (so the port is not given out again) until 2*MSL ends."""
    key, _iss, app = active.connect()
    server = active.accept()
    request, reply = os.urandom(70_000), os.urandom(400_000)
    sent = 0
    got_up, got_down = b"", b""
    for _ in range(5000):
        if sent < len(request):
            with contextlib.suppress(BlockingIOError):
                sent += app.send(request[sent:])
        active.bed.step()
        got_up += server.recv()
        if len(got_up) == len(request):
            break
    assert hashlib.sha256(got_up).digest() == hashlib.sha256(request).digest()
    sent = 0
    for _ in range(5000):
        if sent < len(reply):
            sent += server.send(reply[sent:])
            active.bed.peer.mark(server)
        active.bed.step()
        got_down += read_all(app)
        if len(got_down) == len(reply):
            break
    assert hashlib.sha256(got_down).digest() == hashlib.sha256(reply).digest()
    close_from_app(active, key, app, server)
    st = active.stats()
    assert st["declined"] == 0 and active.bed.reasons == []  # nothing for Python
    assert st["connects"] == 1 and st["connect_established"] == 1
    assert active.tcb(key).tcp_state == lib.DP_TIME_WAIT
    assert active.held(key)  # the port stays taken through TIME-WAIT
    active.bed.clock.advance(active.bed.svc.config.time_wait + 1)
    active.bed.step()
    assert not active.held(key)


def close_first(active: Active) -> tuple[bytes, int, bytes, int]:
    """A connection C opened whose application closes first: C's flow ends in TIME-WAIT.
    Returns its 4-tuple."""
    key, _iss, app = active.connect()
    close_from_app(active, key, app, active.accept())
    return key


@pytest.mark.parametrize("timestamps", [True, False])
def test_a_time_wait_is_taken_over_a_second_after_its_last_timestamp(timestamps: bool) -> None:
    """dp_tw_reuse (Linux's tcp_tw_reuse=1): a new outgoing connection may take a
    TIME-WAIT 4-tuple over once its last timestamp is DP_TW_REUSE_AFTER old, and only if
    timestamps were on (the peer's PAWS tells the incarnations apart); then the 4-tuple
    connects again, from the same port, with its ISS past the old SND.NXT. The engine's
    port choice takes it over as Datapath._held_in_c does (``busy``, take_over)."""
    active = Active(TcpConfig(timestamps=timestamps))
    key = close_first(active)
    plane, clock, engine = active.bed.plane, active.bed.clock, active.bed.svc
    old_snd_nxt = int(active.tcb(key).snd_nxt)
    assert plane.reuse_time_wait(key, clock.now) is None  # its last timestamp is fresh
    clock.advance(lib.DP_TW_REUSE_AFTER - 0.01)
    assert plane.reuse_time_wait(key, clock.now) is None
    clock.advance(0.02)
    active.bed.step()
    assert active.held(key)  # 2*MSL is far: TIME-WAIT still holds it

    def busy(other: tuple[bytes, int, bytes, int]) -> bool:  # every other port is busy
        if other != key:
            return True
        iss = plane.reuse_time_wait(other, clock.now)
        if iss is None:
            return True
        engine.take_over(other, Seq(iss))
        return False

    if not timestamps:
        with pytest.raises(EngineError):
            engine.active_open(IP_PEER, PEER_PORT, busy)
        assert active.held(key) and active.stats()["tw_taken_over"] == 0
        return
    again, iss, ts_offset = engine.active_open(IP_PEER, PEER_PORT, busy)
    assert again == key and not active.held(key)
    assert int(iss) == (old_snd_nxt + 65535 + 2) % 2**32
    assert active.stats()["tw_taken_over"] == 1
    _handle, app_end = plane.connect(engine.config, key, MAC_SVC, MAC_PEER, int(iss),
                                     ts_offset, uid=UID, claims=False, now=clock.now)
    os.close(app_end)
    assert active.accept() is not None  # the peer takes the new incarnation
    assert active.stats()["connect_established"] == 2


def test_bytes_and_a_close_written_before_the_answer_follow_it(active: Active) -> None:
    """What the application writes, and its shutdown, while the SYN is unanswered go
    once the handshake is done (the SYN-ACK lost once: the SYN is sent again)."""
    active.drop_toward_plane = True
    key, _iss, app = active.connect()
    app.sendall(b"early bytes")
    app.shutdown(socket.SHUT_WR)
    active.bed.run(20)
    assert active.tcb(key).tcp_state == lib.DP_SYN_SENT
    # Nothing but the SYN left while it was unanswered: no byte, no FIN, no ACK.
    assert [int(s.flags) for s in active.toward_peer] == [int(TcpFlags.SYN)]
    active.drop_toward_plane = False
    active.bed.clock.advance(1.1)  # the SYN's RTO (1 s)
    server = active.accept()
    active.bed.run(10)
    assert server.recv() == b"early bytes" and server.eof
    assert active.stats()["syn_retransmits"] == 1
    assert active.tcb(key).tcp_state == lib.DP_FIN_WAIT_2
    app.close()


def test_a_refused_connect_fails_with_econnrefused(active: Active) -> None:
    """A RST that acknowledges the SYN (nobody listens): the flow ends, the
    application's end closes, and the failure waits for SO_ERROR's question."""
    active.bed.peer.unlisten(active.listener)
    key, _iss, app = active.connect()
    name = app.getpeername().lstrip(b"\0").decode()
    active.bed.run(5)
    assert not active.held(key)
    # Filed under the socket the application held, for its user.
    assert [(f.key, f.err, f.uid, f.name) for f in active.bed.plane.failures()] == \
        [(key, errno.ECONNREFUSED, UID, name)]
    assert active.bed.plane.failures() == []  # once
    assert app.recv(10) == b""  # the service let go: the application sees the end
    st = active.stats()
    assert st["connect_refused"] == 1 and st["born_live"] == 0
    app.close()


def test_an_unanswered_connect_times_out(active: Active) -> None:
    """No answer at all: the SYN goes max_syn_retries more times, backed off, then
    the connect fails with ETIMEDOUT."""
    active.drop_toward_peer = True
    key, _iss, app = active.connect()
    retries = active.bed.svc.config.max_syn_retries
    for _ in range(retries + 1):
        active.bed.clock.advance(200.0)  # past any backed-off RTO (capped at max_rto)
        active.bed.step()
    syns = [s for s in active.toward_peer if s.flags & TcpFlags.SYN]
    assert len(syns) == retries + 1
    assert [(f.key, f.err) for f in active.bed.plane.failures()] == [(key, errno.ETIMEDOUT)]
    assert active.stats()["connect_timeouts"] == 1
    app.close()


def test_hostile_answers_are_dropped_or_reset(active: Active) -> None:
    """RFC 9293 §3.10.7.3: an ACK of something never sent is answered by a RST from
    its ACK number (the flow goes on); a RST without ACK, a SYN without ACK, and a
    plain ACK are dropped and counted; none ends the connect."""
    active.drop_toward_plane = True  # the real SYN-ACK is held back
    key, iss, app = active.connect()
    lip, lport, rip, rport = key
    active.bed.run(2)

    def inject(seg: TcpSegment) -> None:
        active.bed.port.push(build_frame(EthernetHeader(MAC_SVC, MAC_PEER),
                                         Ipv4Header(rip, lip), seg))
        active.bed.plane.round(active.bed.clock.now)

    inject(TcpSegment(rport, lport, Seq(5000), Seq(iss + 77), TcpFlags.SYN | TcpFlags.ACK,
                      1000))
    sent = active.bed.port.pop_all(None)
    rsts = [parse_frame(f).tcp for f in sent]
    assert [(s.flags, int(s.seq)) for s in rsts if s is not None] == \
        [(TcpFlags.RST, (iss + 77) & 0xFFFFFFFF)]
    for seg in (TcpSegment(rport, lport, Seq(5000), Seq(0), TcpFlags.RST, 0),
                TcpSegment(rport, lport, Seq(5000), Seq(0), TcpFlags.SYN, 1000),
                TcpSegment(rport, lport, Seq(5000), Seq(iss + 1), TcpFlags.ACK, 1000)):
        inject(seg)
    assert active.tcb(key).tcp_state == lib.DP_SYN_SENT
    assert active.stats()["synsent_dropped"] == 4
    assert active.bed.plane.failures() == []
    active.drop_toward_plane = False
    active.bed.clock.advance(1.1)
    active.accept()
    assert active.tcb(key).tcp_state == lib.DP_ESTABLISHED
    app.close()


def test_a_ring_claimed_before_the_answer_works_and_a_hostile_one_ends_it() -> None:
    """An application claims ring mode on its connect's descriptor at once: the
    verdict comes before the SYN-ACK (it must not wait for the peer), and its bytes,
    written into tx meanwhile, go once the handshake is done. Another one writes an
    impossible index before the answer: that connect ends (RFC 9293 §3.10.4's close
    in SYN-SENT: nothing sent), counted, never handed to Python, which has no
    connection for it; the first goes on."""
    a = Active()
    a.drop_toward_plane = True
    key, _iss, sock = a.connect(claims=True)
    good = lib.dp_app_claim(sock.fileno(), 4096, 4096, 1)
    assert good != ffi.NULL
    bad_key, _iss2, bad_sock = a.connect(claims=True)
    bad = lib.dp_app_claim(bad_sock.fileno(), 4096, 4096, 2)
    assert bad != ffi.NULL
    a.bed.run(3)
    assert lib.dp_app_verdict(good, 0) == 1 and lib.dp_app_verdict(bad, 0) == 1
    assert a.tcb(key).tcp_state == lib.DP_SYN_SENT
    assert lib.dp_app_write(good, b"ring bytes", 10) == 10
    lib.dp_app_poke_tx_tail(bad, 1 << 30)
    bad_sock.send(b"B")  # its doorbell: the service looks
    a.bed.run(3)
    st = a.stats()
    assert st["chan_broken"] == 1 and st["connect_dropped"] == 1
    assert not a.held(bad_key) and a.bed.reasons == []
    a.drop_toward_plane = False
    a.bed.clock.advance(1.1)
    server = a.accept()
    a.bed.run(5)
    assert server.recv() == b"ring bytes"
    server.send(b"back")
    a.bed.peer.mark(server)
    a.bed.run(5)
    buf = ffi.new("uint8_t[]", 16)
    assert ffi.buffer(buf, int(lib.dp_app_read(good, buf, 16)))[:] == b"back"
    lib.dp_app_free(good)
    lib.dp_app_free(bad)
    sock.close()
    bad_sock.close()


# -- the control plane's side: OP_CONNECT, SO_ERROR's answer, the owner ----------------


def op_connect(dp: Datapath, app_socket: socket.socket, port: int) -> tuple[int, str]:
    """An application's non-blocking OP_CONNECT to the peer, answered by ``dp``: its
    descriptor's end and the connection's name (its socket's peer name)."""
    session = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        session.connect(app_socket.getsockname())
        session.send(protocol.Request(protocol.OP_CONNECT, IP_PEER, port,
                                      flags=protocol.FLAG_NONBLOCK).encode())
        dp._on_app_socket(0)
        msg, fds, _flags, _addr = socket.recv_fds(session, 1024, 1)
    finally:
        session.close()
    reply = protocol.Reply.decode(msg)
    assert reply.status == 0 and len(fds) == 1, reply
    app = socket.socket(fileno=fds[0])
    name = app.getpeername()
    app.detach()
    return fds[0], (name.lstrip(b"\0").decode() if isinstance(name, bytes)
                    else name.lstrip("\0"))


def test_a_refused_connect_s_errno_is_its_own_when_the_4_tuple_is_taken_again(
        tmp_path: Path) -> None:
    """Through the control plane: an OP_CONNECT that C opens and the peer refuses
    leaves ECONNREFUSED for its owner's OP_GETINFO, once, even when another connect
    takes the same 4-tuple before the question (one ephemeral port here), and the
    second connection's owner still holds it."""
    b = Bed()
    app_socket, dp = datapath_over(b, tmp_path, ephemeral=PortSet([60000]))
    creds = apps.Credentials(os.getpid(), os.getuid(), os.getgid())
    try:
        fd1, name1 = op_connect(dp, app_socket, 9999)  # nobody listens there: a RST
        b.run(3)
        assert b.plane.stats()["connect_refused"] == 1
        listener = b.peer.listen(9999)
        fd2, name2 = op_connect(dp, app_socket, 9999)  # the same 4-tuple, free again
        assert name2 != name1 and protocol.parse_name(name2).remote == \
            protocol.parse_name(name1).remote
        status, info, _conn = dp.get_info(protocol.Request(protocol.OP_GETINFO, bytes(4), 0,
                                                           name1), creds)
        assert status == 0 and info is not None and info.so_error == errno.ECONNREFUSED
        status, _info, _conn = dp.get_info(protocol.Request(protocol.OP_GETINFO, bytes(4),
                                                            0, name1), creds)
        assert status == errno.ENOTCONN  # reported once
        for _ in range(20):
            b.step()
            if b.peer.accept(listener) is not None:
                break
        status, info, conn = dp.get_info(protocol.Request(protocol.OP_GETINFO, bytes(4), 0,
                                                          name2), creds)
        assert status == 0 and info is not None and info.so_error == 0 and conn is not None
        other = apps.Credentials(os.getpid(), os.getuid() + 4242, os.getgid())
        status, _info, _conn = dp.get_info(protocol.Request(protocol.OP_GETINFO, bytes(4),
                                                            0, name2), other)
        assert status == errno.EPERM  # not its owner's
        os.close(fd1)
        os.close(fd2)
    finally:
        app_socket.close()
