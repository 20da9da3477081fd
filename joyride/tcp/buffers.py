"""Send and receive byte buffers for one TCP connection.

Both are built on ``ByteRing``, a growable ring: writes copy into the free space
after the tail, reads and ACKs move the head, and nothing is ever shifted. Every call
costs O(bytes it moves); growth doubles the ring (amortised O(1) per byte) up to the
capacity. A plain bytearray FIFO does not give that: CPython's bytearray keeps front
deletions cheap by moving a start offset, but a later append that needs room moves
the whole remainder down, so a sender that keeps its buffer full paid a copy of
everything buffered per batch (about 38 µs near 512 KiB).

The ring also lets a writer fill the send buffer in place (``free_region`` /
``commit``: ``TcpConnection`` reads an application's bytes straight into it) without an
intermediate copy.

Memory bound: a ring holds at most ``capacity`` bytes in at most
``max(capacity, buffered)`` bytes of memory, allocated on demand. A send ring that
grew beyond ``_KEEP_WHEN_EMPTY`` is released when it drains, so an idle connection
does not pin a bulk transfer's megabyte; a receive ring is kept at the size
autotuning granted (see ``ReceiveBuffer``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Final, TypeAlias

BytesLike: TypeAlias = bytes | bytearray | memoryview

_MIN_RING: Final = 4096  # first allocation
_KEEP_WHEN_EMPTY: Final = 64 * 1024  # largest ring kept once drained


def _flat(view: memoryview) -> memoryview:
    """``view`` as one-dimensional unsigned bytes (a new view when it was not)."""
    return view if view.format in ("B", "b", "c") and view.ndim == 1 else view.cast("B")


class ByteRing:
    """A FIFO of bytes in a growable circular bytearray, bounded by ``capacity``.

    The bytearray is never resized in place (growth replaces it), so views and
    C pointers into it stay valid for as long as the bytes they show are buffered.
    """

    __slots__ = ("_capacity", "_head", "_len", "_ring")

    #: Largest ring kept once drained (None: always kept).
    keep_when_empty: ClassVar[int | None] = _KEEP_WHEN_EMPTY

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must be non-negative")
        self._ring = bytearray()
        self._head = 0  # ring index of the oldest byte
        self._len = 0
        self._capacity = capacity

    def __len__(self) -> int:
        return self._len

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def free(self) -> int:
        return max(self._capacity - self._len, 0)

    # -- writing ----------------------------------------------------------------------

    def _write(self, data: BytesLike, room: int | None = None) -> int:
        """Append as much of ``data`` as fits (``room``, else ``free``); return how
        many bytes were taken."""
        if isinstance(data, (bytes, bytearray)):
            # The common case (an application's write), without the memoryview
            # wrapping a view of another format would need.
            n = min(len(data), self.free if room is None else room)
            if n <= 0:
                return 0
            self._put(data, n)
            return n
        with memoryview(data) as view:
            flat = _flat(view)
            n = min(flat.nbytes, self.free if room is None else room)
            if n > 0:
                self._put(flat, n)
            if flat is not view:
                flat.release()
        return max(n, 0)

    def _put(self, src: BytesLike, n: int) -> None:
        """Copy the first ``n`` bytes of ``src`` (one-byte items) in after the tail."""
        if self._len + n > len(self._ring):
            self._grow(self._len + n)
        ring = self._ring
        size = len(ring)
        tail = (self._head + self._len) % size
        first = min(n, size - tail)
        # Equal-length slice assignment copies in place: the ring never resizes.
        # (A whole ``src`` is assigned as it is: slicing would copy it first.)
        ring[tail : tail + first] = src if len(src) == first else src[:first]
        if first < n:
            ring[: n - first] = src[first:n]
        self._len += n

    def _grow(self, need: int) -> None:
        """Move the contents, in order, to a new ring of at least ``need`` bytes."""
        # Double (amortised O(1) per byte), but never beyond what may be buffered.
        size = min(max(need, 2 * len(self._ring), _MIN_RING), max(self._capacity, need))
        ring = bytearray(size)
        if self._len:
            ring[: self._len] = self._parts(0, self._len)
        self._ring = ring
        self._head = 0

    def free_region(self) -> tuple[bytearray, int, int]:
        """(ring, start, length): contiguous free space right after the tail, at most
        ``free`` bytes, for a writer that fills it in place and then calls
        ``commit``. The ring is grown to ``capacity`` first, so an empty buffer offers
        all of it; otherwise the region ends at the ring's end or at the head."""
        if len(self._ring) < self._capacity:
            self._grow(self._capacity)
        ring = self._ring
        size = len(ring)
        if size == 0:
            return ring, 0, 0
        tail = (self._head + self._len) % size
        # Unwrapped data [head, tail): free up to the ring's end. Wrapped (or full):
        # free up to the head.
        end = size if tail >= self._head and self._len < size else self._head
        return ring, tail, min(end - tail, self.free)

    def commit(self, n: int) -> None:
        """``n`` bytes were written in place at the start of ``free_region``."""
        if not 0 <= n <= min(self.free, len(self._ring) - self._len):
            raise ValueError(f"cannot commit {n} bytes: not in a free region")
        self._len += n

    # -- reading ----------------------------------------------------------------------

    def _parts(self, offset: int, n: int) -> bytes | memoryview:
        """Bytes [offset, offset + n) (in range): a view of the ring when they are
        contiguous in it, else a copy joining the two pieces."""
        ring = self._ring
        size = len(ring)
        start = (self._head + offset) % size
        view = memoryview(ring)
        if start + n <= size:
            return view[start : start + n]
        return b"".join((view[start:], view[: start + n - size]))

    def peek(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes starting ``offset`` bytes past the oldest one."""
        n = min(n, self._len - offset)
        if offset < 0 or n <= 0:
            return b""
        part = self._parts(offset, n)
        return part if isinstance(part, bytes) else bytes(part)

    def consume(self, n: int) -> None:
        """Drop ``n`` bytes from the front; ``n`` outside ``[0, len]`` is a caller bug
        and raises ``ValueError``."""
        if not 0 <= n <= self._len:
            raise ValueError(f"cannot consume {n} of {self._len} buffered bytes")
        self._len -= n
        if self._len == 0:
            # Empty: restart at index 0 so the next writes stay contiguous, and let
            # a big ring go.
            self._head = 0
            keep = self.keep_when_empty
            if keep is not None and len(self._ring) > keep:
                self._ring = bytearray()
        elif n:
            self._head = (self._head + n) % len(self._ring)

    def _take_into(self, target: memoryview) -> int:
        """Move up to ``len(target)`` bytes from the front into ``target``."""
        n = min(target.nbytes, self._len)
        if n > 0:
            target[:n] = self._parts(0, n)
            self.consume(n)
        return max(n, 0)


class SendBuffer(ByteRing):
    """Bytes written by the application and not yet acknowledged by the peer.

    Offset 0 is the oldest unacknowledged byte (SND.UNA in RFC 9293 §3.3.1 terms);
    the connection maps offsets to sequence numbers. ``consume`` is called for bytes
    the peer acknowledged; the connection has validated the ACK (RFC 9293
    §3.10.7.4) before.
    """

    __slots__ = ()

    @property
    def capacity(self) -> int:
        return self._capacity

    @capacity.setter
    def capacity(self, value: int) -> None:
        # Shrinking below what is buffered would drop unacknowledged data.
        self._capacity = max(value, self._len, 0)

    def write(self, data: BytesLike) -> int:
        """Append as much of ``data`` as fits; return how many bytes were taken."""
        return self._write(data)


# Linux-style dynamic right-sizing never shrinks the window it has offered and grows
# it to twice what the application drained in one RTT (tcp_rcv_space_adjust).
_DRS_GROWTH_FACTOR: Final = 2


class ReceiveBuffer(ByteRing):
    """In-order bytes received and not yet read by the application.

    ``window`` is the free space to advertise (RFC 9293 §3.8.6). ``note_read`` grows
    ``capacity`` (dynamic right-sizing, as Linux's tcp_rcv_space_adjust) when the
    application drains more than half the buffer per RTT, up to ``maximum``; it never
    shrinks, since shrinking an offered window is discouraged (RFC 9293 §3.8.6).
    """

    __slots__ = ("_epoch_read", "_epoch_start", "maximum", "slack")

    # A reader that keeps up empties the buffer at every batch: releasing the ring
    # then would reallocate (and zero) it per batch. Its size is what autotuning
    # granted.
    keep_when_empty = None

    def __init__(self, initial: int, maximum: int) -> None:
        if not 0 <= initial <= maximum:
            raise ValueError(f"need 0 <= initial <= maximum, got {initial}, {maximum}")
        super().__init__(initial)
        self.maximum = maximum
        # In-order bytes taken beyond the capacity: a window announced in units of
        # 2**shift is rounded up rather than shrunk (RFC 7323 §2.4), so the announced
        # right edge may lie up to 2**shift - 1 bytes past the free space; a sender
        # that fills it must not lose those bytes (Linux's receive buffer has the
        # same slack). The connection sets it once the window scale is known.
        self.slack = 0
        self._epoch_start: float | None = None
        self._epoch_read = 0

    @property
    def window(self) -> int:
        return self.free

    def push(self, data: BytesLike) -> int:
        """Append in-order bytes, as many as the window allows; return bytes taken."""
        return self._write(data, max(self._capacity + self.slack - self._len, 0))

    def read(self, n: int = -1) -> bytes:
        """Remove and return up to ``n`` bytes (all of them when ``n < 0``)."""
        if n < 0 or n > self._len:
            n = self._len
        out = self.peek(0, n)
        self.consume(n)
        self._epoch_read += n
        return out

    def front(self, n: int) -> memoryview:
        """A view of up to ``n`` bytes from the front, as far as they lie contiguous in
        the ring (the rest comes with the next call), without taking them: a reader
        that hands bytes on takes what went with ``taken``. Release the view before
        the buffer changes."""
        n = min(n, self._len)
        if n <= 0:
            return memoryview(b"")
        start = self._head
        return memoryview(self._ring)[start:min(start + n, len(self._ring))]

    def taken(self, n: int) -> None:
        """The reader took ``n`` bytes of what ``front`` showed."""
        self.consume(n)
        self._epoch_read += n

    def readinto(self, buf: bytearray | memoryview) -> int:
        """Move up to ``len(buf)`` bytes into the writable buffer ``buf``."""
        with memoryview(buf) as view, view.cast("B") as target:
            n = self._take_into(target)
        self._epoch_read += n
        return n

    def save_hot(self, tcb: Any) -> None:
        """Hand capacity, slack and the autotuning epoch to the C data plane's
        ``struct dp_tcb``, which runs ``note_read`` while it owns the connection
        (``dataplane.c`` ``rcv_note_read``). An unset epoch travels as a negative
        start."""
        tcb.rcv_cap = self._capacity
        tcb.rcv_slack = self.slack
        tcb.rcv_max = self.maximum
        tcb.rcv_epoch_start = -1.0 if self._epoch_start is None else self._epoch_start
        tcb.rcv_epoch_read = self._epoch_read

    def load_hot(self, tcb: Any) -> None:
        """Take back what ``save_hot`` gave: the capacity C may have grown (never
        shrunk), and the epoch. Call before pushing the ring's bytes back."""
        self._capacity = max(self._capacity, min(int(tcb.rcv_cap), self.maximum))
        start = float(tcb.rcv_epoch_start)
        self._epoch_start = None if start < 0 else start
        self._epoch_read = int(tcb.rcv_epoch_read)

    def note_read(self, now: float, srtt: float | None) -> None:
        """Once per RTT, grow capacity if the reader kept up with the window.

        Without an RTT estimate there is no time scale to measure against, so nothing
        happens. Growth goes to ``2 * drained`` (room for the sender to keep growing
        in slow start), capped at ``maximum``.
        """
        if srtt is None or srtt <= 0:
            return
        if self._epoch_start is None or now < self._epoch_start:
            # First call, or the caller's clock went backwards: start a fresh epoch.
            self._epoch_start = now
            self._epoch_read = 0
            return
        if now - self._epoch_start < srtt:
            return
        if 2 * self._epoch_read > self._capacity:
            self._capacity = min(
                self.maximum, max(self._capacity, _DRS_GROWTH_FACTOR * self._epoch_read)
            )
        self._epoch_start = now
        self._epoch_read = 0
