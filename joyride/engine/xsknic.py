"""The engine's NIC over an AF_XDP socket (``xsk``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from joyride.engine.nic import Buffer


class XskNic:
    """Frames in: zero-copy views into the UMEM, valid until ``release``. Frames out:
    copied into free UMEM frames and queued on the tx ring in one call."""

    def __init__(self, sock: Any, mtu: int) -> None:
        import xsk

        self._xsk = xsk
        self.sock = sock
        self.mtu = mtu
        self._batch: Any = None
        self.tx_dropped = 0

    def receive(self, max_frames: int) -> Sequence[Buffer]:
        self._batch = self.sock.recv(max_frames, timeout=0)
        return list(self._batch)

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

    def fileno(self) -> int | None:
        return int(self.sock.fileno())

    def close(self) -> None:
        self.release()
