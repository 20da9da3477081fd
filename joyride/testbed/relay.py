"""A user-space Ethernet relay that delays and reorders frames (test infrastructure).

This kernel has no netem, so delay and reordering come from a process in a middle
namespace that bridges two veths with AF_PACKET sockets. Each direction has its own
delay, reorder and corruption probability. A reordered frame is held back until the
next frame in the same direction has gone out (or ``hold`` seconds pass), i.e. adjacent
frames swap. A corrupted frame has one payload byte flipped (``CORRUPT_OFFSET``) and
its checksums left as they were, so the receiver must notice.

Run as ``python -m joyride.testbed.relay --stats FILE LEFT RIGHT --to-right D,R --to-left D,R``
inside the relay namespace. It writes its counters as JSON to ``--stats`` every
``STATS_PERIOD`` seconds and on SIGTERM, so the measured rates can be checked.
"""

from __future__ import annotations

import argparse
import errno
import heapq
import itertools
import json
import os
import random
import select
import signal
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Final

from joyride.testbed.impair import CORRUPT_OFFSET

ETH_P_ALL: Final = 0x0003
SOL_PACKET: Final = 263
PACKET_IGNORE_OUTGOING: Final = 23
STATS_PERIOD: Final = 0.2
MAX_FRAME: Final = 65536


@dataclass
class DirectionStats:
    received: int = 0
    forwarded: int = 0
    corrupted: int = 0
    reordered: int = 0  # frames that went out behind their successor
    hold_timeouts: int = 0  # held frames released in order because no successor came
    send_errors: int = 0
    # Refused by the device's egress path: the bed's loss rule (``impair``) drops frames
    # towards Joyride there, and dev_queue_xmit reports that as ENOBUFS.
    egress_drops: int = 0
    delay_total: float = 0.0  # sum over forwarded frames of (sent - received)


@dataclass
class Direction:
    """Frames read from ``src`` go out of ``dst`` after ``delay`` (maybe reordered)."""

    src: socket.socket
    dst: socket.socket
    delay: float
    reorder: float
    corrupt: float
    hold: float
    rng: random.Random
    stats: DirectionStats = field(default_factory=DirectionStats)
    held: tuple[float, bytes] | None = None  # (arrival time, frame) waiting for a successor
    held_until: float = 0.0


def open_port(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((ifname, 0))
    sock.setblocking(False)
    return sock


class Relay:
    def __init__(self, directions: list[Direction], stats_path: str | None) -> None:
        self.directions = directions
        self.stats_path = stats_path
        # Scheduled sends: (due time, tie-breaker, direction index, arrival time, frame).
        self.queue: list[tuple[float, int, int, float, bytes]] = []
        self.counter = itertools.count()
        self.running = True

    def schedule(self, index: int, arrival: float, frame: bytes) -> None:
        d = self.directions[index]
        heapq.heappush(self.queue, (arrival + d.delay, next(self.counter), index, arrival, frame))

    def on_frame(self, index: int, frame: bytes, now: float) -> None:
        d = self.directions[index]
        d.stats.received += 1
        if d.corrupt and len(frame) > CORRUPT_OFFSET and d.rng.random() < d.corrupt:
            damaged = bytearray(frame)
            damaged[CORRUPT_OFFSET] ^= 0xFF
            frame = bytes(damaged)
            d.stats.corrupted += 1
        # The frame after a held one is never held itself, so holding with probability
        # q = p / (1 - p) makes the fraction of frames that go out late exactly p.
        if d.held is None and d.reorder and d.rng.random() < d.reorder / (1.0 - d.reorder):
            d.held = (now, frame)
            d.held_until = now + d.hold
            return
        self.schedule(index, now, frame)
        if d.held is not None:
            d.stats.reordered += 1
            self.release_held(index)

    def release_held(self, index: int) -> None:
        d = self.directions[index]
        if d.held is not None:
            arrival, frame = d.held
            d.held = None
            # Goes out no earlier than its successor: same due time, later tie-breaker.
            heapq.heappush(
                self.queue, (time.monotonic() + d.delay, next(self.counter), index, arrival, frame)
            )

    def flush_due(self, now: float) -> None:
        while self.queue and self.queue[0][0] <= now:
            _, _, index, arrival, frame = heapq.heappop(self.queue)
            d = self.directions[index]
            try:
                d.dst.send(frame)
                d.stats.forwarded += 1
                d.stats.delay_total += time.monotonic() - arrival
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    d.stats.egress_drops += 1
                else:
                    d.stats.send_errors += 1
        for index, d in enumerate(self.directions):
            if d.held is not None and now >= d.held_until:
                d.stats.hold_timeouts += 1
                self.release_held(index)

    def next_timeout(self, now: float) -> float:
        deadlines = [self.queue[0][0]] if self.queue else []
        deadlines += [d.held_until for d in self.directions if d.held is not None]
        if not deadlines:
            return STATS_PERIOD
        return max(0.0, min(min(deadlines) - now, STATS_PERIOD))

    def write_stats(self) -> None:
        if not self.stats_path:
            return
        data: dict[str, object] = {str(i): asdict(d.stats) for i, d in enumerate(self.directions)}
        # The system-wide monotonic clock: a reader knows whether this write came after
        # the moment it asked (Testbed.relay_stats), so it never reads a stale count.
        data["written_at"] = time.monotonic()
        tmp = f"{self.stats_path}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, self.stats_path)

    def run(self) -> None:
        by_fd = {d.src.fileno(): i for i, d in enumerate(self.directions)}
        poller = select.epoll()
        for fd in by_fd:
            poller.register(fd, select.EPOLLIN)
        next_stats = time.monotonic()
        while self.running:
            now = time.monotonic()
            for fd, _ in poller.poll(self.next_timeout(now)):
                index = by_fd[fd]
                src = self.directions[index].src
                for _ in range(64):  # drain in bursts, bounded so the other side is served
                    try:
                        frame = src.recv(MAX_FRAME)
                    except BlockingIOError:
                        break
                    self.on_frame(index, frame, time.monotonic())
            now = time.monotonic()
            self.flush_due(now)
            if now >= next_stats:
                self.write_stats()
                next_stats = now + STATS_PERIOD
        self.write_stats()


def parse_direction(spec: str) -> tuple[float, float, float]:
    delay, reorder, corrupt = (float(x) for x in spec.split(","))
    return delay, reorder, corrupt


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("left")
    ap.add_argument("right")
    ap.add_argument("--to-right", type=parse_direction, default=(0.0, 0.0, 0.0),
                    help="DELAY,REORDER,CORRUPT for frames going left to right")
    ap.add_argument("--to-left", type=parse_direction, default=(0.0, 0.0, 0.0))
    ap.add_argument("--hold", type=float, default=0.005)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--stats", default=None)
    ap.add_argument("--ready", default=None, help="file created once the ports are open")
    args = ap.parse_args(argv)

    # One CPU: veth hands each frame to the backlog of the CPU that sent it, so a relay
    # that migrated between two sends could have them swapped on the way, a reordering
    # it did not make and does not count.
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    left, right = open_port(args.left), open_port(args.right)
    rng = random.Random(args.seed)
    (r_delay, r_reorder, r_corrupt), (l_delay, l_reorder, l_corrupt) = args.to_right, args.to_left
    directions = [
        Direction(left, right, r_delay, r_reorder, r_corrupt, args.hold,
                  random.Random(rng.random())),
        Direction(right, left, l_delay, l_reorder, l_corrupt, args.hold,
                  random.Random(rng.random())),
    ]
    relay = Relay(directions, args.stats)

    def stop(signum: int, frame: object) -> None:
        relay.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.ready:
        with open(args.ready, "w"):
            pass
    relay.run()


if __name__ == "__main__":
    main()
