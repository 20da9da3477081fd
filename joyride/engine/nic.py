"""What the engine needs of a network interface: batches of frames in and out.

``Nic`` is the seam between the engine and the AF_XDP socket (``XskNic``); the in-memory
``MemoryNic`` pair lets the whole engine — demultiplexing, neighbours, timers, frame
building — run in unit tests without privileges.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Buffer = bytes | bytearray | memoryview


@dataclass
class RxDescriptors:
    """A received batch as one memory region: frame i is ``base[offsets[i]:][:lengths[i]]``.

    This is what an AF_XDP rx ring hands out (UMEM + descriptors), so the C parser
    reads frames where they landed, without a copy.
    """

    base: Any
    offsets: npt.NDArray[np.uint64]
    lengths: npt.NDArray[np.uint32]
    n: int

    @classmethod
    def from_frames(cls, frames: Sequence[Buffer]) -> RxDescriptors:
        lengths = np.fromiter((len(f) for f in frames), dtype=np.uint32, count=len(frames))
        offsets = np.fromiter(accumulate(lengths[:-1].tolist(), initial=0), dtype=np.uint64,
                              count=len(frames))
        return cls(b"".join(frames), offsets, lengths, len(frames))


class Nic(Protocol):
    """A batch-first frame port. Frames from ``receive`` stay valid until ``release``."""

    mtu: int

    def receive(self, max_frames: int) -> RxDescriptors | None:
        """Up to ``max_frames`` frames, or None when none wait."""
        ...

    def release(self) -> None: ...

    def transmit(self, frames: Sequence[Buffer]) -> int:
        """Queue frames for the wire; returns how many were accepted (the rest dropped)."""
        ...

    def fileno(self) -> int | None:
        """A descriptor that polls readable when frames wait, or None (busy-poll only)."""
        ...

    def close(self) -> None: ...


class MemoryNic:
    """One end of an in-memory wire: frames transmitted here are received by ``peer``."""

    def __init__(self, mtu: int = 1500, capacity: int = 4096) -> None:
        self.mtu = mtu
        self.capacity = capacity
        self.inbox: deque[bytes] = deque()
        self.peer: MemoryNic | None = None
        self.dropped = 0

    @classmethod
    def pair(cls, mtu: int = 1500) -> tuple[MemoryNic, MemoryNic]:
        a, b = cls(mtu), cls(mtu)
        a.peer, b.peer = b, a
        return a, b

    def receive(self, max_frames: int) -> RxDescriptors | None:
        n = min(max_frames, len(self.inbox))
        if n == 0:
            return None
        return RxDescriptors.from_frames([self.inbox.popleft() for _ in range(n)])

    def release(self) -> None:
        pass

    def transmit(self, frames: Sequence[Buffer]) -> int:
        assert self.peer is not None, "MemoryNic not paired"
        sent = 0
        for frame in frames:
            if len(self.peer.inbox) >= self.peer.capacity:
                self.dropped += 1
                continue
            self.peer.inbox.append(bytes(frame))
            sent += 1
        return sent

    def fileno(self) -> int | None:
        return None

    def close(self) -> None:
        self.inbox.clear()


class MultiNic:
    """Several queues of one interface as one NIC: one engine serves every rx queue.

    RSS spreads flows over queues; one engine (one demux table) sees them all, so a
    connection is found whichever queue its segments arrive on. Frames go out on the
    first queue (AF_XDP tx on any queue reaches the same wire).
    """

    def __init__(self, nics: Sequence[Nic]) -> None:
        if not nics:
            raise ValueError("MultiNic needs at least one NIC")
        self.nics = list(nics)
        self.mtu = min(n.mtu for n in self.nics)
        self._next = 0
        self._held: list[Nic] = []

    def receive(self, max_frames: int) -> RxDescriptors | None:
        """The next queue (round-robin, so none starves) that has frames; one queue per
        call keeps each batch a single memory region."""
        count = len(self.nics)
        for i in range(count):
            nic = self.nics[(self._next + i) % count]
            got = nic.receive(max_frames)
            if got is not None and got.n:
                self._held.append(nic)
                self._next = (self._next + i + 1) % count
                return got
            nic.release()
        return None

    def release(self) -> None:
        for nic in self._held:
            nic.release()
        self._held.clear()

    def transmit(self, frames: Sequence[Buffer]) -> int:
        return self.nics[0].transmit(frames)

    def __getattr__(self, name: str) -> Any:
        # ``kick`` exactly when the first queue's NIC has it (every frame leaves
        # there): the engine looks it up once.
        if name == "kick" and self.__dict__.get("nics"):
            first: Any = self.nics[0]
            return getattr(first, name)  # AttributeError when it has none, as wanted
        raise AttributeError(name)

    def fileno(self) -> int | None:
        return self.nics[0].fileno() if len(self.nics) == 1 else None

    def filenos(self) -> list[int]:
        """Every queue's descriptor, for a poller that waits on all of them."""
        return [fd for n in self.nics if (fd := n.fileno()) is not None]

    def close(self) -> None:
        for nic in self.nics:
            nic.close()
