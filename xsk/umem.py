"""UMEM: the packet memory that AF_XDP sockets share with the kernel.

One anonymous, page-aligned mapping (2 MiB huge pages when the system has them) cut
into ``frame_count`` frames of ``frame_size`` bytes, plus a frame table in C that
records who holds each frame (free, the application, or the kernel for socket *k*).
Every hand-over is a compare-and-swap from the expected owner, so no frame is ever
handed out twice, a double release is refused and counted, and closing a socket takes
back exactly the frames it had given the kernel.

The memory is a Python ``mmap`` rather than a C allocation on purpose: views into it
(``memoryview`` slices, numpy arrays) pin it, and ``close()`` refuses to unmap while any
exist, so a stale view can never read unmapped memory.
"""

from __future__ import annotations

import mmap
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from xsk._native import ffi, lib
from xsk.errors import FrameError, UmemError, UmemExhausted, UmemInUse

if TYPE_CHECKING:
    from xsk.xdp_socket import Socket

HUGE_PAGE: Final = 2 << 20
MIN_FRAME_SIZE: Final = 2048  # XDP_UMEM_MIN_CHUNK_SIZE
MAX_FRAME_SIZE: Final = 1 << 16  # XDP_UMEM_MAX_CHUNK_SIZE
#: The kernel starts received data this far into a frame, after the UMEM headroom.
PACKET_HEADROOM: Final = int(lib.XSK_PACKET_HEADROOM)
#: Owner tags 1..254 name sockets in the frame table (0 free, 255 application).
MAX_SOCKETS: Final = 254


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class Umem:
    """Packet memory plus frame allocator; share one between sockets of several queues.

    ``hugepages``: ``None`` uses huge pages when the system has free ones and ordinary
    pages otherwise; ``True`` requires them; ``False`` never uses them.
    """

    def __init__(self, frame_count: int = 4096, frame_size: int = 2048, headroom: int = 0,
                 hugepages: bool | None = None) -> None:
        if not _power_of_two(frame_size) or not MIN_FRAME_SIZE <= frame_size <= MAX_FRAME_SIZE:
            raise UmemError(f"frame_size={frame_size}: must be a power of two in "
                            f"{MIN_FRAME_SIZE}..{MAX_FRAME_SIZE} (aligned chunk mode)")
        if not 1 <= frame_count <= (1 << 32) // frame_size:
            raise UmemError(f"frame_count={frame_count}: must be 1..{(1 << 32) // frame_size}")
        # The kernel refuses headroom that leaves no room for data after its own
        # XDP_PACKET_HEADROOM (net/xdp/xdp_umem.c, xdp_umem_reg).
        if not 0 <= headroom < frame_size - PACKET_HEADROOM:
            raise UmemError(f"headroom={headroom}: must be 0..{frame_size - PACKET_HEADROOM - 1}")
        self.frame_count = frame_count
        self.frame_size = frame_size
        self.headroom = headroom
        self.size = frame_count * frame_size
        self._mm, self.hugepages = self._map(self.size, hugepages)
        if frame_size > mmap.PAGESIZE and not self.hugepages:
            self._mm.close()
            raise UmemError(f"frame_size={frame_size} exceeds the page size: needs huge pages")
        # Forked children (a service spawning helpers) must not share or copy-on-write
        # pages that the kernel has pinned for DMA.
        self._mm.madvise(mmap.MADV_DONTFORK)
        cbuf = ffi.from_buffer("char[]", self._mm, require_writable=True)
        self.address = int(ffi.cast("uintptr_t", cbuf))
        ffi.release(cbuf)
        frames = lib.xsk_frames_new(frame_count, frame_size)
        if frames == ffi.NULL:
            self._mm.close()
            raise MemoryError("frame table allocation failed")
        self._frames: Any = ffi.gc(frames, lib.xsk_frames_destroy)
        self._buffer: memoryview | None = memoryview(self._mm)
        self._array: npt.NDArray[np.uint8] | None = None
        self._sockets: list[Socket] = []
        self._free_tags = list(range(MAX_SOCKETS, 0, -1))
        self.closed = False

    @staticmethod
    def _map(size: int, hugepages: bool | None) -> tuple[mmap.mmap, bool]:
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE
        if hugepages is not False:
            # hugetlb mappings must span whole huge pages (or munmap fails).
            huge_size = -(-size // HUGE_PAGE) * HUGE_PAGE
            try:
                return mmap.mmap(-1, huge_size, flags=flags | int(lib.XSK_MAP_HUGETLB)), True
            except OSError as exc:
                if hugepages:
                    raise UmemError(f"no huge pages for a {huge_size}-byte UMEM ({exc}); "
                                    "reserve some in /proc/sys/vm/nr_hugepages",
                                    exc.errno) from exc
        return mmap.mmap(-1, size, flags=flags), False

    # -- memory -------------------------------------------------------------------------

    @property
    def buffer(self) -> memoryview:
        """The whole UMEM as a writable byte ``memoryview`` (zero-copy)."""
        if self._buffer is None:
            raise UmemError("UMEM is closed")
        return self._buffer

    @property
    def array(self) -> npt.NDArray[np.uint8]:
        """The whole UMEM as a numpy ``uint8`` array (zero-copy)."""
        if self._array is None:
            self._array = np.frombuffer(self.buffer, dtype=np.uint8)
        return self._array

    def frame(self, addr: int, length: int | None = None) -> memoryview:
        """A view of ``length`` bytes at UMEM address ``addr`` (default: to frame end)."""
        end_of_frame = (addr | (self.frame_size - 1)) + 1
        end = end_of_frame if length is None else addr + length
        if not 0 <= addr <= end <= end_of_frame or end > self.size:
            raise FrameError(f"[{addr}, {end}) is not inside one frame of this UMEM")
        return self.buffer[addr:end]

    # -- allocator ----------------------------------------------------------------------

    @property
    def free_frames(self) -> int:
        return int(lib.xsk_frames_free_count(self._frames))

    def alloc(self, n: int) -> npt.NDArray[np.uint64]:
        """``n`` frame addresses now held by the application (all or nothing)."""
        if n < 0:
            raise ValueError(f"n={n} must be >= 0")
        out = np.empty(n, dtype=np.uint64)
        if n == 0:
            return out
        got = lib.xsk_frames_alloc(self._frames, ffi.from_buffer("uint64_t[]", out), n)
        if got < 0:
            raise UmemExhausted(f"{n} frames asked for, {self.free_frames} free")
        return out

    def free(self, addrs: Any) -> None:
        """Give frames the application holds back to the allocator.

        Addresses it does not hold (double free, never allocated, out of range) are
        refused without touching the table, and reported by ``FrameError`` after the
        valid ones have been freed.
        """
        arr = np.ascontiguousarray(addrs, dtype=np.uint64).reshape(-1)
        if arr.size == 0:
            return
        accepted = lib.xsk_frames_free(self._frames, ffi.from_buffer("uint64_t[]", arr), arr.size)
        if accepted != arr.size:
            raise FrameError(f"{arr.size - accepted} of {arr.size} frames were not held "
                             "by the application (double free or foreign address)")

    def owner(self, addr: int) -> str:
        """Who holds the frame at ``addr``: ``free``, ``app`` or ``kernel:<tag>``."""
        state = int(lib.xsk_frames_state(self._frames, addr))
        if state < 0:
            raise FrameError(f"address {addr} is outside this UMEM")
        return {0: "free", 255: "app"}.get(state, f"kernel:{state}")

    # -- sockets (used by xsk.xdp_socket) ---------------------------------------------------

    def _attach(self) -> tuple[int, int]:
        """Reserve an owner tag for a new socket; return it and the fd to share, or -1."""
        if self.closed:
            raise UmemError("UMEM is closed")
        if not self._free_tags:
            raise UmemError(f"at most {MAX_SOCKETS} sockets per UMEM")
        shared_fd = self._sockets[0].fileno() if self._sockets else -1
        return self._free_tags.pop(), shared_fd

    def _registered(self, sock: Socket) -> None:
        self._sockets.append(sock)

    def _detach(self, sock: Socket, tag: int) -> None:
        if sock in self._sockets:
            self._sockets.remove(sock)
        lib.xsk_frames_reclaim(self._frames, tag)
        self._free_tags.append(tag)

    @property
    def sockets(self) -> tuple[Socket, ...]:
        return tuple(self._sockets)

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Unmap the memory. Refused while sockets use it or views into it are alive."""
        if self.closed:
            return
        if self._sockets:
            raise UmemInUse(f"{len(self._sockets)} socket(s) still use this UMEM")
        self._array = None
        try:
            if self._buffer is not None:
                self._buffer.release()  # BufferError while numpy arrays export it
                self._buffer = None
            self._mm.close()  # BufferError while slices of it are alive
        except BufferError as exc:
            if self._buffer is None:
                self._buffer = memoryview(self._mm)
            raise UmemInUse("views into the UMEM are still alive (memoryview slices, "
                            "numpy arrays, unreleased batches): drop them first") from exc
        self.closed = True

    def __enter__(self) -> Umem:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.free_frames} free"
        return (f"Umem(frame_count={self.frame_count}, frame_size={self.frame_size}, "
                f"headroom={self.headroom}, hugepages={self.hugepages}, {state})")
