"""One engine shared by every Python-facing endpoint of a process.

``Stack`` wraps an ``Engine`` (the same TCP core and engine the network service runs)
with the three things an in-process front end needs and the engine deliberately has
not:

* a lock, so the blocking socket API may call in from any thread while a driver (the
  asyncio loop or a background thread) polls; it is re-entrant because endpoint
  callbacks run during a poll and may write straight back (``transport.write`` inside
  ``data_received``);
* a table of endpoint callbacks: after each poll every connection and listener the
  poll touched gets its callback, so endpoints learn about data, EOF, resets and new
  connections without scanning;
* a seam for the driver: ``touch`` tells the driver that the application queued work
  outside a poll, and the driver decides when to flush (at once, or once per event
  loop iteration).

Nothing here reads packets or knows about sockets or asyncio: drivers live in
``joyride.embed.drivers``, endpoints in ``joyride.socket`` and ``joyride.aio``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from joyride.engine import Engine
from joyride.engine.engine import IPV4_ONLY
from joyride.tcp.config import TcpConfig
from joyride.tcp.connection import TcpConnection
from joyride.tcp.listener import Listener
from joyride.tcp.state import TcpState

log = logging.getLogger(__name__)

Callback = Callable[[], None]


class Driver(Protocol):
    """What moves the engine: polls it when frames or timers are due."""

    def kick(self) -> None:
        """The application queued work (data, a close) outside a poll: flush soon."""
        ...

    def stop(self) -> None: ...


class Stack:
    """An engine plus the bookkeeping in-process endpoints share (see module doc)."""

    def __init__(self, engine: Engine, *, ports: frozenset[int] = frozenset()) -> None:
        self.engine = engine
        #: Listening ports steered to this stack (others belong to the kernel).
        self.ports = ports
        self.lock = threading.RLock()
        self.driver: Driver | None = None
        self.closed = False
        self.counters: dict[str, int] = {"polls": 0, "busy_polls": 0, "callback_errors": 0}
        #: True while a poll runs endpoint callbacks: what they mark is flushed at the
        #: end of that poll, no driver kick needed.
        self.in_poll = False
        self._conn_cb: dict[TcpConnection, Callback] = {}
        self._listener_cb: dict[Listener, Callback] = {}

    # -- endpoints -------------------------------------------------------------------------

    def listen(self, port: int, on_activity: Callback, config: TcpConfig | None = None
               ) -> Listener:
        """Listen on ``port`` for IPv4 connections (the Python data plane's embedded
        sockets are ``AF_INET``); ``config`` (else the engine's) for its connections."""
        with self.lock:
            listener = self.engine.listen(port, config=config, families=IPV4_ONLY)
            self._listener_cb[listener] = on_activity
            return listener

    def unlisten(self, listener: Listener) -> None:
        with self.lock:
            self._listener_cb.pop(listener, None)
            if self.engine.listeners.get(listener.local_port) is listener:
                self.engine.unlisten(listener)

    def accept(self, listener: Listener, on_activity: Callback | None = None
               ) -> TcpConnection | None:
        """Take an established connection off ``listener`` (and watch it, given a
        callback; ``watch`` sets one later)."""
        with self.lock:
            conn = self.engine.accept(listener)
            if conn is not None and on_activity is not None:
                self._conn_cb[conn] = on_activity
            return conn

    def watch(self, conn: TcpConnection, on_activity: Callback) -> None:
        with self.lock:
            if conn.state is not TcpState.CLOSED:
                self._conn_cb[conn] = on_activity

    def connect(self, remote_ip: bytes, remote_port: int, on_activity: Callback,
                config: TcpConfig | None = None) -> TcpConnection:
        with self.lock:
            conn = self.engine.connect(remote_ip, remote_port, config=config)
            self._conn_cb[conn] = on_activity
            # The SYN may wait for ARP and needs its retransmission timer: the driver
            # must learn of the new deadline.
            self.touch(conn)
            return conn

    def forget(self, conn: TcpConnection) -> None:
        """Stop calling back for ``conn`` (its endpoint is gone); the engine keeps it
        until the TCP state machine reaches CLOSED (FIN exchange, TIME-WAIT)."""
        with self.lock:
            self._conn_cb.pop(conn, None)

    def touch(self, conn: TcpConnection) -> None:
        """The application used ``conn`` (send, recv, close): transmit soon."""
        with self.lock:
            self.engine.mark(conn)
            if self.in_poll:
                return
            driver = self.driver
        if driver is not None:
            driver.kick()
        else:
            self.flush()

    def touch_read(self, conn: TcpConnection) -> None:
        """The application read from ``conn`` (lock held): a window update may be due.

        Inside a poll, the connections the engine gave news to are marked for this
        round's transmit already (one just accepted is not)."""
        if not (self.in_poll and self.engine.marked(conn)):
            self.touch(conn)

    def flush(self) -> None:
        with self.lock:
            if not self.closed:
                self.engine.flush()

    # -- the poll --------------------------------------------------------------------------

    def poll(self, *, transmit: bool = True) -> bool:
        """One engine round plus the callbacks it calls for; True if anything happened.

        Callbacks run with the lock held; one that raises is counted and the others
        still run: an application bug must not stall every other connection.

        ``transmit=False`` leaves the round's transmit to the caller's next ``flush``:
        a driver that polls again within the same event-loop iteration lets the tasks
        these callbacks woke write first, so each connection's ACK and reply leave in
        one segment and the connection is visited once per request, not twice.
        """
        with self.lock:
            if self.closed:
                return False
            # Transmit once, after the callbacks: their replies, the ACKs for what
            # arrived and the timers' segments leave in one batch (one NIC kick).
            activity = self.engine.poll(transmit=False)
            self.counters["polls"] += 1
            busy = bool(activity.connections or activity.listeners)
            if not busy:
                if transmit:
                    self.engine.flush()
                return False
            self.counters["busy_polls"] += 1
            self.in_poll = True
            try:
                for listener in list(activity.listeners):
                    self._call(self._listener_cb.get(listener))
                for conn in list(activity.connections):
                    self._call(self._conn_cb.get(conn))
                    if conn.state is TcpState.CLOSED:
                        # The engine has forgotten it: no segment can reach it any more.
                        self._conn_cb.pop(conn, None)
            finally:
                self.in_poll = False
            # Callbacks queued replies (echo, HTTP response): send them in this round.
            if transmit:
                self.engine.flush()
            return True

    def _call(self, callback: Callback | None) -> None:
        if callback is None:
            return
        try:
            callback()
        except Exception:
            self.counters["callback_errors"] += 1
            log.exception("joyride endpoint callback failed")

    def next_deadline(self) -> float | None:
        with self.lock:
            return None if self.closed else self.engine.next_deadline()

    def clock(self) -> float:
        return self.engine.clock()

    # -- teardown --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the driver, reset every connection (the peers learn at once)."""
        driver, self.driver = self.driver, None
        if driver is not None:
            driver.stop()
        with self.lock:
            if self.closed:
                return
            self.closed = True
            callbacks = [*self._conn_cb.values(), *self._listener_cb.values()]
            self.engine.close()
            self._conn_cb.clear()
            self._listener_cb.clear()
            # Wake every waiter so blocking calls see the reset instead of hanging.
            for callback in callbacks:
                self._call(callback)
