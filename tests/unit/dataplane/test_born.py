"""Connections born in C (``dp_listen``): the handshake, the delivery to the
application's unix listener, both closes and TIME-WAIT run in C as ``Listener`` and
``TcpConnection`` would; a flow C hands over becomes a Python connection
(``TcpConnection.from_hot``); the ISN is ``isn.py``'s. At explicit times, over the
in-memory bed, with bytes checked by hash."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import socket
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from joyride.dataplane.membed import IP_PEER, IP_SVC, PORT, Bed, read_all
from joyride.dataplane.plane import ListenSpec, ffi, lib
from joyride.service import protocol
from joyride.tcp.config import TcpConfig
from joyride.tcp.connection import TcpConnection
from joyride.tcp.isn import IsnGenerator
from joyride.tcp.listener import Listener
from joyride.tcp.state import TcpState
from joyride.wire.frame import parse_frame
from joyride.wire.tcp import TcpFlags, TcpSegment

pytestmark = pytest.mark.skipif(lib is None, reason="the C data plane is not built")

_names = itertools.count()


class Born:
    """A bed whose service port C listens on, delivering to a real unix listener."""

    def __init__(self, config: TcpConfig | None = None,
                 peer_config: TcpConfig | None = None, *, backlog: int = 64,
                 max_flows: int = 64, claims: bool = False, mapped: bool = False,
                 families: frozenset[int] = frozenset({4}), ipv6: bool = False) -> None:
        self.bed = Bed(config, peer_config, max_flows=max_flows, ipv6=ipv6)
        self.name = f"joyride-test/{os.getpid()}/{next(_names)}"
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        self.unix.bind(b"\0" + self.name.encode())
        self.unix.listen(backlog)
        self.listener = self.bed.svc.listen(PORT)
        self.spec = ListenSpec(PORT, (self.name,), self.bed.svc.config,
                               self.listener.ts_offset, self.listener.isn_generator.key,
                               (claims,),  # claims: its application claims ring mode
                               (mapped,),  # mapped: an AF_INET6 socket's (dual-stack)
                               (families,))  # the IP versions it takes
        self.bed.plane.listen(self.spec, syn_backlog=16)
        self.to_plane: list[bytes] = []  # frames the peer sent, in order
        self.bed.impair = self._watch

    def _watch(self, frame: bytes, toward_plane: bool) -> bool:
        if toward_plane:
            self.to_plane.append(frame)
        return True

    def watch_toward_peer(self) -> list[TcpSegment]:
        """From now on, the segments the plane sends toward the peer, in order."""
        seen: list[TcpSegment] = []

        def watch(frame: bytes, toward_plane: bool) -> bool:
            if not toward_plane:
                seen.append(segment_of(frame))
            return self._watch(frame, toward_plane)

        self.bed.impair = watch
        return seen

    def accept(self) -> socket.socket:
        app, _ = self.unix.accept()
        app.setblocking(False)
        return app

    def stats(self) -> dict[str, int]:
        return self.bed.plane.stats()

    def tcb(self, client: TcpConnection) -> object:
        """C's TCB of the flow that answers ``client``."""
        handle = lib.dp_flow_find(self.bed.plane._dp, IP_SVC, PORT, IP_PEER, client.local_port,
                                  4)
        assert handle > 0, "C holds no flow for that 4-tuple"
        tcb = ffi.new("struct dp_tcb *")
        assert lib.dp_flow_peek(self.bed.plane._dp, handle, tcb) == 0
        return tcb

    def close(self) -> None:
        self.unix.close()


@pytest.fixture
def born() -> Iterator[Born]:
    b = Born()
    yield b
    b.close()


def segment_of(frame: bytes) -> TcpSegment:
    parsed = parse_frame(frame)
    assert parsed.tcp is not None
    return parsed.tcp


# -- the ISN --------------------------------------------------------------------------


@given(st.sampled_from((4, 16)).flatmap(lambda n: st.tuples(
           st.binary(min_size=n, max_size=n), st.binary(min_size=n, max_size=n))),
       st.integers(0, 65535), st.integers(0, 65535), st.floats(0, 1e7, allow_nan=False))
def test_isn_is_isn_py(addresses: tuple[bytes, bytes], lport: int, rport: int,
                       now: float) -> None:
    """C's ISNs are isn.py's, for either family (the whole 16 bytes of IPv6's hashed)."""
    lip, rip = addresses
    gen = IsnGenerator(b"a fixed secret")
    c = lib.dp_isn(gen.key, lip, lport, rip, rport, len(lip), now)
    assert c == int(gen.isn(lip, lport, rip, rport, now))


# -- the handshake, against Listener + TcpConnection ------------------------------------

HOT_FIELDS = ("rcv_nxt", "rcv_adv", "last_ack_rcv_nxt", "last_ack_sent", "ts_recent",
              "rcv_mss", "cfg_mss", "rcv_cap", "rcv_slack", "rcv_max", "rcv_shift",
              "snd_shift", "ts_ok", "nodelay", "snd_una", "snd_nxt", "snd_wnd",
              "max_snd_wnd", "snd_wl1", "snd_wl2", "smss", "snd_cap", "ts_offset", "srtt",
              "rttvar", "base_rto", "min_rto", "max_rto", "rto_backoff", "rtt_samples",
              "rtt_timing", "retries", "cc_kind", "cwnd", "ssthresh", "abc_limit",
              "cc_pristine", "cc_iw", "rto_at", "delack_at", "keepalive_at", "last_send")


@given(mss=st.sampled_from([88, 536, 1000, 1460]), wscale=st.booleans(),
       timestamps=st.booleans(), sack=st.booleans(), cubic=st.booleans(),
       peer_window=st.integers(1, 4 << 20))
def test_handshake_matches_python(mss: int, wscale: bool, timestamps: bool, sack: bool,
                                  cubic: bool, peer_window: int) -> None:
    config = TcpConfig(nodelay=True, congestion_control="cubic" if cubic else "newreno")
    peer_config = TcpConfig(mss=mss, window_scaling=wscale, timestamps=timestamps, sack=sack,
                            receive_buffer=peer_window, receive_buffer_max=max(peer_window,
                                                                               4 << 20))
    b = Born(config, peer_config)
    try:
        bed = b.bed
        client = bed.peer.connect(IP_SVC, PORT)  # its SYN is on the way into the plane
        assert len(b.to_plane) == 1
        # The same SYN, at the same time, through Python's Listener.
        python = Listener(config, PORT, isn_generator=b.listener.isn_generator)
        python._ts_offset = b.listener.ts_offset
        syn, t1 = segment_of(b.to_plane[0]), bed.clock.now + 0.0013
        bed.plane.round(t1)
        out = bed.port.pop_all()
        assert len(out) == 1 and b.stats()["syn_received"] == 1
        python.receive(syn, IP_PEER, IP_SVC, t1)
        expected = python.segments_to_send(t1)
        assert [segment_of(out[0])] == [o.segment for o in expected]
        # The SYN-ACK to the peer, its ACK back, at a later time.
        bed.clock.now = t1
        bed.peer_nic.inbox.append(out[0])
        bed.peer.poll()
        bed.peer.flush()
        assert client.state is TcpState.ESTABLISHED and len(b.to_plane) == 2
        t2 = t1 + 0.0007
        bed.plane.round(t2)
        python.receive(segment_of(b.to_plane[1]), IP_PEER, IP_SVC, t2)
        conn = python.accept()
        assert conn is not None and b.stats()["delivered"] == 1
        mine = ffi.new("struct dp_tcb *")
        assert conn.export_hot(mine) is not None
        theirs = b.tcb(client)
        for name in HOT_FIELDS:
            assert getattr(theirs, name) == getattr(mine, name), name
        assert theirs.tcp_state == lib.DP_ESTABLISHED and theirs.born == 1
        assert theirs.sack_ok == int(conn._sack_ok)
    finally:
        b.close()


# -- whole lives, in C ------------------------------------------------------------------

COUNTS = [name for name, _ in ffi.typeof("struct dp_counts").fields]


def counts_of(counts: object) -> dict[str, int]:
    """A TCB's counters, or the ended flows' (struct dp_counts has a TCB's names)."""
    return {name: int(getattr(counts, name)) for name in COUNTS}



def converse(b: Born, client: TcpConnection, app: socket.socket, request: bytes,
             reply: bytes) -> bytes:
    client.send(request)
    b.bed.peer.mark(client)
    got = b""
    for _ in range(100):
        b.bed.step()
        got += read_all(app)
        if len(got) >= len(request):
            break
    assert hashlib.sha256(got).digest() == hashlib.sha256(request).digest()
    back, sent = b"", 0
    for _ in range(2000):
        if sent < len(reply):
            with contextlib.suppress(BlockingIOError):
                sent += app.send(reply[sent:])
        b.bed.step()
        back += client.recv()
        if len(back) >= len(reply):
            break
    return back


def test_server_closes_first_all_in_c_then_time_wait_expires(born: Born) -> None:
    bed = born.bed
    client = bed.peer.connect(IP_SVC, PORT)
    bed.run(5)
    app = born.accept()
    reply = os.urandom(300_000)
    assert hashlib.sha256(converse(born, client, app, b"GET /\r\n", reply)).digest() == \
        hashlib.sha256(reply).digest()
    app.shutdown(socket.SHUT_WR)  # nginx's lingering close: FIN first
    bed.run(10)
    assert client.eof and client.state is TcpState.CLOSE_WAIT
    client.close()
    bed.peer.mark(client)
    bed.run(10)
    assert app.recv(10) == b""  # the peer's FIN reached the application as EOF
    app.close()
    bed.run(5)
    st = born.stats()
    assert st["declined"] == 0 and bed.reasons == []  # not one segment for Python
    assert st["time_waits"] == 1 and st["fins_sent"] == 1 and st["fins_received"] == 1
    assert client.state is TcpState.CLOSED
    assert born.tcb(client).tcp_state == lib.DP_TIME_WAIT
    # A claim (a socket option, OP_GETINFO) cannot take a finished flow out of C.
    assert bed.plane.claim((IP_SVC, PORT, IP_PEER, client.local_port)) is None
    assert born.tcb(client).tcp_state == lib.DP_TIME_WAIT
    last = counts_of(born.tcb(client))
    assert last["segs_out"] > 200 and last["bytes_acked"] >= len(reply)
    assert counts_of(bed.plane.ended_counts()) == dict.fromkeys(COUNTS, 0)  # still live
    bed.clock.advance(bed.svc.config.time_wait + 1)
    bed.step()
    assert born.stats()["tw_expired"] == 1
    # Its counters outlive it: what C counted joins the totals of flows that ended in C.
    assert counts_of(bed.plane.ended_counts()) == last
    assert lib.dp_flow_find(bed.plane._dp, IP_SVC, PORT, IP_PEER, client.local_port, 4) < 0


def test_the_fin_rides_on_the_reply_it_follows(born: Born) -> None:
    """An application that writes its reply and closes (HTTP/1.0, Connection: close):
    as TcpConnection._emit_data, the FIN goes on the reply's last segment, not in a
    segment of its own, and the peer gets every byte and then the EOF."""
    bed = born.bed
    client = bed.peer.connect(IP_SVC, PORT)
    bed.run(5)
    app = born.accept()
    converse(born, client, app, b"GET / HTTP/1.0\r\n\r\n", b"")
    # The name C bound spells the 4-tuple as protocol.connection_name does.
    name = protocol.parse_name(app.getpeername())
    assert name is not None and name.kind == "connection"
    assert name.local == (socket.inet_ntoa(IP_SVC), PORT)
    assert name.remote == (socket.inet_ntoa(IP_PEER), client.local_port)
    assert name.pid == os.getpid()
    toward_peer = born.watch_toward_peer()
    app.sendall(b"reply" * 200)
    app.close()
    bed.run(10)
    assert client.recv() == b"reply" * 200 and client.eof
    fins = [seg for seg in toward_peer if seg.flags & TcpFlags.FIN]
    assert len(fins) == 1 and fins[0].payload, toward_peer
    assert born.stats()["fins_sent"] == 1 and bed.reasons == []


def test_a_request_is_acknowledged_by_its_reply_not_a_window_update(born: Born) -> None:
    """The SYN-ACK's window is unscaled (at most 65,535, RFC 7323 §2.2) and the buffer's
    is twice that, so the application's first read doubles the window; as
    TcpConnection._after_read, C announces it at once only while the peer may be held
    back by the window it knows. A short request's ACK waits and rides on the reply."""
    bed = born.bed
    client = bed.peer.connect(IP_SVC, PORT)
    bed.run(5)
    app = born.accept()
    toward_peer = born.watch_toward_peer()
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    converse(born, client, app, request, b"")  # delivered and read, no time passes
    assert toward_peer == []
    app.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
    bed.run(5)
    assert [(bool(seg.payload), seg.ack) for seg in toward_peer] == \
        [(True, client.snd_nxt)], toward_peer  # the reply acknowledges the whole request
    assert bed.reasons == []


def test_a_dual_stack_listener_s_connection_is_named_v4_mapped() -> None:
    """Delivered to an AF_INET6 socket's listener, C names an IPv4 connection with
    v4-mapped addresses (as protocol.connection_name with socket_address does), which
    the shim and the service read back as the IPv4 4-tuple."""
    born = Born(mapped=True)
    try:
        client = born.bed.peer.connect(IP_SVC, PORT)
        born.bed.run(5)
        app = born.accept()
        with app:
            raw = app.getpeername()
            name = protocol.parse_name(raw)
            assert name is not None and name.family == socket.AF_INET6
            assert name.local == (f"::ffff:{socket.inet_ntoa(IP_SVC)}", PORT)
            assert name.remote == (f"::ffff:{socket.inet_ntoa(IP_PEER)}", client.local_port)
            assert name.key() == (IP_SVC, PORT, IP_PEER, client.local_port)
            expected = protocol.connection_name(
                (protocol.socket_address(IP_SVC, socket.AF_INET6), PORT),
                (protocol.socket_address(IP_PEER, socket.AF_INET6), client.local_port),
                name.pid, 0)
            assert raw.lstrip(b"\0").rsplit(b".", 1)[0] == expected.encode().rsplit(b".", 1)[0]
    finally:
        born.close()


def test_an_ipv6_connection_is_born_in_c_with_its_family_s_mss() -> None:
    """An IPv6 SYN to a name that takes IPv6: C opens the connection (handshake, MSS
    20 bytes below IPv4's), names it with
    base64url addresses and carries the bytes both ways."""
    born = Born(ipv6=True, families=frozenset({4, 6}), mapped=True)
    try:
        bed = born.bed
        client = bed.peer.connect(bed.ip_svc, PORT)
        bed.run(5)
        assert born.stats()["syn_received"] == 1 and born.stats()["delivered"] == 1
        assert born.stats()["delivered6"] == 1  # counted per family
        app = born.accept()
        with app:
            name = protocol.parse_name(app.getpeername())
            assert name is not None and name.family == socket.AF_INET6
            assert name.key() == (bed.ip_svc, PORT, bed.ip_peer, client.local_port)
            handle = lib.dp_flow_find(bed.plane._dp, bed.ip_svc, PORT, bed.ip_peer,
                                      client.local_port, 16)
            tcb = ffi.new("struct dp_tcb *")
            assert lib.dp_flow_peek(bed.plane._dp, handle, tcb) == 0
            assert tcb.ipv6 == 1 and tcb.cfg_mss == bed.svc.config.mss - 20
            request, reply = os.urandom(100_000), os.urandom(300_000)
            assert converse(born, client, app, request, reply) == reply
        assert bed.reasons == []
    finally:
        born.close()


def test_a_learnt_path_mss_fits_the_connections_c_opens_to_that_destination(
        born: Born) -> None:
    """dp_path_mss (a router's report, learnt by the control plane): C's next
    connections to that peer send no bigger segments, until the entry expires; another
    destination, or the other family's address with the same first bytes, is not
    fitted."""
    bed = born.bed
    now = bed.clock.now
    bed.plane.set_path_mss(IP_PEER, 1160, now + 600)  # 1200-byte path, with options
    bed.plane.set_path_mss(IP_PEER + bytes(12), 600, now + 600)  # an IPv6 address
    first = bed.peer.connect(IP_SVC, PORT)
    bed.run(5)
    assert born.stats()["syn_path_mss"] == 1
    assert born.tcb(first).smss == 1160 - 12  # the timestamp option comes out of it
    bed.clock.now += 601  # expired: the next connection starts at the full size
    second = bed.peer.connect(IP_SVC, PORT)
    bed.run(5)
    assert born.stats()["syn_path_mss"] == 1
    assert born.tcb(second).smss == born.tcb(first).cfg_mss - 12


def test_a_syn_of_a_family_no_name_takes_goes_to_python() -> None:
    """An IPv6 SYN where only IPv4 listeners are: C declines it (Python answers as
    the engine's listener's families say)."""
    born = Born(ipv6=True)  # families {4}
    try:
        born.bed.peer.connect(born.bed.ip_svc, PORT)
        born.bed.run(5)
        assert born.stats()["syn_received"] == 0
    finally:
        born.close()


def refused_unread(born: Born) -> tuple[TcpConnection, socket.socket]:
    """A connection whose client sent a request the application answers without reading
    it: the client, and the application's socket."""
    client = born.bed.peer.connect(IP_SVC, PORT)
    born.bed.run(5)
    app = born.accept()
    client.send(b"a request nobody reads")
    born.bed.peer.mark(client)
    born.bed.run(5)
    app.send(b"refused\n")
    return client, app


def test_a_close_with_bytes_unread_resets_after_the_reply(born: Born) -> None:
    """The application (a stream) closes with the request still unread in its socket:
    its unix peer, C's end, reads its last bytes and then the socket's ECONNRESET (epoll's
    EPOLLERR) instead of an EOF. Those bytes were lost, so the peer gets the reply and
    then a reset, as from Linux's close with unread data (RFC 1122 §4.2.2.13)."""
    bed = born.bed
    client, app = refused_unread(born)
    app.close()
    bed.run(10)
    assert born.stats()["app_closed_unread"] == 1 and bed.reasons == ["app_gone"]
    assert client.recv(100) == b"refused\n"
    assert client.state is TcpState.CLOSED and client.error is not None
    assert not client.eof


def test_a_close_with_bytes_unread_after_shutdown_resets(born: Born) -> None:
    """The application shuts its writing down (C reads the EOF and sends the FIN), then
    closes with the request unread: C still watches its socket for that close (epoll's
    EPOLLHUP with EPOLLERR) and the peer, after the reply and the FIN, gets the reset
    Linux's close would send (RFC 1122 §4.2.2.13)."""
    bed = born.bed
    client, app = refused_unread(born)
    app.shutdown(socket.SHUT_WR)
    bed.run(10)
    assert client.recv(100) == b"refused\n" and client.eof
    assert client.error is None
    app.close()
    bed.run(10)
    assert born.stats()["app_closed_unread"] == 1 and bed.reasons == ["app_gone"]
    assert client.state is TcpState.CLOSED and client.error is not None


def test_peer_closes_first_last_ack_in_c(born: Born) -> None:
    bed = born.bed
    client = bed.peer.connect(IP_SVC, PORT)
    bed.run(5)
    app = born.accept()
    converse(born, client, app, b"ping" * 100, b"pong" * 1000)
    client.shutdown_write()
    bed.peer.mark(client)
    bed.run(10)
    assert read_all(app) == b""  # EOF
    assert born.tcb(client).tcp_state == lib.DP_CLOSE_WAIT
    before = counts_of(born.tcb(client))
    app.sendall(b"last words")
    app.close()
    bed.run(20)
    assert client.recv() == b"last words" and client.eof
    st = born.stats()
    assert st["closed"] == 1 and st["declined"] == 0 and bed.reasons == []
    assert st["flows"] == 0
    # Ended in LAST-ACK: the reply and the FIN after CLOSE-WAIT, and the ACK of them.
    ended = counts_of(bed.plane.ended_counts())
    assert ended["segs_in"] == before["segs_in"] + 1
    assert ended["segs_out"] > before["segs_out"]
    assert ended["bytes_acked"] == before["bytes_acked"] + len(b"last words")


def server_closes_first(b: Born) -> TcpConnection:
    """One connection whose application closes first: C's flow ends in TIME-WAIT."""
    bed = b.bed
    client = bed.peer.connect(IP_SVC, PORT)
    bed.run(5)
    app = b.accept()
    assert converse(b, client, app, b"ping", b"pong") == b"pong"
    app.shutdown(socket.SHUT_WR)
    bed.run(5)
    client.close()
    bed.peer.mark(client)
    bed.run(10)
    app.close()
    bed.run(5)
    assert b.tcb(client).tcp_state == lib.DP_TIME_WAIT
    return client


def test_time_wait_4_tuple_reopened_by_a_new_syn(born: Born) -> None:
    bed = born.bed
    client = server_closes_first(born)
    port = client.local_port
    assert client.state is TcpState.CLOSED
    old_snd_nxt = born.tcb(client).snd_nxt  # past our FIN
    bed.clock.advance(1.0)
    again = bed.peer.connect(IP_SVC, PORT, local_port=port)  # RFC 6191: a later ISN/TSval
    bed.run(5)
    assert again.state is TcpState.ESTABLISHED
    st = born.stats()
    assert st["tw_reuse"] == 1 and st["established"] == 2
    assert born.tcb(again).iss == (old_snd_nxt + 65535 + 2) & 0xFFFFFFFF
    app2 = born.accept()
    assert converse(born, again, app2, b"three", b"four") == b"four"


def test_a_full_table_gives_up_its_oldest_time_wait_after_many_have_expired() -> None:
    """The TIME-WAIT FIFO (flow_slot's eviction order) outlives many more TIME-WAITs
    than the table holds, most of them ending on their own: a full table still gives
    up its oldest record, not whichever entry a wrapped FIFO left at its head."""
    b = Born(max_flows=4)
    try:
        bed = b.bed
        for _ in range(9):  # each expires: entries for records long gone
            server_closes_first(b)
            bed.clock.advance(bed.svc.config.time_wait + 1)
            bed.step()
        assert b.stats()["tw_expired"] == 9
        records = []
        for _ in range(4):  # the table full of TIME-WAITs, oldest first
            records.append(server_closes_first(b).local_port)
            bed.clock.advance(0.5)
        client = bed.peer.connect(IP_SVC, PORT)
        bed.run(5)
        assert client.state is TcpState.ESTABLISHED
        assert b.stats()["tw_overflow"] == 1
        gone = [port for port in records
                if lib.dp_flow_find(bed.plane._dp, IP_SVC, PORT, IP_PEER, port, 4) < 0]
        assert gone == records[:1]
    finally:
        b.close()


def test_lost_syn_ack_is_sent_again_and_no_rtt_sample_is_taken(born: Born) -> None:
    bed = born.bed
    dropped: list[bytes] = []

    def drop_first_synack(frame: bytes, toward_plane: bool) -> bool:
        if not toward_plane and not dropped and segment_of(frame).flags & TcpFlags.SYN:
            dropped.append(frame)
            return False
        return True

    bed.impair = drop_first_synack
    client = bed.peer.connect(IP_SVC, PORT)
    bed.run(5)
    assert dropped and client.state is TcpState.SYN_SENT
    bed.clock.advance(1.0)  # the initial RTO (RFC 6298 §2.1)
    bed.run(5)
    assert born.stats()["synack_retransmits"] == 1
    assert client.state is TcpState.ESTABLISHED
    tcb = born.tcb(client)
    assert tcb.srtt < 0 and tcb.base_rto >= 3.0  # RFC 6298 §5.7


def test_undelivered_connection_becomes_python_s() -> None:
    b = Born()
    try:
        b.unix.close()  # nobody listens on the unix name any more
        client = b.bed.peer.connect(IP_SVC, PORT)
        b.bed.run(5)
        assert b.bed.reasons == ["undelivered"]
        (conn,) = b.bed.born
        assert conn.state is TcpState.ESTABLISHED and not conn.parked
        assert b.bed.svc.connections[(IP_SVC, PORT, IP_PEER, client.local_port)] is conn
        assert conn.rcv_nxt == client.snd_nxt and conn.snd_nxt == client.rcv_nxt
        client.send(b"still reaches Python")
        b.bed.peer.mark(client)
        b.bed.run(5)
        assert conn.recv() == b"still reaches Python"
    finally:
        b.close()


def test_peer_reset_hands_the_flow_to_python(born: Born) -> None:
    bed = born.bed
    client = bed.peer.connect(IP_SVC, PORT)
    bed.run(5)
    app = born.accept()
    converse(born, client, app, b"x", b"y")
    client.abort()
    bed.peer.mark(client)
    bed.run(5)
    assert bed.reasons == ["segment"]
    (conn,) = bed.born
    assert conn.state is TcpState.CLOSED and conn.error == "reset"


def test_lost_fin_ack_goes_back_to_python_which_sends_the_fin_again(born: Born) -> None:
    bed = born.bed
    client = bed.peer.connect(IP_SVC, PORT)
    bed.run(5)
    app = born.accept()
    converse(born, client, app, b"q", b"a" * 5000)
    lost: list[bytes] = []

    def drop_fin(frame: bytes, toward_plane: bool) -> bool:
        if not toward_plane and segment_of(frame).flags & TcpFlags.FIN and not lost:
            lost.append(frame)
            return False
        return True

    bed.impair = drop_fin
    app.shutdown(socket.SHUT_WR)
    bed.run(5)
    assert lost and not client.eof
    bed.clock.advance(2.0)  # the RTO: recovery is Python's
    bed.run(10)
    assert bed.reasons == ["rto"]
    (conn,) = bed.born
    assert client.eof and conn.state is TcpState.FIN_WAIT_2
    assert read_all(app) == b""  # nothing more for the application, and no EOF yet


def test_born_flows_are_listed_as_c_holds_them(born: Born) -> None:
    bed = born.bed
    client = bed.peer.connect(IP_SVC, PORT)
    bed.run(5)
    app = born.accept()
    app.sendall(b"z" * 1000)  # unread by the peer: C's rings show it as queued
    client.send(b"unread by the application")
    bed.peer.mark(client)
    bed.run(3)
    (view,) = bed.plane.born_flows()
    assert view.tcb.remote_port == client.local_port and view.tcb.tcp_state == lib.DP_ESTABLISHED
    shown = TcpConnection.from_hot(bed.svc.config, view.tcb, bytes(view.recv_queue),
                                   bytes(view.send_queue), bed.clock.now)
    assert shown.state is TcpState.ESTABLISHED and shown.rcv_nxt == client.snd_nxt
    assert born.stats()["born_live"] == 1  # and C still runs it
    assert read_all(app) == b"unread by the application"
