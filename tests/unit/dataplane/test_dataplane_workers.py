"""``Workers``: one plane per thread, parked whenever the control plane runs.

Planes with in-memory ports (no descriptor wakes them: ``run(0)`` lets each worker run
one round). Python touches the planes only between ``run`` calls, as the service does;
these tests do too."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from joyride.dataplane.membed import IP_PEER, IP_SVC, MAC_PEER, MAC_SVC
from joyride.dataplane.plane import DataPlane, DeclineNic, ListenSpec, lib
from joyride.dataplane.workers import Workers
from joyride.wire._native import ffi as wire_ffi
from joyride.wire.ethernet import EthernetHeader
from joyride.wire.frame import build_frame, parse_frame
from joyride.wire.ipv4 import Ipv4Header
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpFlags, TcpSegment


def segment_for_no_flow(src_port: int) -> bytes:
    ack = TcpSegment(src_port=src_port, dst_port=9, seq=Seq(1), ack=Seq(1),
                     flags=TcpFlags(TcpFlags.ACK), window=65535)
    return build_frame(EthernetHeader(MAC_SVC, MAC_PEER), Ipv4Header(IP_PEER, IP_SVC), ack)


def two_workers() -> tuple[Workers, list]:  # type: ignore[type-arg]
    planes = [DataPlane(mtu=1500, max_flows=64) for _ in range(2)]
    ports = [plane.add_memory_port() for plane in planes]
    return Workers(planes), ports


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_each_worker_runs_a_round_and_parks() -> None:
    before = threads()
    workers, _ = two_workers()
    try:
        assert threads() == before + 2  # C's threads, one per plane
        assert workers.run(0) == lib.DP_WAKE_TIMEOUT
        assert [workers.worker_counts(i)["runs"] for i in range(2)] == [1, 1]
        assert workers.stats()["stops"] == 1
        assert len(workers.stats()["workers"]) == 2
    finally:
        workers.close()
    assert threads() == before
    workers.close()  # twice: nothing


def test_declined_frames_come_from_the_plane_they_arrived_at_in_order() -> None:
    workers, ports = two_workers()
    try:
        ports[1].push(segment_for_no_flow(20001))
        ports[0].push(segment_for_no_flow(20000))
        ports[1].push(segment_for_no_flow(20002))
        assert workers.run(0) & lib.DP_WAKE_DECLINED
        nic = DeclineNic(workers)  # type: ignore[arg-type]
        seen: list[int] = []
        while nic.receive(1) is not None:
            seen.append(workers._rx_index)
            nic.release()
        # One plane's frames, all of them, then the next's, each in arrival order.
        assert seen == [0, 1, 1]
        assert workers.declined() is None
        every = [w["declined"] for w in workers.stats()["workers"]]
        assert every == [1, 2]
    finally:
        workers.close()


def test_the_engine_reads_every_declined_frame_with_its_bytes() -> None:
    workers, ports = two_workers()
    try:
        sent = {20000 + i: i % 2 for i in range(6)}
        for port, index in sent.items():
            ports[index].push(segment_for_no_flow(port))
        workers.run(0)
        got: dict[int, int] = {}
        while (rx := workers.declined()) is not None:
            for i in range(rx.n):
                frame = bytes(wire_ffi.buffer(rx.base + int(rx.offsets[i]), int(rx.lengths[i])))
                got[parse_frame(frame).tcp.src_port] = workers._rx_index
            workers.declined_clear()
        assert got == sent
    finally:
        workers.close()


def test_the_watched_descriptor_ends_the_run() -> None:
    workers, _ = two_workers()
    r, w = os.pipe()
    try:
        workers.watch(r)
        timer = threading.Timer(0.05, os.write, args=(w, b"x"))
        timer.start()
        assert workers.run(30.0) & lib.DP_WAKE_WATCHED  # returns once written, not after 30 s
        timer.join()
        with pytest.raises(OSError):
            workers.watch(w)  # one watched descriptor
    finally:
        workers.close()
        os.close(r)
        os.close(w)


def test_many_hand_overs_lose_no_frame() -> None:
    """500 stop-the-world cycles, frames pushed between them to either worker: every
    frame is declined once, by its own plane, and every cycle parks both."""
    workers, ports = two_workers()
    try:
        pushed = [0, 0]
        declined = [0, 0]
        for cycle in range(500):
            index = cycle % 3 % 2
            ports[index].push(segment_for_no_flow(20000 + cycle % 1000))
            pushed[index] += 1
            workers.run(0)
            while (rx := workers.declined()) is not None:
                declined[workers._rx_index] += rx.n
                workers.declined_clear()
        assert declined == pushed
        # Each run lets each loop run at least once (more when a loop returned for a
        # declined frame of its own before the stop: it parks, asking).
        runs = [workers.worker_counts(i) for i in range(2)]
        assert all(c["runs"] >= 500 for c in runs), runs
        assert [c["asks"] for c in runs] == pushed, runs
    finally:
        workers.close()


def test_auto_leaves_half_the_cpus_to_the_applications() -> None:
    from joyride.service.service import auto_workers

    assert [auto_workers(n) for n in (1, 2, 3, 4, 64)] == [1, 1, 1, 2, 32]


def test_pythons_frames_leave_by_their_flows_worker() -> None:
    """A flow's frames go out on the queue of the worker that runs it (its order kept
    with C's, under that plane's GSO mark); a frame of no known flow, on the first."""
    workers, ports = two_workers()
    try:
        def frame(port: int) -> bytes:
            seg = TcpSegment(src_port=9, dst_port=port, seq=Seq(1), ack=Seq(1),
                             flags=TcpFlags(TcpFlags.ACK), window=100)
            return build_frame(EthernetHeader(MAC_PEER, MAC_SVC), Ipv4Header(IP_SVC, IP_PEER),
                               seg)

        workers.note_rx([(IP_SVC, 9, IP_PEER, 30001)])  # as if from worker 0's batch
        workers._rx_index = 1
        workers.note_rx([(IP_SVC, 9, IP_PEER, 30002)])
        sent = workers.transmit([frame(30002), frame(30001), frame(30003), frame(30002)])
        workers.kick()
        assert sent == 4
        out = [[parse_frame(f).tcp.dst_port for f in port.pop_all()] for port in ports]
        assert out == [[30001, 30003], [30002, 30002]]
    finally:
        workers.close()


# -- a handshake split across workers ----------------------------------------------------


class SplitBed:
    """Two workers whose planes listen on one port, delivering to a real unix listener;
    the peer's frames are built by hand so that each can be sent to either queue."""

    PORT = 8080
    PEER_PORT = 40000
    PEER_ISN = 1000

    def __init__(self) -> None:
        from joyride.tcp.config import TcpConfig
        from joyride.tcp.listener import Listener

        self.workers, self.ports = two_workers()
        self.name = f"joyride-test/{os.getpid()}/split"
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        self.unix.bind(b"\0" + self.name.encode())
        self.unix.listen(8)
        config = TcpConfig()
        listener = Listener(config, self.PORT)
        self.workers.listen(ListenSpec(self.PORT, (self.name,), config, listener.ts_offset,
                                       listener.isn_generator.key), syn_backlog=16)
        self.server_isn = 0

    def peer(self, flags: int, seq: int, ack: int = 0, payload: bytes = b"") -> bytes:
        seg = TcpSegment(src_port=self.PEER_PORT, dst_port=self.PORT, seq=Seq(seq),
                         ack=Seq(ack), flags=TcpFlags(flags), window=65535, payload=payload)
        return build_frame(EthernetHeader(MAC_SVC, MAC_PEER), Ipv4Header(IP_PEER, IP_SVC),
                           seg)

    def syn_to(self, queue: int) -> None:
        """The SYN to `queue`, and its SYN-ACK back from that queue's worker."""
        self.ports[queue].push(self.peer(TcpFlags.SYN, self.PEER_ISN))
        self.workers.run(0)
        out = [parse_frame(f).tcp for f in self.ports[queue].pop_all()]
        assert len(out) == 1 and out[0] is not None
        assert out[0].flags & TcpFlags.SYN and out[0].flags & TcpFlags.ACK
        self.server_isn = int(out[0].seq)

    def ack(self, payload: bytes = b"", sent: int = 0) -> bytes:
        return self.peer(TcpFlags.ACK | (TcpFlags.PSH if payload else 0),
                         self.PEER_ISN + 1 + sent, self.server_isn + 1, payload)

    def plane_stats(self, index: int) -> dict[str, int]:
        return self.workers.planes[index].stats()

    def close(self) -> None:
        self.workers.close()
        self.unix.close()


def test_a_handshake_split_across_workers_completes_on_the_worker_that_has_it() -> None:
    """The SYN reaches worker 0 (half-open there), its ACK worker 1: worker 1 declines
    it, the hand-over gives it to worker 0 instead of Python (which would answer with a
    RST: it cannot take a half-open flow from C), and worker 0 completes the handshake
    and delivers the connection. Found on veth, where XPS sends a SYN and its ACK by two
    queues when two CPUs send them."""
    bed = SplitBed()
    try:
        bed.syn_to(0)
        request = b"GET / HTTP/1.0\r\n\r\n"
        bed.ports[1].push(bed.ack(request))
        bed.workers.run(0)  # worker 1 declines it; the stop moves it to worker 0
        assert bed.workers.declined() is None  # nothing for Python
        assert bed.plane_stats(1)["forwarded"] == 1
        assert bed.plane_stats(0)["injected"] == 1
        bed.workers.run(0)  # worker 0 runs it
        st = bed.plane_stats(0)
        assert (st["established"], st["delivered"]) == (1, 1)
        app, _ = bed.unix.accept()
        try:
            app.settimeout(2.0)
            assert app.recv(100) == request  # its payload came with the ACK
        finally:
            app.close()
        # Established now: its next segment on worker 1 is Python's (which moves the
        # flow there: Datapath._stray), no longer forwarded.
        bed.ports[1].push(bed.ack(b"more", len(request)))
        bed.workers.run(0)
        rx = bed.workers.declined()
        assert rx is not None and rx.n == 1 and bed.workers._rx_index == 1
        assert bed.plane_stats(1)["forwarded"] == 1
    finally:
        bed.close()


def test_forwarded_frames_keep_their_order_and_others_stay_for_python() -> None:
    """Worker 1 declines, in order: a frame of no flow, the split ACK, another of no
    flow. Only the ACK moves; Python reads the other two in their order."""
    bed = SplitBed()
    try:
        bed.syn_to(0)
        bed.ports[1].push(segment_for_no_flow(20001))
        bed.ports[1].push(bed.ack())
        bed.ports[1].push(segment_for_no_flow(20002))
        bed.workers.run(0)
        rx = bed.workers.declined()
        assert rx is not None and rx.n == 2
        ports = [parse_frame(bytes(wire_ffi.buffer(rx.base + int(rx.offsets[i]),
                                                   int(rx.lengths[i])))).tcp.src_port
                 for i in range(rx.n)]
        assert ports == [20001, 20002]
        bed.workers.declined_clear()
        bed.workers.run(0)
        assert bed.plane_stats(0)["established"] == 1
    finally:
        bed.close()
