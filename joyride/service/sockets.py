"""One AF_XDP socket per rx queue, drained by the service loop.

The ``xsk`` package provides the sockets; this module adapts them to what the service
needs (a file descriptor to poll and to register in the XSKMAP, statistics) and
keeps per-queue frame counts. It is also the engine's ``Nic`` (``receive``/``release``/
``transmit``), which is how the service's engine reads the queue. ``drain`` with a
``FrameSink`` (or none: frames are counted and recycled) serves a service run without
an engine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np

from joyride.engine.nic import Buffer, RxDescriptors
from joyride.errors import EnvironmentProblem, PrivilegeError

if TYPE_CHECKING:
    from joyride.engine.xsknic import XskNic

log = logging.getLogger(__name__)
BATCH: Final = 64  # frames per recv: amortises the ring bookkeeping
TX_ATTEMPTS: Final = 8  # wake-ups per transmit before frames that did not fit are dropped


class FrameSink(Protocol):
    """What receives steered frames (the TCP engine, once it exists)."""

    def __call__(self, queue: int, batch: Any) -> None: ...


@dataclass
class QueueCounters:
    rx_frames: int = 0
    rx_bytes: int = 0
    rx_batches: int = 0
    rx_unclaimed: int = 0  # frames no sink took (no engine attached)
    sink_errors: int = 0  # batches whose sink raised: counted, released, service goes on


class QueueSocket:
    """The AF_XDP socket of one rx queue."""

    def __init__(self, ifname: str, queue: int, mode: str) -> None:
        try:
            import xsk
        except ImportError as exc:  # its cffi extension is built at install time
            raise EnvironmentProblem(f"the AF_XDP package `xsk` is unusable: {exc} "
                                     "(reinstall Joyride to rebuild it)") from exc
        self.queue = queue
        self.mtu = 1500  # the engine's view; the service sets the interface's MTU
        self.counters = QueueCounters()
        self._nic: XskNic | None = None
        # joyride capture's tap (joyride.dataplane.tap.Tap) while a capture runs and no C
        # data plane carries the frames (JOYRIDE_DATAPLANE=python); None: off.
        self.tap: Any = None
        self.tx_dropped = 0
        self._tx_thread = os.environ.get(TX_THREAD_ENV, "1") != "0"
        try:
            # With a tx thread, the tx ring on a socket of its own: the loop's epoll of
            # the rx socket then never transmits in copy mode, nor waits on the lock the
            # thread holds while it does (xsk.Socket's separate_tx).
            self._sock = xsk.Socket(ifname, queue, mode="skb" if mode == "skb" else "native",
                                    separate_tx=self._tx_thread)
        except xsk.XskPermissionError as exc:
            raise PrivilegeError(f"AF_XDP on {ifname} needs root: {exc}") from exc
        except xsk.XskError as exc:
            raise EnvironmentProblem(
                f"opening the AF_XDP socket for {ifname} queue {queue}: {exc}") from exc

    def fileno(self) -> int:
        return int(self._sock.fileno())

    def drain(self, sink: FrameSink | None, limit: int = 16) -> int:
        """Receive up to ``limit`` batches; return the number of frames taken."""
        total = 0
        for _ in range(limit):
            batch = self._sock.recv(BATCH, timeout=0)  # the loop's poll already waited
            n = len(batch)
            if n == 0:
                break
            self.counters.rx_frames += n
            self.counters.rx_bytes += int(batch.lens.sum())
            self.counters.rx_batches += 1
            total += n
            try:
                if sink is None:
                    self.counters.rx_unclaimed += n
                else:
                    sink(self.queue, batch)
            except Exception:
                # One bad batch must not take the interface's service down with it.
                self.counters.sink_errors += 1
                if self.counters.sink_errors == 1:
                    log.exception("frame sink failed on queue %d (further failures "
                                  "are only counted)", self.queue)
            finally:
                self._sock.release(batch)
        return total

    # -- the engine's Nic ------------------------------------------------------------------

    def _engine_nic(self) -> XskNic:
        if self._nic is None:
            from joyride.engine.xsknic import XskNic

            # The service's CPU limits a bulk receive (it copies each byte again, into
            # the application's socket): ACK rounds go to the tx thread too.
            self._nic = XskNic(self._sock, self.mtu, offload_acks=True,
                               tx_thread=self._tx_thread)
        return self._nic

    def xsk_socket(self) -> Any:
        """The AF_XDP socket, for the C data plane's loop (its tx thread started)."""
        return self._engine_nic().sock

    def receive(self, max_frames: int) -> RxDescriptors | None:
        """Frames waiting on the rx ring, in place in the UMEM (valid until ``release``)."""
        got = self._engine_nic().receive(max_frames)
        if got is not None and not got.offsets.flags.c_contiguous:
            # Strided views of the rx descriptor ring: the C parser wants plain arrays.
            got.offsets = np.ascontiguousarray(got.offsets)
            got.lengths = np.ascontiguousarray(got.lengths)
        if got is not None and got.n:
            self.counters.rx_frames += got.n
            self.counters.rx_bytes += int(got.lengths.sum())
            self.counters.rx_batches += 1
            if self.tap is not None:
                self.tap.offer(got.base, got.offsets, got.lengths, got.n)
        return got

    def release(self) -> None:
        if self._nic is not None:
            self._nic.release()

    def transmit(self, frames: Sequence[Buffer]) -> int:
        """Copy frames onto the tx ring; returns how many were queued (the rest dropped).

        The frames are packed and queued in one C call (``XskNic.transmit``) without
        waking the kernel: the engine ``kick``s once per round. The ring fills when a
        burst outruns copy mode (each wake-up moves the kernel's ``TX_BATCH_SIZE``, 32);
        the C side then wakes the kernel itself, and the remainder is offered again a
        bounded number of times before it counts as dropped (a dropped segment costs a
        retransmission).
        """
        nic = self._engine_nic()
        total, n = 0, len(frames)
        for _ in range(TX_ATTEMPTS):
            total += nic.transmit(frames[total:] if total else frames)
            if total >= n:
                break
        self.tx_dropped += n - total
        if self.tap is not None:
            self.tap.offer_frames(frames[:total])
        return total

    def kick(self, offload: bool = True) -> None:
        """Wake the kernel once for everything queued this round (copy mode sends in
        the ``sendto``): the engine calls this at the end of each transmit step."""
        if self._nic is not None:
            self._nic.kick(offload)

    def statistics(self) -> dict[str, int]:
        out = {
            "rx_frames": self.counters.rx_frames,
            "rx_bytes": self.counters.rx_bytes,
            "rx_batches": self.counters.rx_batches,
            "rx_unclaimed": self.counters.rx_unclaimed,
            "sink_errors": self.counters.sink_errors,
            "tx_dropped": self.tx_dropped,
        }
        out.update({f"xsk_{k}": int(v) for k, v in self._sock.statistics().items()})
        return out

    def close(self) -> None:
        self.release()
        self._sock.close()


# "0": no transmit thread; every kick, and epoll's poll of the socket (which in copy mode
# transmits too), runs in the loop's thread. Measured on veth (README, "Latest
# results"): it spares the two threads' contention for the socket's transmit mutex
# (7% of the service's samples under a connection-rate load), which helps
# request/response loads (redis GET 0.98x against 0.91x) and costs a bulk sender
# whose receiver is slow (a Python sink, one flow: 0.76x against 1.04x).
TX_THREAD_ENV: Final = "JOYRIDE_TX_THREAD"

SocketFactory = Callable[[str, int, str], QueueSocket]
