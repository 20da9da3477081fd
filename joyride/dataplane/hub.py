"""The embedding process's side of its shared-memory channels (``hub.c``).

In embedded mode on the C data plane the network service's data path runs in a thread
of the application's own process, and each connection reaches the application through
an AF_UNIX socket pair inside that process. A ``Hub`` moves the bytes through the
channels of ``cffi_build/chan.h`` instead: one arena of rings, claimed per connection
(``cffi_build/chan_claim.h``, with ``JR_CLAIM_BELL``), and one bell for the whole
process (``struct jr_bell``): a queue of "this connection has bytes" and an eventfd
that is written only while the event loop sleeps. While the loop is busy, neither side
makes a system call to move a request or to tell the other of it.

A ``Hub`` is used from one thread (its event loop's: ``joyride.aio.rings``); the data
plane's thread reaches it only through the channels' shared words and the bell.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any, Final

from joyride.dataplane.plane import ffi, lib

#: Channels at once (one slot each; a connection past them stays a stream). Slots are
#: memory of a sealed memfd touched only as it is used.
SLOTS: Final = 1024
#: Bytes each way per channel: the shim's size (preload/joyride_ring.c).
RING_BYTES: Final = 1 << 18
TAKE_BATCH: Final = 256


def wanted() -> bool:
    """Whether an embedding process's ``joyride.asyncio`` servers use channels: yes
    where the C data plane is built, unless ``JOYRIDE_EMBED_CHANNELS=0`` (the unix
    socket pair of each connection carries the bytes then, as in service mode)."""
    return lib is not None and os.environ.get("JOYRIDE_EMBED_CHANNELS", "1") != "0"


class Hub:
    """One process's arena of channels and its bell (see module doc)."""

    def __init__(self, slots: int | None = None, ring_bytes: int = RING_BYTES) -> None:
        slots = SLOTS if slots is None else slots
        if lib is None:
            raise RuntimeError("joyride.dataplane._dataplane is not built (pip install -e .)")
        ptr = lib.dp_hub_new(slots, ring_bytes)
        if ptr == ffi.NULL:
            raise OSError(errno.ENOMEM, "joyride: cannot make the channel arena "
                                        f"({slots} slots of {ring_bytes} bytes each way)")
        self.ptr: Any = ptr
        self.slots = slots
        self.efd: int = int(lib.dp_hub_efd(ptr))
        self._ids = ffi.new("uint32_t[]", TAKE_BATCH)
        self.live = 0  # slots claimed and not yet done
        self.watched = False  # an event loop watches efd (joyride.aio.rings.LoopBell)
        # What close runs first: that loop stops watching efd (set by joyride.aio.rings).
        self.on_close: Callable[[], None] | None = None
        self.closed = False

    # -- a connection ----------------------------------------------------------------------

    def claim(self, fd: int) -> int:
        """Claim a channel on ``fd`` (accepted, nothing read yet): its slot, or -errno
        (-ENOSPC: no slot free, the connection stays a stream)."""
        slot = int(lib.dp_hub_claim(self.ptr, fd))
        if slot >= 0:
            self.live += 1
        return slot

    def verdict(self, slot: int) -> int:
        """1 ring mode, 0 stream mode, -EAGAIN not yet (the bell will name the slot)."""
        return int(lib.dp_hub_verdict(self.ptr, slot))

    def read_into(self, slot: int, buf: Any, n: int) -> int:
        """Up to ``n`` bytes into ``buf`` (a cffi buffer): the count, 0 at EOF, -EAGAIN."""
        return int(lib.dp_hub_read(self.ptr, slot, buf, n))

    def write(self, slot: int, data: Any) -> int:
        """Bytes put into tx, or -EAGAIN (full: the descriptor turns writable at room)."""
        return int(lib.dp_hub_write(self.ptr, slot, ffi.from_buffer(data), len(data)))

    def shutdown(self, slot: int) -> None:
        lib.dp_hub_shutdown(self.ptr, slot)

    def done(self, slot: int) -> None:
        """The connection is over for the application (its descriptor closes next)."""
        lib.dp_hub_done(self.ptr, slot)
        self.live -= 1
        self._maybe_free()

    # -- the bell --------------------------------------------------------------------------

    def take(self) -> list[int]:
        """The slots the bell named since the last take (a slot may come twice)."""
        n = int(lib.dp_hub_take(self.ptr, self._ids, TAKE_BATCH))
        return list(self._ids[0:n])

    def arm(self) -> bool:
        """Before the loop may sleep: True if there is something to take now."""
        return bool(lib.dp_hub_arm(self.ptr))

    def lost(self) -> bool:
        """True once after the bell's queue overflowed: look at every channel."""
        return bool(lib.dp_hub_lost(self.ptr))

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """The data plane is gone: free the arena once no connection uses it and no
        loop watches the eventfd (a live transport may still read what its rings
        hold)."""
        if self.on_close is not None:
            hook, self.on_close = self.on_close, None
            hook()
        self.closed = True
        self._maybe_free()

    def unwatch(self) -> None:
        """The loop that watched the eventfd no longer does."""
        self.watched = False
        self._maybe_free()

    def _maybe_free(self) -> None:
        if self.closed and self.live == 0 and not self.watched and self.ptr is not None:
            lib.dp_hub_free(self.ptr)
            self.ptr = None
