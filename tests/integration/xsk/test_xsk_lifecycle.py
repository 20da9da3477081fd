"""Resources: after close() no fd, mapping, frame or XDP reference may remain."""

from __future__ import annotations

import gc
import os
import socket
import struct
import subprocess
import time

import pytest
from xsk_helpers import Link

from xsk import RxBatch, Socket, SocketClosed, Umem, attach_redirect_all

pytestmark = pytest.mark.integration


def fds() -> set[str]:
    return {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
            if os.path.exists(f"/proc/self/fd/{fd}")}


def maps_of_inode(inode: int) -> list[str]:
    with open("/proc/self/maps") as f:
        return [line for line in f if f"socket:[{inode}]" in line]


def maps_covering(addr: int) -> list[str]:
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                out.append(line)
    return out


def bpftool_has(kind: str, ident: int) -> bool:
    proc = subprocess.run(["bpftool", kind, "show", "id", str(ident)], capture_output=True,
                          timeout=10)
    return proc.returncode == 0


def bpftool_gone(kind: str, ident: int, timeout: float = 5.0) -> bool:
    """Programs and maps are freed after an RCU grace period: wait for it, bounded."""
    deadline = time.monotonic() + timeout
    while bpftool_has(kind, ident):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def ping(link: Link, count: int = 3) -> bool:
    """Whether any of ``count`` echo requests is answered. More than one: once frames
    are redirected, the peer's ARP entry goes stale, and re-resolving it after the
    socket leaves the map can outlast a single 1-second wait (seen once in CI)."""
    proc = link.tb.peer.run("ping", "-c", str(count), "-i", "0.5", "-W", "1",
                            link.tb.joy.ip, check=False, timeout=15)
    return proc.returncode == 0


def test_close_leaves_no_fd_mapping_frame_or_xdp_reference(link: Link) -> None:
    tb = link.tb
    gc.collect()
    fds_before = fds()
    with tb.joy.inside():
        umem = Umem(frame_count=1024)
        prog = attach_redirect_all(tb.joy.ifname, "native")
        sock = Socket(tb.joy.ifname, 0, umem)
        prog.register(sock)
    inode = os.fstat(sock.fileno()).st_ino
    assert len(maps_of_inode(inode)) == 4  # fill, completion, rx, tx rings
    assert maps_covering(umem.address)
    assert bpftool_has("prog", prog.prog_id) and bpftool_has("map", prog.map_id)
    assert "xdp" in tb.joy.run("ip", "link", "show", tb.joy.ifname).stdout.decode()

    link.send_seq(0, 20)
    batch = sock.recv(64, timeout=2.0)
    assert len(batch) > 0
    held = len(batch)
    sock.close()
    sock.close()  # idempotent
    # The rings are gone; frames the kernel held came back; the held batch is still ours.
    assert maps_of_inode(inode) == []
    assert umem.free_frames == umem.frame_count - held
    assert umem.sockets == ()
    with pytest.raises(SocketClosed):
        sock.recv()
    with pytest.raises(SocketClosed):
        sock.fileno()
    assert sock.release(batch) == held  # to the allocator now
    assert umem.free_frames == umem.frame_count

    # The socket left the XSKMAP with its fd: the program falls back to XDP_PASS and the
    # kernel answers again while the program is still attached.
    assert prog.attached and bpftool_has("prog", prog.prog_id)
    assert ping(link)

    prog.detach()
    prog.detach()  # idempotent
    del batch
    umem.close()
    gc.collect()
    assert bpftool_gone("prog", prog.prog_id)
    assert bpftool_gone("map", prog.map_id)
    assert "xdp" not in tb.joy.run("ip", "link", "show", tb.joy.ifname).stdout.decode()
    assert maps_covering(umem.address) == []
    assert fds() == fds_before


def test_registered_socket_takes_the_traffic(link: Link) -> None:
    tb = link.tb
    with tb.joy.inside(), attach_redirect_all(tb.joy.ifname, "skb") as prog, \
            Socket(tb.joy.ifname, 0) as sock:
        prog.register(sock)
        assert not ping(link)  # echo requests (and ARP) now go to the socket
        with sock.recv(64, timeout=1.0) as batch:
            assert len(batch) >= 1
        prog.unregister(0)
        assert ping(link)
        prog.unregister(0)  # already absent: fine


def test_repeated_open_close_leaks_nothing(link: Link) -> None:
    tb = link.tb
    umem_fds = None
    with tb.joy.inside(), attach_redirect_all(tb.joy.ifname, "native") as prog:
        umem = Umem(frame_count=512)
        for i in range(30):
            with Socket(tb.joy.ifname, 0, umem, rx_size=256, fill_size=256) as sock:
                prog.register(sock)
                link.send_seq(i, 1)
                with sock.recv(8, timeout=2.0) as batch:
                    assert len(batch) == 1
                txb = sock.alloc_tx(4, length=60)  # sent or not, nothing may leak
                if i % 2:
                    sock.send(txb)
                dropped = sock.recv(8, timeout=0)  # forgotten, never released
                del txb, dropped
            assert umem.free_frames == 512
            gc.collect()
            if umem_fds is None:
                umem_fds = fds()
            assert fds() == umem_fds
        umem.close()


def test_owned_umem_is_closed_with_the_socket(link: Link) -> None:
    tb = link.tb
    with tb.joy.inside():
        sock = Socket(tb.joy.ifname, 0)
    umem = sock.umem
    addr = umem.address
    sock.close()
    assert umem.closed and maps_covering(addr) == []


def test_two_queues_share_one_umem(make_testbed: object) -> None:
    tb = make_testbed(rx_queues=2)  # type: ignore[operator]
    with tb.peer.inside():
        tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        tx.bind((tb.peer.ifname, 0))
    joy_mac = bytes.fromhex(tb.joy.mac.replace(":", ""))
    peer_mac = bytes.fromhex(tb.peer.mac.replace(":", ""))
    try:
        with tb.joy.inside(), Umem(frame_count=2048) as umem, \
                attach_redirect_all(tb.joy.ifname, "native", max_queues=2) as prog:
            first = Socket(tb.joy.ifname, 0, umem)
            second = Socket(tb.joy.ifname, 1, shared_with=first)
            assert second.umem is umem
            prog.register(first)
            prog.register(second)
            # UDP flows with different ports hash to both tx queues of the peer, and a
            # veth delivers tx queue q to rx queue q.
            for port in range(200):
                ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0,
                                 tb.peer.ip_bytes, tb.joy.ip_bytes)
                udp = struct.pack("!HHHH", 1024 + port, 7, 8, 0)
                tx.send(joy_mac + peer_mac + b"\x08\x00" + ip + udp + bytes(18))
            got: dict[int, list[RxBatch]] = {0: [], 1: []}
            deadline = time.monotonic() + 5
            while sum(len(b) for bs in got.values() for b in bs) < 200 \
                    and time.monotonic() < deadline:
                for q, s in ((0, first), (1, second)):
                    got[q].append(s.recv(256, timeout=0.05))
            counts = {q: sum(len(b) for b in bs) for q, bs in got.items()}
            assert counts[0] + counts[1] == 200
            assert counts[0] > 0 and counts[1] > 0
            addrs = [a for bs in got.values() for b in bs for a in b.addrs.tolist()]
            assert len({a // umem.frame_size for a in addrs}) == 200  # distinct frames
            ports = sorted(struct.unpack("!H", bytes(f[34:36]))[0]
                           for bs in got.values() for b in bs for f in b)
            assert ports == list(range(1024, 1224))
            for q, s in ((0, first), (1, second)):
                for b in got[q]:
                    s.release(b)
            first.close()  # the registering socket goes first: the UMEM lives on
            link_frames = umem.free_frames
            second.fill(16)
            assert umem.free_frames == link_frames - 16
            second.close()
            del got, b
            assert umem.free_frames == umem.frame_count
    finally:
        tx.close()
