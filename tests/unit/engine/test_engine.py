"""Two engines joined by an in-memory wire: demux, handshake, data, RST, neighbours."""

from __future__ import annotations

import hashlib
import os

import pytest

from joyride.engine import Engine, EngineError, MemoryNic, StaticNetwork
from joyride.tcp.connection import TcpConnection
from joyride.tcp.state import TcpState
from joyride.wire.frame import parse_frame
from joyride.wire.tcp import TcpFlags

IP_A, IP_B = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_pair(clock: FakeClock, *, b_knows_a: bool = True) -> tuple[Engine, Engine, MemoryNic]:
    nic_a, nic_b = MemoryNic.pair()
    net_a = StaticNetwork("a0", MAC_A, frozenset({IP_A}), {IP_B: MAC_B})
    net_b = StaticNetwork("b0", MAC_B, frozenset({IP_B}), {IP_A: MAC_A} if b_knows_a else {})
    return Engine(nic_a, net_a, clock=clock), Engine(nic_b, net_b, clock=clock), nic_a


def run(engines: list[Engine], clock: FakeClock, rounds: int = 50, step: float = 0.001) -> None:
    for _ in range(rounds):
        for e in engines:
            e.poll()
        clock.now += step


def connected(clock: FakeClock) -> tuple[Engine, Engine, TcpConnection, TcpConnection]:
    """A pair of engines and an established connection between them (B connects to
    A:8080): server, client, the server's and the client's end."""
    server, client, _ = make_pair(clock)
    listener = server.listen(8080)
    conn_c = client.connect(IP_A, 8080)
    run([server, client], clock, rounds=5)
    conn_s = server.accept(listener)
    assert conn_s is not None
    return server, client, conn_s, conn_c


def test_handshake_data_and_close_both_ways() -> None:
    clock = FakeClock()
    server, client, conn_s, conn_c = connected(clock)
    assert conn_s.state is TcpState.ESTABLISHED
    assert conn_c.state is TcpState.ESTABLISHED

    payload = os.urandom(300_000)
    sent = 0
    received = bytearray()
    for _ in range(2000):
        if sent < len(payload):
            sent += conn_c.send(payload[sent:])
            client.mark(conn_c)
            client.flush()
        run([server, client], clock, rounds=1)
        received += conn_s.recv()
        server.mark(conn_s)
        if len(received) == len(payload):
            break
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()

    conn_s.send(b"bye")
    conn_s.close()
    server.mark(conn_s)
    server.flush()
    run([server, client], clock, rounds=5)
    assert conn_c.recv() == b"bye"
    assert conn_c.eof
    conn_c.close()
    client.mark(conn_c)
    client.flush()
    run([server, client], clock, rounds=5)
    # The server closed first, so it holds TIME-WAIT (RFC 9293 §3.6): its application
    # closed, so the engine keeps a compact record instead of the connection. The
    # client's connection is CLOSED and the engine has forgotten it.
    assert conn_s.state is TcpState.CLOSED
    assert not server.connections
    assert list(server.time_wait) == [(IP_A, 8080, IP_B, conn_c.local_port)]
    assert conn_c.state is TcpState.CLOSED
    assert not client.connections
    clock.now += server.config.time_wait + 1
    run([server, client], clock, rounds=2)
    assert not server.time_wait
    assert server.counters["tw_expired"] == 1


def test_segment_for_no_socket_is_answered_with_rst() -> None:
    clock = FakeClock()
    server, client, _ = make_pair(clock)
    conn = client.connect(IP_A, 9999)  # nobody listens on 9999
    run([server, client], clock, rounds=3)
    assert server.counters["rx_no_socket"] == 1
    assert conn.state is TcpState.CLOSED
    assert conn.error == "refused"


def test_garbage_frames_are_counted_not_raised() -> None:
    clock = FakeClock()
    server, _, _ = make_pair(clock)
    garbage = [b"", b"\x00" * 13, os.urandom(60), os.urandom(1514)]
    server.nic.inbox.extend(garbage)  # type: ignore[attr-defined]
    server.poll()
    drops = sum(v for k, v in server.counters.items() if k.startswith("drop_"))
    assert drops == 4


def test_frames_to_an_unresolved_neighbour_are_held_then_sent() -> None:
    clock = FakeClock()
    server, client, nic_a = make_pair(clock, b_knows_a=False)
    server.listen(8080)
    client.connect(IP_A, 8080)
    assert client.counters["tx_held_for_neighbour"] == 1
    assert not nic_a.inbox
    client.network.neighbours[IP_A] = MAC_A  # type: ignore[attr-defined]
    client.poll()
    frame = parse_frame(nic_a.inbox[0])
    assert frame.eth.dst == MAC_A and frame.tcp.flags == TcpFlags.SYN


def test_listen_twice_and_bad_port_are_refused() -> None:
    clock = FakeClock()
    server, _, _ = make_pair(clock)
    server.listen(8080)
    with pytest.raises(EngineError, match="already listening"):
        server.listen(8080)
    with pytest.raises(EngineError, match="out of range"):
        server.listen(0)


def test_multinic_serves_every_queue() -> None:
    from joyride.engine.nic import MultiNic

    q0, peer0 = MemoryNic.pair()
    q1, peer1 = MemoryNic.pair()
    multi = MultiNic([q0, q1])
    peer0.transmit([b"a0", b"a1"])
    peer1.transmit([b"b0"])
    seen = []
    for _ in range(3):
        rx = multi.receive(64)
        if rx is not None:
            seen += [bytes(rx.base[int(o):int(o) + int(n)])
                     for o, n in zip(rx.offsets, rx.lengths, strict=True)]
        multi.release()
    assert sorted(seen) == [b"a0", b"a1", b"b0"]
    assert multi.receive(64) is None
    assert multi.transmit([b"out"]) == 1
    assert list(peer0.inbox) == [b"out"]


def test_one_ephemeral_range_for_engine_embed_and_service() -> None:
    """The engine's default ephemeral range is the one embedded mode reserves and the
    service's default agrees with it (one definition, the same kernel ports)."""
    from joyride.embed import embedded
    from joyride.engine import DEFAULT_EPHEMERAL
    from joyride.service.service import DEFAULT_EPHEMERAL as SERVICE_EPHEMERAL

    assert range(60000, 61000) == DEFAULT_EPHEMERAL
    assert embedded.DEFAULT_EPHEMERAL is DEFAULT_EPHEMERAL
    assert set(SERVICE_EPHEMERAL) == set(DEFAULT_EPHEMERAL)
    nic_a, _ = MemoryNic.pair()
    network = StaticNetwork("a0", MAC_A, frozenset({IP_A}), {IP_B: MAC_B})
    assert Engine(nic_a, network).ephemeral_ports == DEFAULT_EPHEMERAL


def test_address_added_at_run_time_is_served_and_announced() -> None:
    """The engine follows the interface's addresses (ADDRESS_REFRESH): a SYN to an
    address it does not have is dropped; once the address appears, the listeners (the
    steering program's address map) hear the new set and the retransmitted SYN is
    answered."""
    from joyride.engine.engine import ADDRESS_REFRESH

    clock = FakeClock()
    server, client, _ = make_pair(clock)
    announced: list[frozenset[bytes]] = []
    server.address_listeners.append(announced.append)
    listener = server.listen(8080)
    extra = bytes([198, 18, 0, 9])
    client.network.neighbours[extra] = MAC_A  # type: ignore[attr-defined]
    conn_c = client.connect(extra, 8080)
    run([server, client], clock, rounds=5)
    assert server.counters["drop_not_local"] >= 1
    assert conn_c.state is TcpState.SYN_SENT and not announced
    deadline = server.next_deadline()  # an idle engine still wakes up to look
    assert deadline is not None and deadline <= clock.now + ADDRESS_REFRESH
    server.network.addresses = frozenset({IP_A, extra})  # type: ignore[attr-defined]
    run([server, client], clock, rounds=60, step=ADDRESS_REFRESH / 20)
    assert announced == [frozenset({IP_A, extra})]
    conn_s = server.accept(listener)
    assert conn_s is not None and conn_s.local_ip == extra
    assert conn_c.state is TcpState.ESTABLISHED
    assert server.counters["address_changes"] == 1


def test_timer_heap_rearms_lazily_and_still_fires_on_time() -> None:
    """Every reply restarts the retransmission timer later (RFC 6298 §5.3); the
    engine keeps its queued wake-up instead of pushing one per reply, and moves it
    when it surfaces early, so the timer still fires at the connection's deadline."""
    clock = FakeClock()
    server, client, conn_s, conn_c = connected(clock)
    for i in range(300):
        request, reply = b"q%03d" % i * 16, b"r%03d" % i * 16
        conn_c.send(request)
        client.mark(conn_c)
        client.flush()
        run([server, client], clock, rounds=2)
        assert conn_s.recv() == request
        conn_s.send(reply)
        server.mark(conn_s)
        server.flush()
        run([server, client], clock, rounds=2)
        assert conn_c.recv() == reply
    # One entry per reply would have outgrown the sweep threshold many times over.
    assert server.counters["timer_heap_compactions"] == 0
    assert len(server._timers) <= 3
    # The client falls silent: something must go at the RTO's time (the loss probe,
    # RFC 8985 §7.2, comes due then with one segment in flight; it sends the reply
    # Nagle held back behind the unacknowledged one).
    conn_s.send(b"unanswered")
    server.mark(conn_s)
    server.flush()
    rto_at = conn_s.poll_at()
    wake = server.next_deadline()
    assert rto_at is not None and wake is not None and wake <= rto_at
    sent = conn_s.counters["segments_sent"]
    clock.now = rto_at - 0.001  # an early wake-up moves the entry, fires nothing
    server.poll()
    assert conn_s.counters["segments_sent"] == sent
    assert server.next_deadline() == rto_at
    clock.now = rto_at
    server.poll()
    assert conn_s.counters["segments_sent"] == sent + 1
    assert conn_s.counters["tlp_probes_new_data"] == 1
