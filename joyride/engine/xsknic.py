"""The engine's NIC over an AF_XDP socket (``xsk``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from joyride.engine.nic import Buffer, RxDescriptors
from joyride.wire._native import ffi as wire_ffi


class XskNic:
    """Frames in: zero-copy views into the UMEM, valid until ``release``. Frames out:
    copied into free UMEM frames and queued on the tx ring in one call."""

    def __init__(self, sock: Any, mtu: int) -> None:
        import xsk

        self._xsk = xsk
        self.sock = sock
        self.mtu = mtu
        self._batch: Any = None
        # A raw pointer, not a buffer export: the UMEM can close while the parser and
        # the fast path still cache their last base pointer (never used after close).
        self._umem_base = wire_ffi.cast("uint8_t *", sock.umem.address)
        self.tx_dropped = 0

    def receive(self, max_frames: int) -> RxDescriptors | None:
        batch = self.sock.recv(max_frames, timeout=0)
        if not batch:
            self.sock.release(batch)
            return None
        self._batch = batch
        # The descriptors' fields are strided views; the parser takes plain arrays.
        addrs = np.ascontiguousarray(batch.addrs, dtype=np.uint64)
        lens = np.ascontiguousarray(batch.lens, dtype=np.uint32)
        return RxDescriptors(self._umem_base, addrs, lens, len(batch))

    def release(self) -> None:
        if self._batch is not None:
            self.sock.release(self._batch)
            self._batch = None

    def transmit(self, frames: Sequence[Buffer]) -> int:
        self.sock.poll_completions()
        try:
            sent = int(self.sock.send(frames))
        except self._xsk.UmemExhausted:
            sent = 0
        self.tx_dropped += len(frames) - sent
        return sent

    def transmit_from(self, base: Any, offsets: Any, lengths: Any, n: int) -> int:
        """Frames built elsewhere (``base + offsets[i]``), copied and queued in one C call."""
        self.sock.poll_completions()
        sent = int(self.sock.send_copy(base, offsets, lengths, n))
        self.tx_dropped += n - sent
        return sent

    def fileno(self) -> int | None:
        return int(self.sock.fileno())

    def close(self) -> None:
        self.release()
