"""The capture tap (capture.h): both directions of a C-run connection in pcap records,
the filter interpreter against libpcap's own, a full ring drops and counts."""

from __future__ import annotations

import os
import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_dataplane import exchange

from joyride import pcap
from joyride.dataplane import tap
from joyride.dataplane.membed import MAC_PEER, MAC_SVC, Bed

EXPRESSIONS = [
    "tcp", "udp", "arp", "ip", "tcp port 80", "src port 80", "dst host 10.9.0.1",
    "host 10.9.0.2 and tcp port 47000", "tcp[tcpflags] & tcp-syn != 0",
    "tcp[tcpflags] & (tcp-fin|tcp-rst) != 0", "len > 100", "ip[8] < 64",
    "not tcp port 22", "vlan", "portrange 1000-2000", "greater 60",
    "tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420",  # "GET " at the payload's start
]


def records_of(data: bytes) -> list[pcap.Record]:
    return list(pcap.records(pcap.file_header(65535) + data))


def test_both_directions_of_a_c_run_connection_are_captured() -> None:
    bed = Bed()
    t = tap.Tap(snaplen=65535)
    bed.plane.capture(t)
    client, server = bed.connect()
    _ours, app = bed.adopt(server)
    request, reply = b"GET /one\r\n", os.urandom(700)
    assert exchange(bed, client, app, request, reply) == reply
    got = records_of(t.read())
    bed.plane.capture(None)
    assert t.stats()["captured"] == len(got) and t.stats()["dropped"] == 0
    syns = [r for r in got if r.data[47] & 0x02]  # TCP flags byte (no IP options)
    assert any(r.data[6:12] == MAC_PEER for r in syns)  # the peer's SYN, received
    assert any(r.data[6:12] == MAC_SVC for r in syns)  # our SYN-ACK, sent
    assert any(r.data[6:12] == MAC_PEER and r.data.endswith(request) for r in got)
    assert any(r.data[6:12] == MAC_SVC and r.data.endswith(reply) for r in got)
    assert all(len(r.data) == r.length for r in got)
    # Off again: nothing more is copied.
    assert exchange(bed, client, app, request, reply) == reply
    assert t.read() == b""


def test_filter_and_snaplen_apply() -> None:
    bed = Bed()
    t = tap.Tap(snaplen=60, program=pcap.compile_filter("tcp[tcpflags] & tcp-syn != 0"))
    bed.plane.capture(t)
    client, server = bed.connect()
    _ours, app = bed.adopt(server)
    exchange(bed, client, app, b"x" * 100, b"y" * 100)
    got = records_of(t.read())
    assert len(got) == 2  # SYN and SYN-ACK only
    assert all(len(r.data) == 60 and r.length > 60 for r in got)


def test_a_full_ring_drops_and_counts() -> None:
    bed = Bed()
    t = tap.Tap(snaplen=65535, ring_bytes=4096)
    bed.plane.capture(t)
    client, server = bed.connect()
    _ours, app = bed.adopt(server)
    for _ in range(5):
        exchange(bed, client, app, os.urandom(1000), os.urandom(1000))
    stats = t.stats()
    assert stats["dropped"] > 0 and stats["captured"] + stats["dropped"] == stats["matched"]
    got = records_of(t.read())
    assert len(got) == stats["captured"]  # whole records, never a torn one


def test_invalid_programs_are_refused() -> None:
    ret = (0x06, 0, 0, 65535)
    assert tap.validate([ret])
    assert not tap.validate([])
    assert not tap.validate([(0x15, 5, 0, 0), ret])  # jump past the end
    assert not tap.validate([(0x00, 0, 0, 0)])  # no return at the end
    assert not tap.validate([(0x34, 0, 0, 0), ret])  # A /= 0
    assert not tap.validate([(0x02, 0, 0, 16), ret])  # scratch word 16
    with pytest.raises(ValueError):
        tap.Tap(snaplen=100, program=[(0x15, 5, 0, 0), ret])


def _frame(rng: random.Random) -> bytes:
    """An Ethernet/IPv4 frame, TCP or UDP or other, often truncated or garbled."""
    proto = rng.choice([6, 6, 6, 17, 1])
    ihl = rng.choice([5, 5, 6])
    payload = rng.randbytes(rng.randrange(0, 80))
    l4 = struct.pack("!HHIIBBHHH", rng.choice([80, 22, 1500, 47000, rng.randrange(65536)]),
                     rng.choice([80, 47000, rng.randrange(65536)]), rng.getrandbits(32),
                     rng.getrandbits(32), rng.choice([0x50, 0x80]), rng.getrandbits(8),
                     rng.getrandbits(16), 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + 4 * (ihl - 5) + len(l4),
                     rng.getrandbits(16), rng.choice([0, 0x2000, 0x0010]),
                     rng.randrange(256), proto, 0,
                     bytes([10, 9, 0, rng.choice([1, 2, 3])]),
                     bytes([10, 9, 0, rng.choice([1, 2])])) + bytes(4 * (ihl - 5))
    eth = MAC_SVC + MAC_PEER + rng.choice([b"\x08\x00", b"\x08\x00", b"\x08\x06",
                                           b"\x81\x00"])
    frame = eth + ip + l4
    if rng.random() < 0.2:
        frame = frame[:rng.randrange(len(frame))]
    return frame


PROGRAMS = {e: pcap.compile_filter(e) for e in EXPRESSIONS}


@given(st.integers(0, 2**32 - 1))
def test_filter_verdicts_match_libpcap(seed: int) -> None:
    rng = random.Random(seed)
    frame = _frame(rng)
    for expression, program in PROGRAMS.items():
        assert tap.run_filter(program, frame) == pcap.libpcap_verdict(program, frame), \
            expression
