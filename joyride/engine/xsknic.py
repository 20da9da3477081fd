"""The engine's NIC over an AF_XDP socket (``xsk``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from joyride.engine.nic import Buffer, RxDescriptors
from joyride.wire._native import ffi as wire_ffi

# Frames a round must queue before its kick goes to the tx thread: below this, the
# sendto() in the engine's thread costs a request less latency than waking the thread.
TX_THREAD_MIN_BATCH: Final = 16


class XskNic:
    """Frames in: zero-copy views into the UMEM, valid until ``release``. Frames out:
    copied into free UMEM frames and queued on the tx ring in one call.

    With ``tx_thread`` (the default) the socket's large kicks are made by a native
    helper thread (``xsk.Socket.start_tx_thread``): in copy mode the kernel transmits
    inside that wake-up, and on veth runs the receiver's input path there too, which
    would otherwise take about a fifth of the engine's CPU under load. The engine
    offloads only rounds that sent data (see ``Engine._transmit``); ``offload_acks``
    offloads rounds of pure ACKs too, for an owner whose own CPU, not the sender's,
    limits a bulk receive (the network service, which copies every byte once more
    into the application's socket).
    """

    def __init__(self, sock: Any, mtu: int, batch: int = 64, *, tx_thread: bool = True,
                 offload_acks: bool = False) -> None:
        import xsk

        self._kick_error: type[Exception] = xsk.XskError
        if tx_thread:
            sock.start_tx_thread(TX_THREAD_MIN_BATCH)
        self._offload_acks = offload_acks
        self.sock = sock
        self.mtu = mtu
        # A raw pointer, not a buffer export: the UMEM can close while the parser
        # still caches its last base pointer (never used after close).
        self._umem_base = wire_ffi.cast("uint8_t *", sock.umem.address)
        # Received descriptors land in these arrays, allocated once: a poll (most of
        # them find nothing while spinning) allocates no Python objects.
        self._rx = xsk.RxArrays(batch)
        self._held = 0
        # One RxDescriptors per batch size, made once: its arrays are exactly n long
        # (callers may sum them) and stay the same objects, so consumers that memoise
        # their C pointers by object keep hitting.
        self._descs: dict[int, RxDescriptors] = {}
        # Frames built one by one are packed here and handed to the socket in one C
        # call (``send_copy``).
        self._stage = bytearray(batch * (mtu + 18))
        self._stage_ptr = wire_ffi.from_buffer(self._stage)
        self._stage_offs = np.zeros(batch, dtype=np.uint64)
        self._stage_lens = np.zeros(batch, dtype=np.uint32)
        self._send_staged = sock.copier(self._stage_ptr, self._stage_offs, self._stage_lens)
        self.tx_dropped = 0
        self.kick_errors = 0
        self._kick_owed = False

    def receive(self, max_frames: int) -> RxDescriptors | None:
        n = self.sock.recv_into(self._rx, max_frames)
        if n == 0:
            return None
        self._held = n
        desc = self._descs.get(n)
        if desc is None:
            desc = RxDescriptors(self._umem_base, self._rx.addrs[:n], self._rx.lens[:n], n)
            self._descs[n] = desc
        return desc

    def release(self) -> None:
        if self._held:
            self.sock.release_from(self._rx, self._held)
            self._held = 0

    def transmit(self, frames: Sequence[Buffer]) -> int:
        self.sock.poll_completions()
        stage, offs, lens = self._stage, self._stage_offs, self._stage_lens
        sent = k = pos = 0
        for frame in frames:
            size = len(frame)
            if k == len(lens) or pos + size > len(stage):
                sent += self._send_stage(k)
                k = pos = 0
            if size > len(stage):
                continue  # larger than any MTU frame: counted as dropped below
            stage[pos:pos + size] = frame
            offs[k], lens[k] = pos, size
            k += 1
            pos += size
        sent += self._send_stage(k)
        self.tx_dropped += len(frames) - sent
        return sent

    def _send_stage(self, k: int) -> int:
        if k == 0:
            return 0
        self._kick_owed = True
        return self._send_staged(k)

    def kick(self, offload: bool = True) -> None:
        """Wake the kernel once for every frame queued since the last kick: in copy mode
        each wakeup (a sendto) costs tens of µs, so one round's frames — fast-path
        batches of many connections, slow-path segments — share one. ``offload``
        False keeps the wake-up in this thread even when the tx thread would take it."""
        if self._kick_owed:
            self._kick_owed = False
            try:
                self.sock.kick(offload or self._offload_acks)
                # Copy mode transmits inside the wakeup: the frames are complete now
                # (or, handed to the tx thread, soon), and go back to the allocator
                # before the next round queues more.
                self.sock.poll_completions()
            except self._kick_error:
                self.kick_errors += 1

    def fileno(self) -> int | None:
        return int(self.sock.fileno())

    def close(self) -> None:
        self.kick()
        self.release()
