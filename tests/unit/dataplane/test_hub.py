"""The embedding process's channels (``joyride/dataplane/hub.c``, ``hub.py``): claims
with the process's bell, on the in-memory bed at explicit times, bytes checked by hash.

What is checked: a bell claim is answered, and the bell names the slot for the verdict;
the receive ring's tokens go to the bell, never to the socket, and the eventfd is
written only while the application is armed; bytes both ways through small rings (full
and empty often), the application's writes ringing the door (not the socket); EOF both
ways and the slot back to the hub once the service releases it; a hub without a free
slot leaves the connection a stream; a slot whose claim is unanswered is not reused.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import socket
from collections.abc import Iterator

import pytest
from test_born import Born
from test_channels import both_eofs, exchange, payload

from joyride.dataplane.hub import Hub
from joyride.dataplane.membed import IP_SVC, PORT, read_all
from joyride.dataplane.plane import ffi, lib
from joyride.tcp.connection import TcpConnection
from joyride.tcp.state import TcpState

pytestmark = pytest.mark.skipif(lib is None, reason="the C data plane is not built")

RING = 4096


class HubEnd:
    """One slot's end, as test_channels' ``exchange`` drives an application."""

    def __init__(self, hub: Hub, slot: int) -> None:
        self.hub = hub
        self.slot = slot

    def read(self, n: int = 1 << 16) -> bytes | None:
        """None: nothing now; b"": EOF."""
        buf = ffi.new("uint8_t[]", n)
        got = self.hub.read_into(self.slot, buf, n)
        if got == -errno.EAGAIN:
            return None
        assert got >= 0, os.strerror(-got)
        return bytes(ffi.buffer(buf, got))

    def write(self, data: bytes) -> int:
        return max(self.hub.write(self.slot, data), 0)


class HubBed(Born):
    """test_born's bed whose listener claims, its application this process's hub."""

    def __init__(self, slots: int = 4) -> None:
        super().__init__(backlog=16, max_flows=64, claims=True)
        self.hub = Hub(slots=slots, ring_bytes=RING)
        self.bed.plane.set_bell(self.hub)
        self.socks: list[socket.socket] = []

    def connect(self) -> tuple[TcpConnection, socket.socket, int]:
        client = self.bed.peer.connect(IP_SVC, PORT)
        self.bed.run(5)
        assert client.state is TcpState.ESTABLISHED
        sock = self.accept()
        self.socks.append(sock)
        return client, sock, self.hub.claim(sock.fileno())

    def read(self, slot: int) -> bytes | None:
        return HubEnd(self.hub, slot).read()

    def efd_count(self) -> int:
        try:
            return int.from_bytes(os.read(self.hub.efd, 8), "little")
        except BlockingIOError:
            return 0

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        super().close()
        self.hub.close()  # freed now if no slot is live


@pytest.fixture
def bed() -> Iterator[HubBed]:
    b = HubBed()
    yield b
    b.close()


def test_the_bell_names_the_verdict_then_the_bytes(bed: HubBed) -> None:
    client, sock, slot = bed.connect()
    assert slot == 0
    assert bed.hub.verdict(slot) == -errno.EAGAIN
    bed.bed.run(3)
    assert bed.hub.take() == [slot]  # the verdict, rung
    assert bed.hub.verdict(slot) == 1
    assert bed.read(slot) is None  # empty: armed
    # Busy (not armed): the bytes ring the bell's queue, not the eventfd.
    bed.efd_count()
    client.send(b"hello")
    bed.bed.peer.mark(client)
    bed.bed.run(3)
    assert bed.hub.take() == [slot]
    assert bed.efd_count() == 0
    assert bed.read(slot) == b"hello"
    assert bed.read(slot) is None
    # Armed (about to sleep): the next bytes write the eventfd, once.
    assert bed.hub.arm() is False
    client.send(b"world")
    bed.bed.peer.mark(client)
    bed.bed.run(3)
    assert bed.efd_count() == 1
    assert bed.hub.take() == [slot]
    assert bed.read(slot) == b"world"
    # Never a token on the socket.
    assert read_all(sock) == b""
    st = bed.stats()
    assert st["chan_ring"] == 1 and st["chan_broken"] == 0


def test_both_ways_through_small_rings_then_both_eofs(bed: HubBed) -> None:
    client, sock, slot = bed.connect()
    bed.bed.run(3)
    assert bed.hub.verdict(slot) == 1
    up, down = payload(200_000, 3), payload(150_000, 4)
    got_app, got_client = exchange(bed, client, HubEnd(bed.hub, slot), up, down, steps=6000)
    assert hashlib.sha256(got_app).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(got_client).digest() == hashlib.sha256(down).digest()
    both_eofs(bed, client, HubEnd(bed.hub, slot), functools.partial(bed.hub.shutdown, slot))
    # The application closes: the slot comes back once the service releases it.
    bed.hub.done(slot)
    sock.close()
    bed.socks.remove(sock)
    bed.bed.run(20)
    assert bed.stats()["chan_released"] == 1
    assert bed.hub.live == 0
    _, _, again = bed.connect()
    assert again >= 0


def test_no_free_slot_leaves_a_stream() -> None:
    b = HubBed(slots=1)
    try:
        _, _, first = b.connect()
        assert first == 0
        client, sock, second = b.connect()
        assert second == -errno.ENOSPC  # a claim made to be refused: no delivery waits
        b.bed.run(3)
        client.send(b"as a stream")
        b.bed.peer.mark(client)
        b.bed.run(5)
        assert read_all(sock) == b"as a stream"
        assert b.stats()["chan_refused"] == 1
    finally:
        b.close()


def test_a_slot_waits_for_the_services_answer() -> None:
    """A connection that ends with its claim unanswered keeps its slot: the service may
    still read the claim (late, after delivering a stream) and write its refusal there,
    so the slot is reused only once an answer for that claim is in it."""
    b = HubBed(slots=1)
    try:
        a, b_sock = socket.socketpair()  # no service at the other end: never answered
        slot = b.hub.claim(a.fileno())
        assert slot == 0 and b.hub.live == 1
        b.hub.done(slot)
        assert b.hub.live == 0
        assert b.hub.claim(b_sock.fileno()) == -errno.ENOSPC  # still the old claim's
        a.close()
        b_sock.close()
    finally:
        b.close()


def test_released_slots_are_reused_warm_and_an_unanswered_one_holds_up_none() -> None:
    """Each new connection takes the slot the last one released (its pages are warm:
    the arena's resident memory follows the connections open at once), and a slot
    still waiting for an answer does not keep the released ones from coming back."""
    b = HubBed(slots=4)
    try:
        socketpair = socket.socketpair()
        a = socketpair[0]
        assert b.hub.claim(a.fileno()) == 0  # never answered: stays out of use
        b.hub.done(0)
        for round_ in range(5):
            client, sock, slot = b.connect()
            assert slot == 1, f"round {round_}: slot {slot}"
            b.bed.run(3)
            assert b.hub.verdict(slot) == 1
            both_eofs(b, client, HubEnd(b.hub, slot), functools.partial(b.hub.shutdown, slot))
            b.hub.done(slot)
            sock.close()
            b.socks.remove(sock)
            b.bed.run(20)
            assert b.stats()["chan_released"] == round_ + 1
        for s in socketpair:
            s.close()
    finally:
        b.close()
