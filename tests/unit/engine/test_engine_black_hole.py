"""ICMP black holes (RFC 4821 §3, issue 18): a path whose MTU is smaller than the link's
and whose "packet too big" never reaches the sender. Full-sized segments vanish; after
``black_hole_rtos`` timeouts in a row the sender drops its MSS and the transfer goes
through, in both families. Two engines on an in-memory wire that silently drops every
frame over the path's MTU, at explicit times."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence

import pytest
from test_engine import FakeClock
from test_engine_ipv6 import V4_A, V6_A, dual_stack

from joyride.engine import MemoryNic
from joyride.tcp.config import TcpConfig
from joyride.tcp.connection import TcpConnection, path_mss
from joyride.tcp.pmtu import REPROBE_INTERVAL, SEARCH_DONE
from joyride.wire.frame import parse_frame


class NarrowPath(MemoryNic):
    """A link of MTU 1500 whose path drops frames over ``path_mtu``: without a word, or
    with a "packet too big" for ``router`` to hear (the raw socket's report)."""

    def __init__(self, path_mtu: int) -> None:
        super().__init__()
        self.path_mtu = path_mtu
        self.swallowed = 0
        self.router: Callable[[bytes], None] | None = None

    def transmit(self, frames: Sequence[bytes | bytearray | memoryview]) -> int:
        fits = []
        for f in frames:
            if len(f) - 14 <= self.path_mtu:
                fits.append(f)
                continue
            self.swallowed += 1
            if self.router is not None:
                self.router(bytes(f))
        super().transmit(fits)
        return len(frames)


def download(path_mtu: int, ipv6: bool, config: TcpConfig, n: int = 300_000,
             seconds: float = 60.0, icmp: bool = False, widen_after_cut: bool = False
             ) -> tuple[bytes, bytes, TcpConnection, NarrowPath]:
    """``n`` bytes from A (the sender, behind the narrow path) to B; what was sent, what
    arrived within ``seconds`` of simulated time, A's connection and its NIC. With
    ``widen_after_cut``, the path carries full frames once A has cut its MSS."""
    clock = FakeClock()
    nic_a = NarrowPath(path_mtu)
    a, b, _, _ = dual_stack(clock, config, nics=(nic_a, MemoryNic()))
    listener = a.listen(8080)
    client = b.connect(V6_A if ipv6 else V4_A, 8080)
    for _ in range(10):  # the handshake's segments are small: they pass
        a.poll()
        b.poll()
        clock.now += 0.001
    server = a.accept(listener)
    assert server is not None
    if icmp:
        def report(frame: bytes) -> None:  # what Datapath.path_too_big does with it
            assert server is not None
            server.path_too_big(path_mtu, parse_frame(frame, ipv6=True).tcp.seq, clock.now)

        nic_a.router = report
    data = os.urandom(n)
    sent, got = 0, bytearray()
    while clock.now < 1000.0 + seconds and len(got) < n:
        if widen_after_cut and server.counters["mss_black_hole"]:
            nic_a.path_mtu = 1500
        sent += server.send(data[sent:])
        a.mark(server)
        a.poll()
        b.poll()
        got += client.recv()
        b.mark(client)
        clock.now += 0.01
    return data, bytes(got), server, nic_a


# The largest MSS a path carries: its MTU less IP, TCP and the timestamp option.
def fitting(path_mtu: int, ipv6: bool) -> int:
    return path_mtu - (40 if ipv6 else 20) - 20 - 12


@pytest.mark.parametrize(("ipv6", "path_mtu"), [(False, 1200), (True, 1280)],
                         ids=["ipv4", "ipv6"])
def test_a_black_hole_is_found_and_the_mss_searched_up_to_the_path(ipv6: bool,
                                                                   path_mtu: int) -> None:
    """Detection cuts the MSS (to 1024, or IPv6's minimum 1220), then probes search
    upward (RFC 4821 §7): the MSS ends within SEARCH_DONE of the largest the path
    carries, never above it; the probes that were too big were lost and resent."""
    data, got, server, nic = download(path_mtu, ipv6, TcpConfig(), n=1_000_000)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert nic.swallowed > 0  # the full-sized segments were lost
    assert server.counters["mss_black_hole"] == 1
    assert server.counters["mss_probes"] >= 2 and server.counters["mss_probe_failed"] >= 1
    best = fitting(path_mtu, ipv6)
    assert best - SEARCH_DONE < server.mss <= best
    # What the search found is the destination's news, told once (with the option).
    assert server.take_found_path_mss() == server.mss + 12
    assert server.take_found_path_mss() is None
    if not ipv6:  # 1012 was the cut; IPv6's floor (1208) is all its path carries
        assert server.counters["mss_probe_raised"] >= 1


def test_without_detection_the_black_hole_stalls_the_transfer() -> None:
    """The control: with detection off, not one full-sized segment gets through."""
    _data, got, server, nic = download(1200, False, TcpConfig(black_hole_rtos=0), seconds=20.0)
    assert len(got) == 0 and nic.swallowed > 0
    assert server.counters["mss_black_hole"] == 0


def test_each_further_timeout_halves_the_mss_down_to_the_floor() -> None:
    """Past the first step (1024), a path narrower still: 512 would be under IPv4's
    floor of 536, so the MSS stops there (536 fits this path), and the search then
    finds the path's own size above it."""
    data, got, server, _ = download(600, False, TcpConfig(), n=600_000)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert server.counters["mss_black_hole"] == 2
    assert fitting(600, False) - SEARCH_DONE < server.mss <= fitting(600, False)


def test_a_path_that_widens_during_the_search_gets_its_mss_back() -> None:
    """The cut is a guess: the path carries full frames again right after it, so the
    probes succeed and the MSS climbs back to within SEARCH_DONE of the size that timed
    out."""
    data, got, server, _ = download(1200, False, TcpConfig(), n=1_000_000,
                                    widen_after_cut=True)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert server.counters["mss_black_hole"] == 1
    assert server.counters["mss_probe_failed"] == 0
    assert 1448 - SEARCH_DONE < server.mss < 1448


@pytest.mark.parametrize(("ipv6", "mss"), [(False, 1200 - 40), (True, 1280 - 60)],
                         ids=["ipv4", "ipv6"])
def test_a_packet_too_big_report_sizes_the_mss_at_once(ipv6: bool, mss: int) -> None:
    """RFC 1191 / RFC 8201: the router's report names the MTU; the MSS fits it (less the
    timestamp option) and loss recovery resends what was dropped: no timeout piles up
    into black-hole detection."""
    path_mtu = 1280 if ipv6 else 1200
    data, got, server, _ = download(path_mtu, ipv6, TcpConfig(), icmp=True)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert server.counters["mss_path_mtu"] == 1
    assert server.counters["mss_black_hole"] == 0
    assert server.mss == mss - 12
    # The router named the MTU: the next probe waits REPROBE_INTERVAL (as a learned
    # route MTU expires), not this transfer's minute.
    assert server.counters["mss_probes"] == 0
    assert server.pmtu_due is not None and server.pmtu_due >= 1000.0 + REPROBE_INTERVAL


def test_a_learnt_path_mss_fits_a_new_connection_from_the_start() -> None:
    """path_mss is the one rule for the MSS a path MTU allows (family minimum floor);
    clamp_to_path fits a new connection to a learnt one, and the search starts later
    (REPROBE_INTERVAL), as after the router's own report."""
    assert path_mss(1200, False) == 1160 and path_mss(1280, True) == 1220
    assert path_mss(576, False) == 536 and path_mss(1300, True) == 1240
    _data, _got, server, _ = download(1500, False, TcpConfig(), n=10_000)  # a clear path
    assert server.clamp_to_path(1160, 2000.0)
    assert server.mss == 1160 - 12 and server.counters["mss_path_learnt"] == 1
    assert server.pmtu_due == 2000.0 + REPROBE_INTERVAL
    assert not server.clamp_to_path(1400, 2000.0)  # never up


def test_a_report_for_a_segment_not_in_flight_is_not_believed() -> None:
    """RFC 5927 §4.1: a blind attacker must name a sequence number in flight."""
    data, got, server, _ = download(1200, False, TcpConfig(), icmp=True, n=50_000)
    assert got == data
    before = server.mss
    stale = server.snd_una - 100_000
    assert not server.path_too_big(600, stale, 2000.0)
    assert server.counters["path_too_big_stale"] == 1 and server.mss == before
    beyond = server.snd_una + 10_000_000  # past anything sent
    assert not server.path_too_big(600, beyond, 2000.0)
    assert server.counters["path_too_big_stale"] == 2 and server.mss == before
