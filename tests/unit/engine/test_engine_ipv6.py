"""IPv6 in the Python engine (issue 18): two dual-stack engines on an in-memory wire.
Connections over IPv6 beside IPv4 ones, their frames read back as a receiver would
(RFC 8200 header, the pseudo-header checksum checked by the parser), the MSS of the
family, RSTs, SYN cookies and ISNs keyed on all 16 bytes of each address."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from test_engine import IP_A as V4_A
from test_engine import IP_B as V4_B
from test_engine import MAC_A, MAC_B, FakeClock, run

from joyride.engine import Engine, MemoryNic, StaticNetwork
from joyride.tcp.config import TcpConfig
from joyride.tcp.connection import TcpConnection
from joyride.tcp.isn import IsnGenerator, pack_tuple
from joyride.tcp.state import TcpState
from joyride.tcp.syncookies import SynCookies
from joyride.wire.ethernet import ETHERTYPE_IPV6
from joyride.wire.frame import Frame, parse_frame
from joyride.wire.ipv6 import Ipv6Header
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpFlags

V6_A = bytes.fromhex("20010db8000000000000000000000001")  # 2001:db8::1
V6_B = bytes.fromhex("20010db8000000000000000000000002")  # 2001:db8::2


class TapNic(MemoryNic):
    """A MemoryNic that keeps a copy of every frame it transmits."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []

    def transmit(self, frames: Sequence[bytes | bytearray | memoryview]) -> int:
        self.sent.extend(bytes(f) for f in frames)
        return super().transmit(frames)


def dual_stack(clock: FakeClock, config: TcpConfig | None = None, *,
               nics: tuple[MemoryNic, MemoryNic] | None = None
               ) -> tuple[Engine, Engine, MemoryNic, MemoryNic]:
    """Engines A and B, each with an address of both families, joined by ``nics``
    (two ``TapNic`` by default); ``config`` is both engines'."""
    nic_a, nic_b = nics or (TapNic(), TapNic())
    nic_a.peer, nic_b.peer = nic_b, nic_a
    net_a = StaticNetwork("a0", MAC_A, frozenset({V4_A, V6_A}), {V4_B: MAC_B, V6_B: MAC_B})
    net_b = StaticNetwork("b0", MAC_B, frozenset({V4_B, V6_B}), {V4_A: MAC_A, V6_A: MAC_A})
    return (Engine(nic_a, net_a, config, clock=clock), Engine(nic_b, net_b, config, clock=clock),
            nic_a, nic_b)


def frames(nic: MemoryNic) -> list[Frame]:
    assert isinstance(nic, TapNic)
    return [parse_frame(f, ipv6=True) for f in nic.sent]


def exchange(server: Engine, client: Engine, clock: FakeClock, conn_s: TcpConnection,
             conn_c: TcpConnection, n: int) -> None:
    """``n`` bytes each way, checked by hash."""
    up, down = os.urandom(n), os.urandom(n)
    sent_up = sent_down = 0
    got_s, got_c = bytearray(), bytearray()
    for _ in range(3000):
        sent_up += conn_c.send(up[sent_up:])
        sent_down += conn_s.send(down[sent_down:])
        client.mark(conn_c)
        server.mark(conn_s)
        run([server, client], clock, rounds=1)
        got_s += conn_s.recv()
        got_c += conn_c.recv()
        if len(got_s) == n and len(got_c) == n:
            break
    assert hashlib.sha256(got_s).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(got_c).digest() == hashlib.sha256(down).digest()


def test_ipv6_and_ipv4_connections_side_by_side() -> None:
    clock = FakeClock()
    server, client, nic_a, _ = dual_stack(clock)
    listener = server.listen(8080)
    c6 = client.connect(V6_A, 8080)
    c4 = client.connect(V4_A, 8080)
    assert c6.local_ip == V6_B and c4.local_ip == V4_B  # the source of each family
    run([server, client], clock, rounds=5)
    s_first, s_second = server.accept(listener), server.accept(listener)
    assert s_first is not None and s_second is not None
    by_family = {len(c.remote_ip): c for c in (s_first, s_second)}
    s6, s4 = by_family[16], by_family[4]
    assert s6.state is TcpState.ESTABLISHED and c6.state is TcpState.ESTABLISHED
    exchange(server, client, clock, s6, c6, 200_000)
    exchange(server, client, clock, s4, c4, 50_000)
    sent6 = [f for f in frames(nic_a) if isinstance(f.ip, Ipv6Header)]
    assert sent6 and all(f.eth.ethertype == ETHERTYPE_IPV6 for f in sent6)
    assert all((f.ip.src, f.ip.dst) == (V6_A, V6_B) for f in sent6)
    # Full-sized segments fill the 1500-byte MTU exactly: 40 + 20 + 12 (timestamps) +
    # 1428 bytes of payload (the MSS of 1440 less the timestamp option, RFC 7323 §3.2).
    assert max(len(f.tcp.payload) for f in sent6) == 1428
    assert max(len(raw) for raw in nic_a.sent) == 1514


def test_an_ipv6_connection_advertises_the_mss_of_its_family() -> None:
    """RFC 9293 §3.7.1: the MTU less the IP and TCP headers: 1440 behind IPv6's 40-byte
    header on a 1500-byte link, 1460 behind IPv4's."""
    clock = FakeClock()
    server, client, nic_a, nic_b = dual_stack(clock)
    server.listen(8080)
    client.connect(V6_A, 8080)
    client.connect(V4_A, 8080)
    run([server, client], clock, rounds=5)
    syns = {len(f.ip.src): f.tcp.options.mss for f in frames(nic_b) if f.tcp.flags & TcpFlags.SYN}
    synacks = {len(f.ip.src): f.tcp.options.mss for f in frames(nic_a)
               if f.tcp.flags & TcpFlags.SYN}
    assert syns == synacks == {16: 1440, 4: 1460}
    # No frame is over the link's MTU.
    assert all(len(f) <= 1514 for f in nic_a.sent + nic_b.sent)


def test_a_segment_to_a_closed_ipv6_port_is_answered_with_a_reset() -> None:
    clock = FakeClock()
    server, client, nic_a, _ = dual_stack(clock)
    conn = client.connect(V6_A, 9)
    run([server, client], clock, rounds=5)
    rsts = [f for f in frames(nic_a) if f.tcp.flags & TcpFlags.RST]
    assert len(rsts) == 1 and isinstance(rsts[0].ip, Ipv6Header)
    assert conn.state is TcpState.CLOSED and conn.error is not None


def test_syn_cookies_over_ipv6() -> None:
    """A full SYN queue answers with cookies (RFC 4987 §3.6); the ACK that returns one
    opens the connection, at the family's MSS."""
    clock = FakeClock()
    server, client, _, _ = dual_stack(clock, TcpConfig(syn_backlog=1))
    listener = server.listen(8080)
    conns = [client.connect(V6_A, 8080) for _ in range(4)]
    run([server, client], clock, rounds=10)
    assert listener.counters["syncookies_sent"] >= 1
    accepted = [server.accept(listener) for _ in conns]
    assert all(c is not None for c in accepted)
    assert all(c.state is TcpState.ESTABLISHED for c in conns)
    assert all(a is not None and a.config.mss == 1440 for a in accepted)


def test_keyed_hashes_read_every_byte_of_an_ipv6_address() -> None:
    """ISNs (RFC 6528) and SYN cookies hash the whole 4-tuple: two IPv6 peers that
    differ only past their first four bytes get unrelated values (``struct`` would
    have cut each address to its first four bytes)."""
    other = V6_B[:-1] + b"\x03"
    isn = IsnGenerator(b"k" * 32)
    assert isn.offset(V6_A, 80, V6_B, 4000) != isn.offset(V6_A, 80, other, 4000)
    cookies = SynCookies(b"k" * 32)
    a, _ = cookies.make(V6_A, 80, V6_B, 4000, Seq(1), 1460, 1000.0)
    b, _ = cookies.make(V6_A, 80, other, 4000, Seq(1), 1460, 1000.0)
    assert a != b
    assert len(pack_tuple(V6_A, 80, V6_B, 4000)) == 36
    assert len(pack_tuple(V4_A, 80, V4_B, 4000)) == 12


class PreferringNetwork(StaticNetwork):
    """Fixed tables whose route lookup prefers one source address (as the kernel's
    RTA_PREFSRC)."""

    preferred: bytes | None = None

    def source_for(self, dst: bytes) -> bytes | None:
        return self.preferred


def test_an_outgoing_connection_comes_from_the_kernels_preferred_source() -> None:
    """RFC 6724 source selection is the kernel's (KernelNetwork.source_for): the engine
    takes the route's preferred source when it is one of its addresses, else the lowest
    of the family."""
    second = bytes.fromhex("20010db8000000000000000000000009")
    net = PreferringNetwork("a0", MAC_A, frozenset({V4_A, V6_A, second}), {V6_B: MAC_B})
    engine = Engine(MemoryNic.pair()[0], net, TcpConfig(), clock=FakeClock())
    assert engine.connect(V6_B, 80).local_ip == V6_A  # no opinion: the lowest
    net.preferred = second
    assert engine.connect(V6_B, 81).local_ip == second
    net.preferred = bytes.fromhex("20010db80000000000000000000000ff")  # not ours
    assert engine.connect(V6_B, 82).local_ip == V6_A
