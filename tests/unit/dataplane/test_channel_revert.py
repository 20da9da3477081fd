"""Leaving ring mode on the service's side (chan.h, ``JR_CHAN_REVERT_BYTE``;
docs/channels.md, "Leaving ring mode"): the application sends one byte with a new
socket's service end; the service takes what tx holds, puts the new socket in the old
one's place, sends rx's bytes the application never read, and serves a plain stream
from then on. In C, and in Python's ``Pump`` after a hand-back, with the same steps,
over the in-memory bed at explicit times; every byte checked by hash. The
application's half is done by hand here (the shim's is ``preload/joyride_revert.c``,
tested under ``joyride run``)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from collections.abc import Callable, Iterator

import pytest
from test_channels import App, Claiming, payload, python_ring_pump, python_step

from joyride.dataplane.membed import read_all
from joyride.dataplane.plane import lib
from joyride.tcp.connection import TcpConnection

pytestmark = pytest.mark.skipif(lib is None, reason="the C data plane is not built")


@pytest.fixture
def bed() -> Iterator[Claiming]:
    b = Claiming()
    yield b
    b.close()


def ring_connection(bed: Claiming) -> tuple[TcpConnection, App]:
    client, app = bed.connect()
    app.claim()
    bed.bed.run(3)
    assert app.verdict() == 1
    return client, app


def revert(app: App) -> socket.socket:
    """The application's step: a new pair, its service end sent with the request; the
    other end is the application's descriptor from now on (the shim dup3s it over the
    old one; here the old one just closes)."""
    mine, theirs = socket.socketpair()
    socket.send_fds(app.sock, [b"R"], [theirs.fileno()])
    theirs.close()
    app.sock.close()
    mine.setblocking(False)
    return mine


def drive(step: Callable[[], None], client: TcpConnection, new: socket.socket,
          want_app: int, up: bytes = b"", steps: int = 3000) -> tuple[bytes, bytes]:
    """Step until the application's new socket read want_app bytes and the peer read
    everything the application sent (``up`` is written on the new socket)."""
    got_app, got_client = bytearray(), bytearray()
    sent = 0
    for _ in range(steps):
        if sent < len(up):
            with contextlib.suppress(BlockingIOError):
                sent += new.send(up[sent:sent + 65536])
        got_app += read_all(new)
        got_client += client.recv(1 << 20)
        step()
        if len(got_app) >= want_app and len(got_client) == len(up) and sent == len(up):
            break
    return bytes(got_app), bytes(got_client)


def leave_unread(bed: Claiming, client: TcpConnection, app: App, step: Callable[[], None]
                 ) -> tuple[bytes, bytes]:
    """Both ways through the rings first; then bytes the application leaves in rx, and
    bytes it wrote into tx just before its request. (read, unread)."""
    first = payload(20_000, 11)
    client.send(first)
    bed.bed.peer.mark(client)
    got = bytearray()
    for _ in range(200):
        step()
        got += app.read() or b""
        if len(got) == len(first):
            break
    assert got == first
    assert app.write(b"from the rings") == len(b"from the rings")
    unread = payload(3000, 12)  # fits the small test ring whole
    client.send(unread)
    bed.bed.peer.mark(client)
    for _ in range(20):
        step()
    return first, unread


def test_a_revert_in_c_loses_nothing_and_serves_a_stream(bed: Claiming) -> None:
    client, app = ring_connection(bed)
    _, unread = leave_unread(bed, client, app, bed.bed.step)
    app.write(b" and tx's last")
    new = revert(app)
    later = payload(100_000, 13)
    client.send(later)
    bed.bed.peer.mark(client)
    up = payload(80_000, 14)
    got_app, got_client = drive(bed.bed.step, client, new, len(unread) + len(later), up)
    # rx's unread bytes first, then what came after, each once.
    assert hashlib.sha256(got_app).digest() == hashlib.sha256(unread + later).digest()
    # tx's bytes before the request, then the new socket's.
    assert hashlib.sha256(got_client).digest() == \
        hashlib.sha256(b"from the rings and tx's last" + up).digest()
    st = bed.stats()
    assert st["chan_reverts"] == 1 and st["chan_revert_bytes"] == len(unread)
    assert st["chan_released"] == 1 and st["chan_broken"] == 0  # flushed: let go
    # The EOFs, both ways, on the new socket.
    new.shutdown(socket.SHUT_WR)
    for _ in range(50):
        bed.bed.step()
    assert client.eof
    client.close()
    bed.bed.peer.mark(client)
    for _ in range(50):
        bed.bed.step()
    assert new.recv(10) == b""


def test_a_revert_after_the_peers_fin_shows_the_eof_after_the_unread_bytes(
        bed: Claiming) -> None:
    """The EOF the service gave on the old socket (rx_eof, its shutdown) comes again on
    the new one, after rx's bytes: an inetd-style child reads the whole request. (C
    hands a flow back with the peer's FIN: Python's pump runs it then.)"""
    client, app, _conn, pump = python_ring_pump(bed)

    def step() -> None:
        python_step(bed.bed, pump)

    _, unread = leave_unread(bed, client, app, step)
    client.shutdown_write()  # the FIN after the unread bytes: rx_eof, old socket shut
    bed.bed.peer.mark(client)
    for _ in range(20):
        step()
    assert pump.fin_sent_to_app
    new = revert(app)
    got = bytearray()
    for _ in range(200):
        step()
        try:
            d = new.recv(1 << 16)
        except BlockingIOError:
            continue
        if not d:
            break
        got += d
    else:
        pytest.fail("no EOF on the new socket")
    assert bytes(got) == unread
    assert bed.stats()["chan_reverts"] == 1


def test_a_revert_after_the_applications_shutdown_is_still_taken_up(bed: Claiming) -> None:
    """After the application's shutdown(SHUT_WR) (tx_eof) its socket still carries a
    revert request: C keeps watching it, switches, and the unread bytes arrive."""
    client, app = ring_connection(bed)
    _, unread = leave_unread(bed, client, app, bed.bed.step)
    lib.dp_app_shutdown(app.chan)
    for _ in range(20):
        bed.bed.step()
    assert client.eof  # the application's FIN
    new = revert(app)
    got, _ = drive(bed.bed.step, client, new, len(unread), steps=200)
    assert got == unread
    assert bed.stats()["chan_reverts"] == 1


def test_a_revert_in_python_loses_nothing_and_serves_a_stream(bed: Claiming) -> None:
    client, app, _conn, pump = python_ring_pump(bed)

    def step() -> None:
        python_step(bed.bed, pump)

    _, unread = leave_unread(bed, client, app, step)
    old_fd = pump.sock.fileno()
    new = revert(app)
    later = payload(60_000, 15)
    client.send(later)
    bed.bed.peer.mark(client)
    up = payload(50_000, 16)
    got_app, got_client = drive(step, client, new, len(unread) + len(later), up)
    assert hashlib.sha256(got_app).digest() == hashlib.sha256(unread + later).digest()
    assert hashlib.sha256(got_client).digest() == \
        hashlib.sha256(b"from the rings" + up).digest()
    assert pump.channel.chan == 0 and pump.channel.revert_chan == 0
    assert pump.sock.fileno() == old_fd  # the new socket took the old one's number
    st = bed.stats()
    assert st["chan_reverts"] == 1 and st["chan_revert_bytes"] == len(unread)
    assert st["chan_released"] == 1


def test_a_descriptor_that_is_no_unix_stream_resets_only_its_connection(
        bed: Claiming) -> None:
    _client, app = ring_connection(bed)
    other, other_app = ring_connection(bed)
    r, w = os.pipe()
    try:
        socket.send_fds(app.sock, [b"R"], [r])
    finally:
        os.close(r)
        os.close(w)
    for _ in range(50):
        bed.bed.step()
    st = bed.stats()
    assert st["chan_broken"] == 1 and st["chan_reverts"] == 0
    # The other connection goes on in ring mode.
    other.send(b"still here")
    bed.bed.peer.mark(other)
    got = b""
    for _ in range(50):
        bed.bed.step()
        got += other_app.read() or b""
        if got:
            break
    assert got == b"still here"
