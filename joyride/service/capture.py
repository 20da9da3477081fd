"""``joyride capture``'s service side: one capture at a time, streamed to its client.

The client asks on the control socket (``{"op": "capture", "snaplen": N, "filter":
[[code, jt, jf, k], ...]}``, root or the service's uid only: frames carry every user's
data) and keeps the connection. The service answers one JSON line, then frames:
``FRAME`` (length, kind) and a payload, ``RECORDS`` (pcap records, whole) until the
client sends ``stop`` or goes away, then one ``SUMMARY`` (JSON: the tap's counters).

The tap is the C data plane's (``capture.h``): it sees every frame received and every
frame sent, the Python engine's included (they leave through the plane's queue), and
never blocks: what the ring cannot hold is dropped and counted. Without the C data
plane (``JOYRIDE_DATAPLANE=python``) the queues' sockets offer the engine's frames to
the same tap. The service loop
drains the ring into the socket without blocking either; while the client lags, the
ring fills and drops, and the data path goes on.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import struct
from collections.abc import Callable
from typing import Any, Final

from joyride.dataplane.tap import Tap, Taps

Attach = Callable[[Tap | Taps | None], None]  # points the frames' path at a tap (None: off)

FRAME: Final = struct.Struct("<IB")  # payload length, kind
RECORDS: Final = 0
SUMMARY: Final = 1
POLL: Final = 0.01  # seconds between drains at most, while a capture runs
MAX_SNAPLEN: Final = 262144


class CaptureSession:
    def __init__(self, conn: socket.socket, tap: Tap | Taps, attach: Attach,
                 sel: selectors.BaseSelector) -> None:
        self.conn = conn
        self.tap = tap
        self.attach = attach
        self.sel = sel
        self.pending = memoryview(b"")
        self.stopping = False
        self.closed = False
        self.mask = selectors.EVENT_READ
        conn.setblocking(False)
        sel.register(conn, self.mask, self._on_event)
        attach(tap)

    def stats(self) -> dict[str, Any]:
        return {**self.tap.stats(), "pending": self.tap.pending}

    def _on_event(self, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            try:
                got = self.conn.recv(64)
            except BlockingIOError:
                got = b"stop"
            except OSError:
                got = b""
            if not got:
                self.close()  # the client went away: nobody to send the rest to
                return
            self._stop()
        self.pump()

    def _stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.attach(None)  # what the ring holds still goes out

    def pump(self) -> None:
        """Send what the ring holds, as far as the socket takes it now."""
        while not self.closed:
            if self.pending:
                try:
                    sent = self.conn.send(self.pending)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    self.close()
                    return
                self.pending = self.pending[sent:]
                if self.pending:
                    self._want(selectors.EVENT_READ | selectors.EVENT_WRITE)
                    return
            data = self.tap.read()
            if data:
                self.pending = memoryview(FRAME.pack(len(data), RECORDS) + data)
            elif self.stopping:
                if self.tap.pending == 0 and not self.pending:
                    summary = json.dumps(self.tap.stats()).encode()
                    with contextlib.suppress(OSError):
                        self.conn.setblocking(True)
                        self.conn.settimeout(1.0)
                        self.conn.sendall(FRAME.pack(len(summary), SUMMARY) + summary)
                    self.close()
                return
            else:
                self._want(selectors.EVENT_READ)
                return

    def _want(self, mask: int) -> None:
        if mask != self.mask and not self.closed:
            self.sel.modify(self.conn, mask, self._on_event)
            self.mask = mask

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.attach(None)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(self.conn)
        self.conn.close()


def tap_for(request: dict[str, Any], copies: int = 1) -> Tap | Taps:
    """The tap a capture request asks for (ValueError: a bad snap length or filter):
    ``copies`` taps, one per data-plane worker, when there are several."""
    snaplen = int(request.get("snaplen") or MAX_SNAPLEN)
    if not 0 < snaplen <= MAX_SNAPLEN:
        raise ValueError(f"snap length {snaplen}: expected 1..{MAX_SNAPLEN}")
    raw = request.get("filter") or []
    program = [(int(c), int(jt), int(jf), int(k)) for c, jt, jf, k in raw]
    if copies > 1:
        return Taps(copies, snaplen=snaplen, program=program or None)
    return Tap(snaplen=snaplen, program=program or None)
