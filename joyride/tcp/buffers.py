"""Send and receive byte buffers for one TCP connection.

Both are a single ``bytearray`` used as a FIFO. CPython deletes from the front of a
bytearray in O(1) (it moves a start offset, not the bytes) and appends in amortised
O(1), so every call costs O(bytes moved by that call), never O(buffer size): no
repeated slicing of large ``bytes`` objects and no per-byte Python loops.

Memory bound: ``SendBuffer`` holds at most ``capacity`` bytes; ``ReceiveBuffer`` at
most ``maximum`` bytes (its capacity only grows up to that ceiling). A bytearray's
allocation can exceed its length by CPython's growth slack (about 1/8).
"""

from __future__ import annotations

from typing import Final, TypeAlias

BytesLike: TypeAlias = bytes | bytearray | memoryview


def _append(buf: bytearray, data: BytesLike, limit: int) -> int:
    """Append at most ``limit`` bytes of ``data`` to ``buf`` (one copy, no temporaries)."""
    with memoryview(data) as view:
        flat = view if view.format in ("B", "b", "c") and view.ndim == 1 else view.cast("B")
        n = min(flat.nbytes, limit)
        if n > 0:
            buf += flat[:n]
        if flat is not view:
            flat.release()
    return max(n, 0)


class SendBuffer:
    """Bytes written by the application and not yet acknowledged by the peer.

    Offset 0 is the oldest unacknowledged byte (SND.UNA in RFC 9293 §3.3.1 terms);
    the connection maps offsets to sequence numbers.
    """

    __slots__ = ("_buf", "_capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must be non-negative")
        self._buf = bytearray()
        self._capacity = capacity

    def __len__(self) -> int:
        return len(self._buf)

    @property
    def capacity(self) -> int:
        return self._capacity

    @capacity.setter
    def capacity(self, value: int) -> None:
        # Shrinking below what is buffered would drop unacknowledged data.
        self._capacity = max(value, len(self._buf), 0)

    @property
    def free(self) -> int:
        return max(self._capacity - len(self._buf), 0)

    def write(self, data: BytesLike) -> int:
        """Append as much of ``data`` as fits; return how many bytes were taken."""
        return _append(self._buf, data, self.free)

    def peek(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes starting ``offset`` bytes past the oldest unacked byte."""
        if offset < 0 or n <= 0:
            return b""
        with memoryview(self._buf) as src:
            return bytes(src[offset : offset + n])

    def consume(self, n: int) -> None:
        """Drop ``n`` acknowledged bytes from the front.

        The connection has already validated the ACK (RFC 9293 §3.10.7.4), so an
        ``n`` outside ``[0, len]`` is a caller bug and raises ``ValueError``.
        """
        if not 0 <= n <= len(self._buf):
            raise ValueError(f"cannot consume {n} of {len(self._buf)} buffered bytes")
        del self._buf[:n]


# Linux-style dynamic right-sizing never shrinks the window it has offered and grows
# it to twice what the application drained in one RTT (tcp_rcv_space_adjust).
_DRS_GROWTH_FACTOR: Final = 2


class ReceiveBuffer:
    """In-order bytes received and not yet read by the application.

    ``window`` is the free space to advertise (RFC 9293 §3.8.6). ``note_read`` grows
    ``capacity`` (dynamic right-sizing, as Linux's tcp_rcv_space_adjust) when the
    application drains more than half the buffer per RTT, up to ``maximum``; it never
    shrinks, since shrinking an offered window is discouraged (RFC 9293 §3.8.6).
    """

    __slots__ = ("_buf", "_capacity", "_epoch_read", "_epoch_start", "maximum")

    def __init__(self, initial: int, maximum: int) -> None:
        if not 0 <= initial <= maximum:
            raise ValueError(f"need 0 <= initial <= maximum, got {initial}, {maximum}")
        self._buf = bytearray()
        self._capacity = initial
        self.maximum = maximum
        self._epoch_start: float | None = None
        self._epoch_read = 0

    def __len__(self) -> int:
        return len(self._buf)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def window(self) -> int:
        return max(self._capacity - len(self._buf), 0)

    def push(self, data: BytesLike) -> int:
        """Append in-order bytes, as many as the window allows; return bytes taken."""
        return _append(self._buf, data, self.window)

    def read(self, n: int = -1) -> bytes:
        """Remove and return up to ``n`` bytes (all of them when ``n < 0``)."""
        if n < 0 or n > len(self._buf):
            n = len(self._buf)
        with memoryview(self._buf) as src:
            out = bytes(src[:n])
        del self._buf[:n]
        self._epoch_read += n
        return out

    def readinto(self, buf: bytearray | memoryview) -> int:
        """Move up to ``len(buf)`` bytes into the writable buffer ``buf``."""
        with memoryview(buf) as view, view.cast("B") as target:
            n = min(target.nbytes, len(self._buf))
            with memoryview(self._buf) as src:
                target[:n] = src[:n]
        del self._buf[:n]
        self._epoch_read += n
        return n

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
