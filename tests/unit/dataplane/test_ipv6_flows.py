"""IPv6 connections in the C data plane (issue 18): Python opens them (C declines an
IPv6 SYN for now), C runs them once adopted, keyed by 16-byte addresses and the family
beside IPv4 flows of the same ports, its frames IPv6 with the pseudo-header checksum
(the peer engine's parser checks it), GSO as TCPv6. (A hand-back for loss, both
families: test_dataplane.py's lost-reply test.) Over the in-memory bed, at explicit
times, bytes checked by hash."""

from __future__ import annotations

import hashlib
import os
import socket

import pytest

from joyride.dataplane.membed import IP6_PEER, IP6_SVC, PORT, Bed, transfer
from joyride.dataplane.plane import lib
from joyride.tcp.connection import TcpConnection
from joyride.wire.frame import parse_frame
from joyride.wire.ipv6 import Ipv6Header

pytestmark = pytest.mark.skipif(lib is None, reason="the C data plane is not built")


def frames_to_peer(bed: Bed) -> list[bytes]:
    """Record every frame on its way to the peer (an impairment that keeps them all)."""
    seen: list[bytes] = []

    def keep(frame: bytes, toward_plane: bool) -> bool:
        if not toward_plane:
            seen.append(frame)
        return True

    bed.impair = keep
    return seen


def both_ways(bed: Bed, client: TcpConnection, app: socket.socket, up: bytes,
              down: bytes) -> None:
    """``transfer`` both ways, checked by hash."""
    got_up, got_down = transfer(bed, client, app, up, down)
    assert hashlib.sha256(got_up).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(got_down).digest() == hashlib.sha256(down).digest()


@pytest.mark.parametrize("gso", [False, True], ids=["frames", "gso"])
def test_an_ipv6_flow_runs_in_c_both_ways(gso: bool) -> None:
    bed = Bed(ipv6=True, gso=gso)
    client, server = bed.connect()
    assert server.local_ip == IP6_SVC and server.remote_ip == IP6_PEER
    _ours, app = bed.adopt(server)
    seen = frames_to_peer(bed)
    before = bed.plane.stats()
    both_ways(bed, client, app, os.urandom(1_500_000), os.urandom(1_000_000))
    st = bed.plane.stats()
    assert server.parked and bed.reasons == []  # all of it in C, nothing for Python
    assert st["declined"] == before["declined"]
    assert st["rx_fast"] - before["rx_fast"] > 500
    parsed = [parse_frame(f, ipv6=True) for f in seen]  # checksums checked
    assert parsed and all(isinstance(p.ip, Ipv6Header) for p in parsed)
    assert all((p.ip.src, p.ip.dst) == (IP6_SVC, IP6_PEER) for p in parsed)
    # Full-sized segments fill the MTU: 14 + 40 + 20 + 12 (timestamps) + 1428.
    assert max(len(f) for f in seen) == 1514
    if gso:
        assert st["gso_sends"] > 0


def test_ipv4_and_ipv6_flows_of_one_port_stay_apart() -> None:
    """Same ports, one flow of each family: the table keys the family too."""
    bed = Bed()
    client4, server4 = bed.connect()
    bed.ip_svc, bed.ip_peer = IP6_SVC, IP6_PEER
    listener = bed.svc.listeners[PORT]
    client6 = bed.peer.connect(IP6_SVC, PORT, local_port=client4.local_port)
    server6 = None
    for _ in range(20):
        bed.step()
        if (server6 := bed.svc.accept(listener)) is not None:
            break
    assert server6 is not None and server6.remote_port == server4.remote_port
    bed.run(5)
    _o4, app4 = bed.adopt(server4)
    _o6, app6 = bed.adopt(server6)
    both_ways(bed, client4, app4, b"four" * 5000, b"FOUR" * 7000)
    both_ways(bed, client6, app6, b"six" * 9000, b"SIX" * 4000)
    assert server4.parked and server6.parked and bed.plane.stats()["flows"] == 2
    key6 = (IP6_SVC, PORT, IP6_PEER, client6.local_port)
    assert lib.dp_flow_find(bed.plane._dp, IP6_SVC, PORT, IP6_PEER, client6.local_port,
                            16) > 0
    assert bed.plane.claim(key6) is None  # adopted, not born: Python's already


def test_an_ipv6_syn_to_a_port_c_listens_on_goes_to_python() -> None:
    """C opens IPv4 connections only for now: an IPv6 SYN is declined, and Python's
    listener answers it."""
    from test_born import Born

    born = Born()
    try:
        declined = born.stats()["declined"]
        client = born.bed.peer.connect(IP6_SVC, PORT)
        born.bed.run(10)
        assert born.stats()["declined"] > declined
        assert client.state.name == "ESTABLISHED"
    finally:
        born.close()
