"""Frames through AF_XDP on the veth bed, in native and skb mode (after xskxceiver).

Kernel → socket: sequence-numbered frames from a raw packet socket on the peer must all
arrive, in order and intact. Socket → kernel: frames sent through the tx ring must reach
a raw packet socket on the peer intact. Fill-ring starvation must show in the kernel's
statistics, and refilling must resume delivery.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import time

import numpy as np
import pytest
from xsk_helpers import ETH_P_TX, MODES, Link, frame_size_for, payload

from xsk import RxArrays, Socket, SocketClosed, Umem, XskError, attach_redirect_all

pytestmark = pytest.mark.integration


def open_socket(link: Link, mode: str, frame_count: int = 4096,
                **kwargs: object) -> tuple[Socket, Umem]:
    tb = link.tb
    with tb.joy.inside():
        umem = Umem(frame_count=frame_count)
        link.closers.append(umem.close)
        prog = attach_redirect_all(tb.joy.ifname, mode)  # type: ignore[arg-type]
        link.closers.append(prog.detach)
        sock = Socket(tb.joy.ifname, 0, umem, mode=mode, **kwargs)  # type: ignore[arg-type]
        link.closers.append(sock.close)
        prog.register(sock)
    return sock, umem


def receive(sock: Socket, count: int, batch: int = 64, timeout: float = 5.0) -> list[bytes]:
    """Copy ``count`` frames out (releasing every batch), or fewer on timeout."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        with sock.recv(batch, timeout=0.1) as frames:
            got.extend(bytes(f) for f in frames)
    return got


def packed(frames: list[bytes]) -> tuple[bytearray, np.ndarray, np.ndarray]:
    """Frames laid end to end in one region, with their offsets and lengths: what
    ``send_copy`` (and ``xsk_tx_copy_kick``) take."""
    region = bytearray(b"".join(frames))
    lengths = np.array([len(f) for f in frames], dtype=np.uint32)
    offsets = np.zeros(len(frames), dtype=np.uint64)
    offsets[1:] = np.cumsum(lengths[:-1])
    return region, offsets, lengths


def check_in_order(link: Link, frames: list[bytes], first: int) -> None:
    for k, data in enumerate(frames):
        seq = first + k
        assert data == link.frame(seq), f"frame {k}: expected seq {seq}, got " \
            f"{struct.unpack('!I', data[14:18])[0]} ({len(data)} bytes)"


def all_completed(sock: Socket, umem: Umem, free_before: int, sent: int) -> dict[str, int]:
    """Wait for every sent frame to come back on the completion ring (all of them to
    the allocator); returns the socket's statistics."""
    deadline = time.monotonic() + 5
    while sock.tx_outstanding and time.monotonic() < deadline:
        sock.poll_completions()
        time.sleep(0.01)
    assert sock.tx_outstanding == 0
    assert umem.free_frames == free_before
    stats = sock.statistics()
    assert stats["tx_frames"] == stats["comp_frames"] == sent
    return stats


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", [1, 64, 256])
def test_kernel_to_socket_in_order_and_intact(link: Link, mode: str, batch: int) -> None:
    sock, _umem = open_socket(link, mode)
    total = 0
    # More frames than the UMEM has: delivery depends on frames being recycled.
    for _ in range(6):
        link.send_seq(total, 1000)
        got = receive(sock, 1000, batch)
        check_in_order(link, got, total)
        assert len(got) == 1000
        total += 1000
    stats = sock.statistics()
    assert stats["rx_frames"] == total
    assert stats["rx_dropped"] == 0 and stats["rx_invalid_descs"] == 0
    assert stats["rejected_rx"] == 0 and stats["rejected_fill"] == 0
    assert sock.rx_pending == 0


@pytest.mark.parametrize("mode", MODES)
def test_batch_views_are_zero_copy_into_the_umem(link: Link, mode: str) -> None:
    sock, umem = open_socket(link, mode)
    link.send_seq(0, 10)
    deadline = time.monotonic() + 5
    batch = sock.recv(16, timeout=1.0)
    while len(batch) < 10 and time.monotonic() < deadline:
        sock.release(batch)
        batch = sock.recv(16, timeout=1.0)
    # (A test bed sends them back to back; they arrive in one batch here.)
    assert len(batch) == 10
    desc = batch.descriptors
    assert desc["len"].tolist() == [14 + frame_size_for(s) for s in range(10)]
    for i, addr in enumerate(batch.addrs.tolist()):
        assert umem.owner(addr) == "app"
        view = batch[i]
        assert view.obj is not None and len(view) == batch.lens[i]
        # The same bytes through numpy, by address: one memory, no copies.
        arr = umem.array[addr:addr + int(batch.lens[i])]
        assert arr.tobytes() == bytes(view) == link.frame(i)
        view[14] ^= 0xFF
        assert arr[14] == view[14]
    # The writes above went to the UMEM: iterating the batch shows them.
    assert [bytes(v[14:18]) for v in batch] == [
        bytes([0xFF]) + struct.pack("!I", s)[1:] for s in range(10)]
    addrs = batch.addrs.tolist()
    assert sock.release(batch) == 10
    assert batch.released and len(batch) == 0
    assert sock.release(batch) == 0  # idempotent
    assert {umem.owner(a).startswith("kernel") for a in addrs} == {True}


@pytest.mark.parametrize("mode", MODES)
def test_socket_to_kernel_intact(link: Link, mode: str) -> None:
    sock, umem = open_socket(link, mode)
    free_before = umem.free_frames
    sent = 0
    for first in range(0, 600, 100):
        frames = [link.frame(s, ETH_P_TX, dst=link.peer_mac) for s in range(first, first + 100)]
        assert sock.send(frames) == 100
        got = link.recv_peer(100)
        assert got == frames
        sent += 100
    stats = all_completed(sock, umem, free_before, sent)
    assert stats["tx_invalid_descs"] == 0 and stats["rejected_tx"] == 0


@pytest.mark.parametrize("mode", MODES)
def test_zero_copy_tx_batch(link: Link, mode: str) -> None:
    sock, _umem = open_socket(link, mode)
    head = link.peer_mac + link.joy_mac + struct.pack("!H", ETH_P_TX)
    frames = [head + payload(i, 200) for i in range(64)]
    frames[63] = frames[63][:100]  # lengths are per descriptor
    batch = sock.alloc_tx(64, length=len(frames[0]))
    for i in range(63):
        batch[i][:len(frames[i])] = frames[i]  # written in place, in the UMEM
    assert np.all(batch.lens == len(frames[0]))
    batch.set(63, frames[63])
    assert batch.lens[63] == 100
    assert sock.send(batch) == 64
    assert len(batch) == 0
    assert link.recv_peer(64) == frames
    batch.release()  # nothing unsent: no-op


@pytest.mark.parametrize("mode", MODES)
def test_fill_ring_starvation_counts_drops_and_recovers(link: Link, mode: str) -> None:
    sock, _umem = open_socket(link, mode, fill_frames=0)
    link.send_seq(0, 50)
    assert len(sock.recv(64, timeout=0.3)) == 0
    stats = sock.statistics()
    assert stats["rx_fill_ring_empty_descs"] >= 50
    assert stats["rx_dropped"] >= 50
    assert sock.fill(128) == 128
    link.send_seq(50, 100)
    got = receive(sock, 100)
    check_in_order(link, got, 50)
    assert len(got) == 100
    after = sock.statistics()
    assert after["rx_fill_ring_empty_descs"] == stats["rx_fill_ring_empty_descs"]


@pytest.mark.parametrize("mode", MODES)
def test_rx_ring_full_is_counted(link: Link, mode: str) -> None:
    sock, _umem = open_socket(link, mode, rx_size=64, fill_frames=256, fill_size=256)
    link.send_seq(0, 200)  # nobody reads: the 64-entry rx ring overflows
    time.sleep(0.1)
    stats = sock.statistics()
    assert stats["rx_ring_full"] >= 200 - 64
    got = receive(sock, 64)
    check_in_order(link, got, 0)
    assert len(got) == 64


@pytest.mark.parametrize("mode", MODES)
def test_send_copy_queues_frames_built_elsewhere(link: Link, mode: str) -> None:
    """``send_copy``: frames laid out in one region (as the TCP engine's batch builder
    does) are copied into the UMEM and queued in one call; oversized ones are skipped."""
    sock, _umem = open_socket(link, mode)
    head = link.peer_mac + link.joy_mac + struct.pack("!H", ETH_P_TX)
    frames = [head + payload(i, 100 + 10 * i) for i in range(40)]
    region = bytearray(b"".join(frames) + bytes(4096))
    offsets = np.zeros(41, dtype=np.uint64)
    offsets[1:40] = np.cumsum([len(f) for f in frames[:-1]])
    offsets[40] = len(region) - 4096  # an oversized "frame": longer than a UMEM frame
    lengths = np.array([len(f) for f in frames] + [4096], dtype=np.uint32)
    assert sock.send_copy(region, offsets, lengths, 41) == 41
    assert link.recv_peer(40) == frames
    assert sock.statistics()["rejected_tx"] == 1


SO_RCVBUFFORCE = 33  # root may exceed rmem_max (the socket module lacks the name)


@pytest.mark.parametrize("mode", MODES)
def test_send_copy_past_a_full_ring_and_an_empty_allocator(link: Link, mode: str) -> None:
    """One ``send_copy`` of more frames than the tx ring holds and than the allocator
    has free: it wakes the kernel to drain the ring and reaps the completions itself, so
    every frame is consumed and arrives intact and in order. (A short count here once
    made the data plane drop a segment per frame past the ring and retransmit it.)"""
    sock, umem = open_socket(link, mode, frame_count=256, rx_size=64, tx_size=64,
                             fill_size=64, comp_size=64)
    free_before = umem.free_frames
    assert free_before < 1000
    link.peer_rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    head = link.peer_mac + link.joy_mac + struct.pack("!H", ETH_P_TX)
    frames = [head + payload(i, 64) for i in range(1000)]
    region, offsets, lengths = packed(frames)
    assert sock.send_copy(region, offsets, lengths, len(frames), kick=False) == len(frames)
    sock.kick()
    assert link.recv_peer(len(frames)) == frames
    stats = all_completed(sock, umem, free_before, len(frames))
    assert stats["tx_ring_full"] == 0 and stats["kick_errors"] == 0


@pytest.mark.parametrize("mode", MODES)
def test_recv_into_fixed_arrays(link: Link, mode: str) -> None:
    """``recv_into`` fills caller-owned arrays (no batch object): the same frames, in
    order, as ``recv``; ``release_from`` hands them back to the kernel."""
    sock, umem = open_socket(link, mode)
    arrays = RxArrays(8)
    link.send_seq(0, 20)
    got: list[bytes] = []
    deadline = time.monotonic() + 5
    while len(got) < 20 and time.monotonic() < deadline:
        if not sock.wait(0.2):
            continue
        n = sock.recv_into(arrays)
        assert 0 <= n <= 8
        for i in range(n):
            addr, length = int(arrays.addrs[i]), int(arrays.lens[i])
            assert umem.owner(addr) == "app"
            got.append(umem.array[addr:addr + length].tobytes())
        addrs = arrays.addrs[:n].tolist()
        assert sock.release_from(arrays, n) == n
        assert all(umem.owner(a).startswith("kernel") for a in addrs)
    assert got == [link.frame(s) for s in range(20)]
    assert sock.recv_into(arrays) == 0  # nothing left, never waits
    stats = sock.statistics()
    assert stats["rejected_rx"] == 0 and stats["rejected_fill"] == 0


@pytest.mark.parametrize("mode", MODES)
def test_tx_thread_transmits_every_frame_intact(link: Link, mode: str) -> None:
    """With the tx thread, large kicks are the thread's sendto and small ones the
    caller's: either way every frame reaches the peer intact and in order, and each
    one completes back to the allocator."""
    sock, umem = open_socket(link, mode)
    free_before = umem.free_frames
    sock.start_tx_thread(min_batch=16)
    assert sock.tx_thread_running
    sent = 0
    for count in [100, 4, 300, 1, 64] * 4:
        frames = [link.frame(s, ETH_P_TX, dst=link.peer_mac) for s in range(sent, sent + count)]
        assert sock.send(frames) == len(frames)
        assert link.recv_peer(len(frames)) == frames
        sent += len(frames)
    stats = all_completed(sock, umem, free_before, sent)
    assert stats["tx_thread_wakeups"] >= 1 and stats["tx_thread_kicks"] >= 1
    assert stats["tx_thread_errors"] == 0 and stats["kick_errors"] == 0
    sock.stop_tx_thread()
    assert not sock.tx_thread_running
    frames = [link.frame(s, ETH_P_TX, dst=link.peer_mac) for s in range(sent, sent + 50)]
    assert sock.send(frames) == 50  # kicked by the caller again
    assert link.recv_peer(50) == frames


def test_tx_thread_refusals_and_close_while_running(link: Link) -> None:
    sock, _umem = open_socket(link, "skb")
    with pytest.raises(ValueError, match="min_batch"):
        sock.start_tx_thread(0)
    sock.start_tx_thread()
    with pytest.raises(XskError, match="tx thread"):
        sock.start_tx_thread()
    frames = [link.frame(s, ETH_P_TX, dst=link.peer_mac) for s in range(200)]
    assert sock.send(frames) == 200
    sock.close()  # stops and joins the thread before the rings go away
    assert not sock.tx_thread_running
    # Handed to the thread or not, every frame left before the socket closed.
    assert link.recv_peer(200) == frames
    with pytest.raises(SocketClosed):
        sock.start_tx_thread()
    sock.stop_tx_thread()  # closed: nothing to stop, no error


def test_tx_thread_in_a_forked_child(link: Link) -> None:
    """A forked child has the socket but not its thread: closing the socket there
    returns at once, and the parent's thread goes on transmitting."""
    import os

    sock, _umem = open_socket(link, "skb")
    sock.start_tx_thread()
    pid = os.fork()
    if pid == 0:  # the child: close (stops "the thread") and leave at once
        try:
            sock.close()
        finally:
            os._exit(0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the child hung closing a socket whose tx thread it does not have")
    assert os.waitstatus_to_exitcode(status) == 0
    assert sock.tx_thread_running
    frames = [link.frame(s, ETH_P_TX, dst=link.peer_mac) for s in range(100)]
    assert sock.send(frames) == 100
    assert link.recv_peer(100) == frames


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("separate_tx", [False, True])
def test_polling_for_rx_transmits_only_from_a_tx_ring_on_the_same_socket(
        link: Link, mode: str, separate_tx: bool) -> None:
    """In copy mode poll() transmits from the polled socket's tx ring (xsk_poll drives
    tx). With ``separate_tx`` the rx socket has no tx ring: polling it for rx leaves
    queued frames to the kick, which is what keeps the data plane's epoll off the lock a
    tx thread holds while it transmits. Either way every frame reaches the peer intact,
    completes back to the allocator, and rx arrives on ``fileno()``."""
    sock, umem = open_socket(link, mode, separate_tx=separate_tx)
    assert (sock.tx_fileno() != sock.fileno()) == separate_tx
    free_before = umem.free_frames
    frames = [link.frame(s, ETH_P_TX, dst=link.peer_mac) for s in range(8)]
    region, offsets, lengths = packed(frames)
    assert sock.send_copy(region, offsets, lengths, len(frames), kick=False) == len(frames)
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.poll(0)
    if separate_tx:
        assert link.recv_peer(1, timeout=0.3) == []  # still queued: nothing polled it out
        assert sock.wait(0, writable=True)  # room on the tx ring, from tx_fileno()
        sock.kick(offload=False)
    assert link.recv_peer(len(frames)) == frames
    stats = all_completed(sock, umem, free_before, len(frames))
    assert stats["tx_invalid_descs"] == 0
    link.send_seq(0, 16)
    check_in_order(link, receive(sock, 16), 0)



def test_tx_thread_tells_when_a_full_ring_has_room(link: Link) -> None:
    """``xsk_tx_want_room`` (what the data plane waits on instead of polling the tx
    ring's socket): a NOWAIT send into a full 64-slot ring takes what fits; asking for
    room then either finds the thread already moved the ring (1) or makes the room
    eventfd readable once it has (0, never a hang). Every frame arrives in order and
    intact; without a thread of this process the answer is -ENOTCONN."""
    from xsk._native import ffi, lib

    sock, umem = open_socket(link, "native", frame_count=512, rx_size=64, tx_size=64,
                             fill_size=64, comp_size=64, separate_tx=True)
    assert lib.xsk_tx_want_room(sock._s, 1) == -errno.ENOTCONN
    assert lib.xsk_tx_room_fd(sock._s) == -1
    sock.start_tx_thread(min_batch=16)
    room = lib.xsk_tx_room_fd(sock._s)
    assert room >= 0
    link.peer_rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    head = link.peer_mac + link.joy_mac + struct.pack("!H", ETH_P_TX)
    frames = [head + payload(i, 64) for i in range(2000)]
    region, offsets, lengths = packed(frames)
    umem_ptr = ffi.cast("uint8_t *", umem.address)
    src = ffi.from_buffer("uint8_t[]", region)
    offs = ffi.cast("uint64_t *", offsets.ctypes.data)
    lens = ffi.cast("uint32_t *", lengths.ctypes.data)
    sent, deadline = 0, time.monotonic() + 20
    while sent < len(frames) and time.monotonic() < deadline:
        n = lib.xsk_tx_copy_kick(sock._s, umem_ptr, sock._tx_offset, src, offs + sent,
                                 lens + sent, len(frames) - sent, lib.XSK_TX_NOWAIT)
        assert n >= 0
        sent += n
        if sent < len(frames) and lib.xsk_tx_want_room(sock._s, 1) == 0:
            readable, _, _ = select.select([room], [], [], 5.0)
            assert readable, "asked for room, never told"
    assert sent == len(frames), f"{sent} of {len(frames)} queued"
    sock.kick(offload=False)  # the rest: this thread reaps the completions and sends
    assert link.recv_peer(len(frames)) == frames
    assert lib.xsk_tx_want_room(sock._s, 0) == 0
    sock.stop_tx_thread()
    assert lib.xsk_tx_want_room(sock._s, 1) == -errno.ENOTCONN
