"""``Socket``: one AF_XDP socket bound to one (interface, queue), with its four rings.

Typical use (the socket receives only what an XDP program redirects to it through an
XSKMAP keyed by rx queue: see ``xsk.redirect_program.attach_redirect_all`` or ``joyride steer``)::

    with Socket("eth0", 0) as sock:              # owns a default Umem
        prog.register(sock)                       # xskmap[sock.queue] = sock.fileno()
        batch = sock.recv(64, timeout=1.0)        # one C call, up to 64 frames
        for frame in batch: ...                   # zero-copy memoryviews
        sock.release(batch)                       # frames back on the fill ring
        sock.send([b"..." * 60])                  # copies into fresh frames and sends
        sock.poll_completions()                   # sent frames back to the allocator

A socket is used by one thread at a time. Sockets of several queues may share one
``Umem`` (``XDP_SHARED_UMEM``); each keeps its own fill and completion rings.
"""

from __future__ import annotations

import contextlib
import errno as E
import math
import socket as _pysocket
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Final, Literal

import numpy as np

from xsk._native import ffi, lib
from xsk.batch import RxArrays, RxBatch, TxBatch
from xsk.errors import (
    ConfigError,
    InterfaceNotFound,
    QueueBusy,
    QueueOutOfRange,
    RingSizeError,
    SocketClosed,
    UmemError,
    UmemExhausted,
    XskError,
    XskPermissionError,
    XskUnsupported,
    ZeroCopyUnsupported,
    describe,
)
from xsk.umem import Umem

Mode = Literal["auto", "native", "skb"]
MODES: Final = ("auto", "native", "skb")
MAX_RING: Final = 1 << 20
MAX_BATCH: Final = 1 << 16
DESC_POOL: Final = 8  # descriptor arrays kept for reuse by recv (batches held at once)
BUSY_RETRY_S: Final = 1.0

#: Counters kept by the kernel (struct xdp_statistics, XDP_STATISTICS sockopt).
KERNEL_STATS: Final = ("rx_dropped", "rx_invalid_descs", "tx_invalid_descs", "rx_ring_full",
                       "rx_fill_ring_empty_descs", "tx_ring_empty_descs")
#: Counters kept by this package (struct xsk_sock_stats).
LOCAL_STATS: Final = ("rx_frames", "tx_frames", "fill_frames", "comp_frames", "tx_kicks",
                      "rx_wakeups", "kick_errors", "tx_ring_full", "rejected_fill",
                      "rejected_tx", "rejected_comp", "rejected_rx", "tx_thread_wakeups",
                      "tx_thread_kicks", "tx_thread_errors")


def _pointer(ctype: str, obj: Any, keep: list[Any]) -> Any:
    """A ``ctype`` pointer to a cffi pointer (of any cffi module: they share one CData
    type), a numpy array or a buffer; ``keep`` holds whatever must outlive the call."""
    if isinstance(obj, ffi.CData):
        return ffi.cast(ctype, int(ffi.cast("uintptr_t", obj)))
    if isinstance(obj, np.ndarray):
        dtype = {"uint64_t *": np.uint64, "uint32_t *": np.uint32}.get(ctype, np.uint8)
        arr = np.ascontiguousarray(obj, dtype=dtype)
        keep.append(arr)
        return ffi.cast(ctype, arr.ctypes.data)
    buf = ffi.from_buffer("uint8_t[]", obj)
    keep.append(buf)
    return ffi.cast(ctype, buf)


def resolve_ifindex(ifname: str | int) -> tuple[str, int]:
    """(name, index) of an interface in the calling thread's network namespace."""
    try:
        if isinstance(ifname, int):
            return _pysocket.if_indextoname(ifname), ifname
        return ifname, _pysocket.if_nametoindex(ifname)
    except (OSError, ValueError, OverflowError) as exc:
        raise InterfaceNotFound(f"no interface {ifname!r} in this network namespace") from exc


def queue_count(ifindex: int) -> int | None:
    """Usable queues (min of rx and tx) of an interface, from netlink; None if unknown."""
    try:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            link = ipr.get_links(ifindex)[0]
            rx = link.get_attr("IFLA_NUM_RX_QUEUES")
            tx = link.get_attr("IFLA_NUM_TX_QUEUES")
    except Exception:  # netlink trouble only loses the detail of an error message
        return None
    return min(int(rx), int(tx)) if rx is not None and tx is not None else None


def _check_ring(name: str, size: int) -> None:
    # The kernel accepts only power-of-two ring sizes (net/xdp/xsk.c, xsk_init_queue).
    if not isinstance(size, int) or not 1 <= size <= MAX_RING or size & (size - 1):
        raise RingSizeError(f"{name}={size!r}: ring sizes must be powers of two in 1..{MAX_RING}")


class Socket:
    """An AF_XDP socket bound to ``queue`` of ``ifname``.

    ``mode`` is the XDP mode the redirecting program runs in (or will): in ``skb``
    (generic) mode the kernel always copies, so the socket binds with ``XDP_COPY``;
    ``native``/``auto`` let the driver choose. ``zerocopy``: ``True`` requires it
    (``ZeroCopyUnsupported`` otherwise), ``False`` forbids it, ``"auto"`` takes what the
    driver offers (``sock.zerocopy`` tells which). ``fill_frames`` is how many frames to
    put on the fill ring at start (default: half the free frames, at most the rx ring).
    ``separate_tx`` puts the tx ring on a second AF_XDP socket of the same queue, which
    shares this one's buffer pool (``tx_fileno()``): in copy mode polling a socket that
    has a tx ring transmits from it under the socket's lock, so a loop that polls for rx
    while a tx thread transmits (``start_tx_thread``) waits on that lock; with the tx
    ring elsewhere, polling ``fileno()`` never transmits. Poll ``tx_fileno()`` for
    room on the tx ring.
    """

    umem: Umem
    zerocopy: bool
    need_wakeup: bool

    def __init__(self, ifname: str | int, queue: int, umem: Umem | None = None, *,
                 mode: Mode = "auto", rx_size: int = 2048, tx_size: int = 2048,
                 fill_size: int = 4096, comp_size: int = 2048, need_wakeup: bool = True,
                 zerocopy: bool | Literal["auto"] = "auto", shared_with: Socket | None = None,
                 fill_frames: int | None = None, separate_tx: bool = False) -> None:
        self._closed = True  # until fully open: close() and __del__ are no-ops
        self._desc_pool: list[Any] = []
        if mode not in MODES:
            raise ConfigError(f"mode={mode!r}: one of {', '.join(MODES)}")
        if zerocopy not in ("auto", True, False):
            raise ConfigError(f"zerocopy={zerocopy!r}: True, False or 'auto'")
        if mode == "skb" and zerocopy is True:
            raise ZeroCopyUnsupported("zero-copy is impossible in skb (generic) XDP mode")
        for name, size in (("rx_size", rx_size), ("tx_size", tx_size),
                           ("fill_size", fill_size), ("comp_size", comp_size)):
            _check_ring(name, size)
        if not isinstance(queue, int) or queue < 0:
            raise QueueOutOfRange(f"queue={queue!r}: must be an integer >= 0")
        if shared_with is not None:
            if shared_with.closed:
                raise SocketClosed("shared_with is closed")
            if umem is not None and umem is not shared_with.umem:
                raise ConfigError("shared_with uses a different Umem than the one given")
            umem = shared_with.umem
        self.ifname, self.ifindex = resolve_ifindex(ifname)
        self.queue = queue
        self.mode: Mode = mode
        self._owns_umem = umem is None
        self.umem = umem if umem is not None else Umem()
        try:
            self._open(need_wakeup=need_wakeup, zerocopy=zerocopy, sizes=(
                rx_size, tx_size, fill_size, comp_size), fill_frames=fill_frames,
                separate_tx=separate_tx)
        except BaseException:
            if self._owns_umem:
                self.umem.close()
            raise

    def _open(self, *, need_wakeup: bool, zerocopy: bool | Literal["auto"],
              sizes: tuple[int, int, int, int], fill_frames: int | None,
              separate_tx: bool) -> None:
        umem = self.umem
        for other in umem.sockets:
            if other.ifindex == self.ifindex and other.queue == self.queue:
                raise QueueBusy(f"{self.ifname} queue {self.queue} already has a socket "
                                "on this UMEM")
        rx_size, _, fill_size, _ = sizes
        if fill_frames is None:
            fill_frames = min(rx_size, fill_size, umem.free_frames // 2)
        if not 0 <= fill_frames <= fill_size:
            raise ConfigError(f"fill_frames={fill_frames}: must be 0..fill_size={fill_size}")
        if fill_frames > umem.free_frames or (fill_frames == 0 and rx_size > 0
                                              and umem.free_frames == 0):
            raise UmemExhausted(f"{fill_frames} frames wanted for the fill ring, "
                                f"{umem.free_frames} free in the UMEM")
        tag, shared_fd = umem._attach()
        try:  # the one undo of the UMEM registration, whatever fails before it is ours
            flags = self._bind_flags(need_wakeup, zerocopy, shared=shared_fd >= 0)
            cfg = ffi.new("struct xsk_config *")
            cfg.ifindex, cfg.queue = self.ifindex, self.queue
            cfg.rx_size, cfg.tx_size, cfg.fill_size, cfg.comp_size = sizes
            cfg.bind_flags = flags
            cfg.shared_fd = shared_fd
            cfg.separate_tx = int(separate_tx)
            cfg.umem_addr, cfg.umem_len = umem.address, umem.size
            cfg.frame_size, cfg.headroom = umem.frame_size, umem.headroom
            self._s: Any = ffi.new("struct xsk_sock *")
            stage = ffi.new("int *")
            rc = lib.xsk_sock_open(self._s, cfg, umem._frames, tag, stage)
            # A socket closed just before on this queue frees its buffer pool from a
            # workqueue (xp_release_deferred), and until then bind answers EBUSY: retry
            # for a bounded moment so that close-then-reopen works.
            deadline = time.monotonic() + BUSY_RETRY_S
            while (rc == -E.EBUSY and stage[0] == lib.XSK_STAGE_BIND
                   and time.monotonic() < deadline):
                time.sleep(0.01)
                rc = lib.xsk_sock_open(self._s, cfg, umem._frames, tag, stage)
            if rc < 0:
                raise self._open_error(-rc, int(stage[0]), zerocopy)
        except BaseException:
            umem._detach(self, tag)
            raise
        self._tag = tag
        self._closed = False
        umem._registered(self)
        zc = lib.xsk_sock_zerocopy(self._s)
        self.zerocopy = bool(zc > 0)
        self.need_wakeup = bool(self._s.need_wakeup)
        if shared_fd >= 0:
            self.need_wakeup = umem.sockets[0].need_wakeup
            self._s.need_wakeup = int(self.need_wakeup)
        self._buf = umem.buffer
        self._tx_offset = umem.headroom
        self._max_tx_len = umem.frame_size - umem.headroom
        if fill_frames:
            lib.xsk_fill(self._s, fill_frames)

    def _bind_flags(self, need_wakeup: bool, zerocopy: bool | Literal["auto"], *,
                    shared: bool) -> int:
        """The bind flags, or why they cannot be had: a socket sharing a UMEM inherits
        copy mode and need_wakeup from the socket that registered it; the kernel refuses
        those bind flags beside XDP_SHARED_UMEM (net/xdp/xsk.c, xsk_bind)."""
        if shared:
            first = self.umem.sockets[0]
            if need_wakeup != first.need_wakeup:
                raise ConfigError("sockets sharing a UMEM share need_wakeup: "
                                  f"the first one has need_wakeup={first.need_wakeup}")
            if zerocopy is True and not first.zerocopy:
                raise ZeroCopyUnsupported("the socket that registered this UMEM is in copy "
                                          "mode; sockets sharing it inherit that mode")
            if zerocopy is False and first.zerocopy:
                raise ConfigError("the socket that registered this UMEM is zero-copy; "
                                  "sockets sharing it inherit that mode")
            return 0
        flags = int(lib.XDP_USE_NEED_WAKEUP) if need_wakeup else 0
        if zerocopy is True:
            flags |= int(lib.XDP_ZEROCOPY)
        elif zerocopy is False or self.mode == "skb":
            flags |= int(lib.XDP_COPY)
        return flags

    def _open_error(self, err: int, stage: int, zerocopy: bool | Literal["auto"]
                    ) -> XskError:
        where = f"{self.ifname} queue {self.queue}"
        if err in (E.EPERM, E.EACCES):
            return XskPermissionError(
                f"AF_XDP on {where}: {describe(err)}: needs root or CAP_NET_RAW "
                "(and CAP_IPC_LOCK or a large RLIMIT_MEMLOCK for the UMEM)", err)
        if stage == lib.XSK_STAGE_SOCKET and err == E.EAFNOSUPPORT:
            return XskUnsupported("this kernel has no AF_XDP (CONFIG_XDP_SOCKETS)", err)
        if stage == lib.XSK_STAGE_UMEM_REG:
            return UmemError(f"the kernel refused the UMEM ({describe(err)}): frame_size="
                             f"{self.umem.frame_size}, headroom={self.umem.headroom}, "
                             f"size={self.umem.size}", err)
        if stage == lib.XSK_STAGE_RING_SIZE and err == E.EINVAL:
            return RingSizeError(f"the kernel refused a ring size ({describe(err)})", err)
        if stage == lib.XSK_STAGE_BIND:
            if err == E.ENODEV:
                return InterfaceNotFound(f"{self.ifname} disappeared before bind", err)
            if err == E.EBUSY:
                return QueueBusy(f"{where} already has an AF_XDP socket or zero-copy user",
                                 err)
            if zerocopy is True and err in (E.EOPNOTSUPP, E.EPROTONOSUPPORT, E.EINVAL):
                return ZeroCopyUnsupported(f"the driver of {self.ifname} cannot do zero-copy "
                                           f"AF_XDP ({describe(err)}); use zerocopy='auto'", err)
            if err == E.EINVAL:
                count = queue_count(self.ifindex)
                if count is not None and self.queue >= count:
                    return QueueOutOfRange(f"queue {self.queue} out of range: {self.ifname} "
                                           f"has {count} queue(s)", err)
        return XskError(f"AF_XDP socket on {where} failed at stage {stage}: "
                        f"{describe(err)}", err)

    # -- basics -------------------------------------------------------------------------

    def fileno(self) -> int:
        """The socket fd, for poll/epoll and for XSKMAP registration."""
        if self._closed:
            raise SocketClosed("socket is closed")
        return int(self._s.fd)

    def tx_fileno(self) -> int:
        """The fd of the tx ring's socket, to poll for room on the tx ring: ``fileno()``
        unless the socket was opened with ``separate_tx``."""
        if self._closed:
            raise SocketClosed("socket is closed")
        return int(self._s.tx_fd)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Unmap the rings, close the fd, and take back every frame the kernel held.

        Frames of rx batches still held by the application stay valid; releasing them
        later returns them to the UMEM's allocator.
        """
        if self._closed:
            return
        self._closed = True
        lib.xsk_sock_close(self._s)
        self.umem._detach(self, self._tag)
        if self._owns_umem:
            self._buf = memoryview(b"")
            # Views the application still holds keep it mapped until they are collected.
            with contextlib.suppress(XskError):
                self.umem.close()

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._s.fd}"
        return (f"Socket({self.ifname!r}, queue={self.queue}, mode={self.mode!r}, "
                f"zerocopy={getattr(self, 'zerocopy', None)}, {state})")

    # -- receive ------------------------------------------------------------------------

    def recv(self, max_frames: int = 64, timeout: float | None = None) -> RxBatch:
        """Up to ``max_frames`` received frames, in one C call.

        ``timeout``: seconds to wait when none are ready; ``0`` never waits, ``None``
        waits until at least one frame arrives. May return an empty batch.
        """
        if self._closed:
            raise SocketClosed("socket is closed")
        if not 0 < max_frames <= MAX_BATCH:
            raise ValueError(f"max_frames={max_frames}: must be 1..{MAX_BATCH}")
        descs = self._descs(max_frames)
        if timeout == 0:
            n = lib.xsk_rx(self._s, descs, max_frames, 0)
        else:
            n = self._recv_wait(descs, max_frames, timeout)
        return RxBatch(self, descs, n, self._buf)

    def _descs(self, n: int) -> Any:
        """A descriptor array of at least ``n`` entries, reused when one is free."""
        pool = self._desc_pool
        for i in range(len(pool) - 1, -1, -1):
            if len(pool[i]) >= n:
                return pool.pop(i)
        return ffi.new("struct xdp_desc[]", max(n, 64))

    def _recycle(self, descs: Any) -> None:
        if descs is not None and len(self._desc_pool) < DESC_POOL:
            self._desc_pool.append(descs)

    def recv_into(self, arrays: RxArrays, max_frames: int | None = None) -> int:
        """Up to ``max_frames`` (default: the arrays' capacity) received frames into
        ``arrays`` (``addrs[:n]``, ``lens[:n]``), in one C call that never waits and
        allocates nothing. Return them with ``release_from(arrays, n)``."""
        if self._closed:
            raise SocketClosed("socket is closed")
        n = arrays.capacity if max_frames is None else min(max_frames, arrays.capacity)
        return int(lib.xsk_rx_split(self._s, arrays._addrs_p, arrays._lens_p, n))

    def release_from(self, arrays: RxArrays, n: int) -> int:
        """Give the first ``n`` frames of ``arrays`` back (as ``release`` does)."""
        n = min(n, arrays.capacity)
        if n <= 0:
            return 0
        if self._closed:
            descs = ffi.new("struct xdp_desc[]", n)
            for i in range(n):
                descs[i].addr = int(arrays.addrs[i])
            return int(lib.xsk_frames_free_descs(self.umem._frames, descs, n))
        return int(lib.xsk_release_addrs(self._s, arrays._addrs_p, n))

    def _recv_wait(self, descs: Any, max_frames: int, timeout: float | None) -> int:
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while True:
            if deadline is None:
                wait_ms = 1000  # bounded slices: signals are handled between them
            else:
                wait_ms = min(1000, math.ceil((deadline - time.monotonic()) * 1000))
                if wait_ms <= 0:
                    wait_ms = 0
            n = lib.xsk_rx(self._s, descs, max_frames, wait_ms)
            if n > 0 or (n == 0 and wait_ms == 0):
                return max(n, 0)
            if n < 0 and -n != E.EINTR:
                raise XskError(f"poll on AF_XDP socket: {describe(-n)}", -n)
            if deadline is not None and time.monotonic() >= deadline:
                return 0

    def release(self, batch: RxBatch) -> int:
        """Give a batch's frames back to the fill ring (to the allocator once closed).

        Returns the number of frames accepted; frames the application no longer holds
        (sent, or released twice) are refused and counted in ``rejected_fill``.
        """
        if batch._sock is not self:
            raise ConfigError("this batch was received on another socket")
        descs, n = batch._take()
        if n == 0:
            self._recycle(descs)
            return 0
        if self._closed:
            return int(lib.xsk_frames_free_descs(self.umem._frames, descs, n))
        accepted = int(lib.xsk_release(self._s, descs, n))
        self._recycle(descs)
        return accepted

    def fill(self, n: int) -> int:
        """Move up to ``n`` free UMEM frames onto the fill ring; returns how many."""
        if self._closed:
            raise SocketClosed("socket is closed")
        return int(lib.xsk_fill(self._s, n))

    @property
    def rx_pending(self) -> int:
        """Frames waiting on the rx ring."""
        return 0 if self._closed else int(lib.xsk_rx_pending(self._s))

    # -- transmit -----------------------------------------------------------------------

    def alloc_tx(self, n: int, length: int = 0) -> TxBatch:
        """``n`` frames for transmission, each of ``length`` bytes (set later if 0).

        Completions are collected first when the allocator runs short; raises
        ``UmemExhausted`` if there are still fewer than ``n`` free frames.
        """
        if self._closed:
            raise SocketClosed("socket is closed")
        if not 0 < n <= MAX_BATCH or not 0 <= length <= self._max_tx_len:
            raise ValueError(f"n={n}, length={length}: need 1..{MAX_BATCH} frames of "
                             f"0..{self._max_tx_len} bytes")
        descs = ffi.new("struct xdp_desc[]", n)
        frames = self.umem._frames
        rc = lib.xsk_frames_alloc_descs(frames, descs, n, self._tx_offset, length)
        if rc < 0:
            lib.xsk_complete(self._s, 1 << 20)
            rc = lib.xsk_frames_alloc_descs(frames, descs, n, self._tx_offset, length)
            if rc < 0:
                raise UmemExhausted(f"{n} frames asked for, {self.umem.free_frames} free "
                                    f"({self.tx_outstanding} in flight on this socket)")
        return TxBatch(self, descs, n, self._buf)

    def send(self, frames: TxBatch | Iterable[bytes | bytearray | memoryview | tuple[int, int]]
             ) -> int:
        """Queue frames on the tx ring and wake the kernel if it asks; returns how many.

        ``frames`` is a ``TxBatch`` (zero-copy; frames that did not fit stay in it for
        the next call), or an iterable of packets (``bytes``-like: copied into fresh
        frames, those that did not fit are freed) or ``(addr, len)`` pairs of frames the
        application holds (from ``Umem.alloc``).
        """
        if self._closed:
            raise SocketClosed("socket is closed")
        if isinstance(frames, TxBatch):
            if frames._sock is not self:
                raise ConfigError("this batch was allocated on another socket")
            descs, n = frames._pending()
            if n == 0:
                return 0
            k = lib.xsk_tx(self._s, descs, n)
            if k < 0:
                raise XskError(f"AF_XDP transmit: {describe(-k)}", -k)
            frames._advance(k)
            return int(k)
        return self._send_items(list(frames))

    def _send_items(self, items: list[Any]) -> int:
        n = len(items)
        if n == 0:
            return 0
        packets = [i for i, item in enumerate(items) if not isinstance(item, tuple)]
        descs = ffi.new("struct xdp_desc[]", n)
        if packets:
            if len(packets) != n:
                raise ConfigError("send() takes either packets or (addr, len) pairs, not both")
            batch = self.alloc_tx(n)
            for i, data in enumerate(items):
                batch.set(i, data)
            try:
                return self.send(batch)
            finally:
                batch.release()
        for i, (addr, length) in enumerate(items):
            descs[i].addr = addr
            descs[i].len = length
        k = lib.xsk_tx(self._s, descs, n)
        if k < 0:
            raise XskError(f"AF_XDP transmit: {describe(-k)}", -k)
        return int(k)

    def send_copy(self, base: Any, offsets: Any, lengths: Any, n: int, *,
                  kick: bool = True) -> int:
        """Copy ``n`` frames (``base + offsets[i]``, ``lengths[i]`` bytes) into free UMEM
        frames and queue them, in one C call; returns how many of the ``n`` were
        consumed (frames too large for a UMEM frame are skipped and counted in
        ``rejected_tx``). ``base`` is a cffi pointer or a buffer; ``offsets`` uint64 and
        ``lengths`` uint32 arrays (cffi or contiguous numpy). ``kick=False`` queues
        without waking the kernel (unless the ring is full): call ``kick`` once after
        the last batch of a round."""
        return self.copier(base, offsets, lengths, kick=kick)(n)

    def copier(self, base: Any, offsets: Any, lengths: Any, *,
               kick: bool = False) -> Callable[[int], int]:
        """``send_copy`` from these three arrays as a function of ``n``, with their
        pointers converted once: for a caller that sends from the same arrays round
        after round (a shared build arena, a staging area), the conversions cost
        more than copying a small frame."""
        if self._closed:
            raise SocketClosed("socket is closed")
        keep: list[Any] = []
        src = _pointer("uint8_t *", base, keep)
        offs = _pointer("uint64_t *", offsets, keep)
        lens = _pointer("uint32_t *", lengths, keep)
        umem = ffi.cast("uint8_t *", self.umem.address)
        copy, tx_offset, wake = lib.xsk_tx_copy_kick, self._tx_offset, 1 if kick else 0

        def send(n: int) -> int:
            if self._closed:  # checked per call: the socket may close after this is made
                raise SocketClosed("socket is closed")
            if n <= 0:
                return 0
            keep  # noqa: B018 - the converted buffers live as long as this function
            return int(copy(self._s, umem, tx_offset, src, offs, lens, n, wake))

        return send

    def kick(self, offload: bool = True) -> None:
        """Wake the kernel to transmit what is on the tx ring (``send`` does it too).

        With a tx thread running, ``offload=False`` makes this call's ``sendto`` here
        rather than on the thread, whatever the batch size."""
        if self._closed:
            raise SocketClosed("socket is closed")
        rc = lib.xsk_kick(self._s) if offload else lib.xsk_kick_here(self._s)
        if rc < 0:
            raise XskError(f"AF_XDP tx wakeup: {describe(-rc)}", -rc)

    def start_tx_thread(self, min_batch: int = 16) -> None:
        """Let a native helper thread make the kernel transmit (copy mode).

        From now on ``kick`` (and ``send``) hand a batch of ``min_batch`` frames or more
        to the thread instead of calling ``sendto`` here: in copy mode that call runs
        the kernel's transmit, and on veth the receiver's input path, inline, so
        moving it off the caller's CPU frees that CPU for the next batch. Smaller
        batches are still kicked here (a thread wake-up costs a lone frame more
        latency than it saves). Frames complete asynchronously: ``poll_completions``
        returns them whenever the thread has sent them. ``close`` stops the thread.
        """
        if self._closed:
            raise SocketClosed("socket is closed")
        if min_batch < 1:
            raise ValueError(f"min_batch must be at least 1, not {min_batch}")
        rc = lib.xsk_tx_thread_start(self._s, min_batch)
        if rc < 0:
            raise XskError(f"starting the AF_XDP tx thread: {describe(-rc)}", -rc)

    def stop_tx_thread(self) -> None:
        """Stop the helper thread (if any); kicks are made by the caller again."""
        if not self._closed:
            lib.xsk_tx_thread_stop(self._s)

    @property
    def tx_thread_running(self) -> bool:
        return not self._closed and self._s.tx_thread != ffi.NULL

    def poll_completions(self, max_frames: int = 1 << 20) -> int:
        """Return transmitted frames from the completion ring to the allocator."""
        if self._closed:
            raise SocketClosed("socket is closed")
        return int(lib.xsk_complete(self._s, max_frames))

    @property
    def tx_outstanding(self) -> int:
        """Frames sent and not yet seen on the completion ring."""
        return int(lib.xsk_tx_outstanding(self._s))

    def _free_descs(self, descs: Any, n: int) -> None:
        lib.xsk_frames_free_descs(self.umem._frames, descs, n)

    # -- waiting and statistics ---------------------------------------------------------

    def wait(self, timeout: float | None = None, *, writable: bool = False) -> bool:
        """poll(2) for rx readiness (or tx room with ``writable``); True if ready."""
        if self._closed:
            raise SocketClosed("socket is closed")
        events = 0x004 if writable else 0x001  # POLLOUT / POLLIN
        ms = -1 if timeout is None else max(0, math.ceil(timeout * 1000))
        rc = lib.xsk_wait(self._s, events, ms)
        if rc < 0 and -rc != E.EINTR:
            raise XskError(f"poll on AF_XDP socket: {describe(-rc)}", -rc)
        return rc > 0

    def statistics(self) -> dict[str, int]:
        """Kernel counters (``XDP_STATISTICS``) merged with this socket's own counters.

        ``rx_fill_ring_empty_descs`` counts frames dropped because the fill ring was
        empty; ``rx_ring_full`` those dropped because the rx ring was full.
        """
        if self._closed:
            raise SocketClosed("socket is closed")
        st = ffi.new("struct xdp_statistics *")
        rc = lib.xsk_sock_statistics(self._s, st)
        if rc < 0:
            raise XskError(f"XDP_STATISTICS: {describe(-rc)}", -rc)
        out = {name: int(getattr(st, name)) for name in KERNEL_STATS}
        out.update({name: int(getattr(self._s.st, name)) for name in LOCAL_STATS})
        return out
