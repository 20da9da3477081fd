"""Batches: many descriptors moved by one C call, frames exposed as zero-copy views.

A batch costs one small allocation and no per-frame Python work until a frame is
looked at: ``batch[i]`` slices the UMEM ``memoryview``; ``batch.descriptors`` (and
``addrs``/``lens``) are numpy views of the descriptor array for vectorised code.

Frames of an ``RxBatch`` belong to the application until ``release()`` (or until the
batch is garbage-collected, which releases it); after that the kernel may overwrite
them, so views taken from the batch must not be used any more. Unsent frames of a
``TxBatch`` return to the allocator the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from xsk._native import ffi
from xsk.errors import FrameError

if TYPE_CHECKING:
    from xsk.xdp_socket import Socket

#: ``struct xdp_desc`` (linux/if_xdp.h) as a numpy dtype.
DESC_DTYPE: Final = np.dtype([("addr", "<u8"), ("len", "<u4"), ("options", "<u4")])
DESC_SIZE: Final = 16


def _desc_array(descs: Any, n: int) -> npt.NDArray[np.void]:
    if n == 0:
        return np.empty(0, dtype=DESC_DTYPE)
    return np.frombuffer(ffi.buffer(descs, n * DESC_SIZE), dtype=DESC_DTYPE)


class RxBatch:
    """Frames received by one ``Socket.recv`` call; give them back with ``release()``."""

    __slots__ = ("_buf", "_descs", "_n", "_sock")

    def __init__(self, sock: Socket, descs: Any, n: int, buf: memoryview) -> None:
        self._sock = sock
        self._descs = descs
        self._n = n
        self._buf = buf

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def __getitem__(self, i: int) -> memoryview:
        """The ``i``-th frame's packet bytes: a zero-copy, writable view into the UMEM."""
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"frame {i} of a batch of {self._n}")
        d = self._descs[i]
        return self._buf[d.addr:d.addr + d.len]

    def __iter__(self) -> Iterator[memoryview]:
        buf, descs = self._buf, self._descs
        for i in range(self._n):
            d = descs[i]
            yield buf[d.addr:d.addr + d.len]

    @property
    def descriptors(self) -> npt.NDArray[np.void]:
        """The descriptors (``addr``, ``len``, ``options``) as a numpy structured array."""
        return _desc_array(self._descs, self._n)

    @property
    def addrs(self) -> npt.NDArray[np.uint64]:
        """UMEM addresses of the packets (index ``umem.array`` with them)."""
        return self.descriptors["addr"]

    @property
    def lens(self) -> npt.NDArray[np.uint32]:
        return self.descriptors["len"]

    @property
    def released(self) -> bool:
        return self._descs is None

    def release(self) -> None:
        """Return the frames to the socket's fill ring (idempotent)."""
        self._sock.release(self)

    def _take(self) -> tuple[Any, int]:
        """Hand the descriptors over for release; the batch is empty afterwards."""
        descs, n = self._descs, self._n
        self._descs, self._n = None, 0
        return descs, n

    def __del__(self) -> None:
        # A forgotten batch must not leak its frames (views of it are stale either way).
        if self._n:
            self._sock.release(self)

    def __enter__(self) -> RxBatch:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"RxBatch({self._n} frames{', released' if self.released else ''})"


class TxBatch:
    """Frames the application holds for transmission (from ``Socket.alloc_tx``).

    Write packets into ``batch[i]`` (the whole frame, writable) and set their lengths
    (``batch.set(i, data)`` does both; ``batch.lens[:] = n`` sets all at once), then
    ``Socket.send(batch)``. Frames the tx ring had no room for stay in the batch for the
    next ``send``; ``release()`` frees whatever was not sent.
    """

    __slots__ = ("_buf", "_descs", "_n", "_sent", "_sock")

    def __init__(self, sock: Socket, descs: Any, n: int, buf: memoryview) -> None:
        self._sock = sock
        self._descs = descs
        self._n = n
        self._sent = 0
        self._buf = buf

    def __len__(self) -> int:
        """Frames not yet handed to the kernel."""
        return self._n - self._sent

    @property
    def capacity(self) -> int:
        """Bytes a frame can hold (frame size minus the UMEM headroom)."""
        return self._sock.umem.frame_size - self._sock.umem.headroom

    def _index(self, i: int) -> int:
        n = self._n - self._sent
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"frame {i} of {n} unsent frames")
        return self._sent + i

    def __getitem__(self, i: int) -> memoryview:
        """The whole ``i``-th unsent frame, writable (its length is set separately)."""
        d = self._descs[self._index(i)]
        return self._buf[d.addr:d.addr + self.capacity]

    def set(self, i: int, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` into frame ``i`` and set its length."""
        j = self._index(i)
        size = len(data)
        if not 0 < size <= self.capacity:
            raise FrameError(f"{size} bytes do not fit a frame of {self.capacity}")
        d = self._descs[j]
        self._buf[d.addr:d.addr + size] = data
        d.len = size

    @property
    def descriptors(self) -> npt.NDArray[np.void]:
        """Unsent descriptors as a writable numpy structured array."""
        if self._descs is None:
            return np.empty(0, dtype=DESC_DTYPE)
        return _desc_array(self._descs, self._n)[self._sent:]

    @property
    def lens(self) -> npt.NDArray[np.uint32]:
        return self.descriptors["len"]

    @property
    def addrs(self) -> npt.NDArray[np.uint64]:
        return self.descriptors["addr"]

    def _pending(self) -> tuple[Any, int]:
        """Pointer to the first unsent descriptor and how many there are."""
        if self._descs is None:
            return ffi.NULL, 0
        return self._descs + self._sent, self._n - self._sent

    def _advance(self, k: int) -> None:
        self._sent += k

    def release(self) -> None:
        """Free the frames that were not sent (idempotent)."""
        descs, n = self._pending()
        self._descs, self._n, self._sent = None, 0, 0
        if n:
            self._sock._free_descs(descs, n)

    def __del__(self) -> None:
        if self._descs is not None and self._n > self._sent:
            self.release()

    def __enter__(self) -> TxBatch:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"TxBatch({len(self)} unsent of {self._n})"


class RxArrays:
    """Caller-owned arrays that ``Socket.recv_into`` fills: ``addrs[:n]`` (UMEM offsets
    of the packets) and ``lens[:n]``. Allocated once and reused on every call, with
    their C pointers taken once: the per-poll receive of an engine allocates nothing.
    The frames are the application's until ``Socket.release_from(arrays, n)``."""

    __slots__ = ("_addrs_p", "_lens_p", "addrs", "capacity", "lens")

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity={capacity}: must be positive")
        self.capacity = capacity
        self.addrs: npt.NDArray[np.uint64] = np.zeros(capacity, dtype=np.uint64)
        self.lens: npt.NDArray[np.uint32] = np.zeros(capacity, dtype=np.uint32)
        self._addrs_p = ffi.cast("uint64_t *", self.addrs.ctypes.data)
        self._lens_p = ffi.cast("uint32_t *", self.lens.ctypes.data)

