"""What moves an in-process engine: the asyncio loop, or a background thread.

``AsyncioDriver`` runs the engine in the event loop's thread, the lowest-latency
arrangement (no thread hop between a frame arriving and the protocol callback):

* the AF_XDP descriptors are loop readers while idle, so an idle server sleeps in
  the loop's ``epoll_wait`` and burns no CPU;
* once frames flow it *spins*: after a round that did something it re-schedules
  itself with ``call_soon`` for ``spin`` seconds, so the loop keeps polling with a zero
  timeout (other callbacks — the application's coroutines — still run between rounds)
  and a reply or the next request is picked up without a wakeup. The wakeup of an
  idle vCPU is what dominates latency on this kind of machine (DESIGN.md). While it
  spins the descriptors are not loop readers: every round reads the rings anyway, and
  an ``epoll_wait`` that reports an AF_XDP socket polls it, which in copy mode makes
  the kernel transmit what is queued (``xsk_poll`` drives tx) in this thread, work
  the socket's tx thread exists to take off it;
* the engine's next timer deadline is one ``loop.call_at``;
* a write from the loop thread outside a poll (a task's ``transport.write``) leaves
  in the same loop iteration: while spinning, by the spin round already queued behind
  the tasks the last poll woke (so the writes of one iteration share one transmit
  batch and one NIC kick); from idle, at once, and it starts a spin since the peer's
  answer is expected soon. Writes made by callbacks during a poll leave in that
  poll's single transmit batch.

``ThreadDriver`` serves the blocking socket API: a daemon thread that waits on the
AF_XDP descriptors and a wakeup pipe with the engine deadline as timeout. It does not
spin: a spinning Python thread holds the GIL the application threads need. Writes
are flushed in the caller's thread at once (the stack lock makes that safe), and the
pipe is written only when the caller armed a timer earlier than the driver's sleep.
"""

from __future__ import annotations

import asyncio as _asyncio
import contextlib
import math
import os
import selectors
import threading
from typing import Final

from joyride.embed.stack import Stack

DEFAULT_SPIN: Final = 0.0002  # seconds of busy polling after the last activity
MIN_SLEEP: Final = 0.0002  # a deadline already passed is retried this much later
MAX_SLEEP: Final = 0.5  # bound on a thread driver's wait (stop requests, watchdogs)
MEMORY_POLL: Final = 0.0005  # poll period for a NIC without a descriptor (unit tests)


def nic_fds(nic: object) -> list[int]:
    """Every descriptor that polls readable when the NIC has frames (may be none)."""
    filenos = getattr(nic, "filenos", None)
    if callable(filenos):
        return [int(fd) for fd in filenos()]
    fileno = getattr(nic, "fileno", None)
    fd = fileno() if callable(fileno) else None
    return [] if fd is None else [int(fd)]


class AsyncioDriver:
    """Drive ``stack`` from ``loop`` (call from the loop's thread)."""

    def __init__(self, stack: Stack, loop: _asyncio.AbstractEventLoop, *,
                 spin: float = DEFAULT_SPIN) -> None:
        self.stack = stack
        self.loop = loop
        self.spin = spin
        self.thread_id = threading.get_ident()
        self.fds = nic_fds(stack.engine.nic)
        self._timer: _asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._spin_until = 0.0
        self._spin_pending = False
        self._stopped = False
        self._watching = False
        self._watch(True)
        self._arm()

    def _watch(self, on: bool) -> None:
        """Make the NIC's descriptors loop readers (idle) or not (spinning)."""
        if on == self._watching:
            return
        self._watching = on
        for fd in self.fds:
            if on:
                self.loop.add_reader(fd, self._on_readable)
            else:
                self.loop.remove_reader(fd)

    @property
    def alive(self) -> bool:
        return not self._stopped and not self.loop.is_closed()

    def _round(self) -> None:
        if self._stopped:
            return
        stack = self.stack
        try:
            # What the tasks wrote since the last round (and that round's ACKs) leaves
            # first; the callbacks of this round wake tasks whose writes the next
            # round sends, so a spinning round does not transmit at its end.
            stack.flush()
            busy = stack.poll(transmit=False)
        except BaseException:
            # No spin round follows a failed one: frames must wake the loop again.
            self._watch(True)
            raise
        now = stack.clock()
        if busy:
            self._spin_until = now + self.spin
        if now < self._spin_until:
            if not self._spin_pending:
                self._spin_pending = True
                self.loop.call_soon(self._spin_round)
            self._watch(False)
        else:
            stack.flush()  # going idle: nothing may wait for a round that will not come
            self._watch(True)
        self._arm(now)

    def _on_readable(self) -> None:
        # While spinning, the queued spin round polls anyway; a round here as well
        # would flush connections whose tasks have not yet written their replies.
        if not self._spin_pending:
            self._round()

    def _spin_round(self) -> None:
        self._spin_pending = False
        self._round()

    def _arm(self, now: float | None = None) -> None:
        """Keep one loop timer at the engine's next deadline."""
        now = self.stack.clock() if now is None else now
        deadline = self.stack.next_deadline()
        target = math.inf if deadline is None else max(deadline, now + MIN_SLEEP)
        if not self.fds:
            target = min(target, now + MEMORY_POLL)
        if target >= self._timer_at - MIN_SLEEP / 2:
            return  # the timer already set fires first (then re-arms): good enough
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = target
        self._timer = self.loop.call_at(self.loop.time() + (target - now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, math.inf
        if not self._spin_pending:  # the queued spin round runs the timers (and re-arms)
            self._round()

    def kick(self) -> None:
        if self._stopped:
            self.stack.flush()
            return
        if threading.get_ident() != self.thread_id:
            self.loop.call_soon_threadsafe(self._flush)
            return
        if self._spin_pending:
            # Traffic flows: the spin round already queued in this loop iteration (it
            # runs after the tasks the last poll woke) polls and transmits, so every
            # write of this iteration leaves in one batch, one NIC kick.
            return
        # Idle until now (a task's first ``transport.write``): send at once, in this
        # loop iteration, and spin: the peer's answer is expected soon.
        self.stack.flush()
        now = self.stack.clock()
        self._spin_until = now + self.spin
        if not self._spin_pending:
            self._spin_pending = True
            self.loop.call_soon(self._spin_round)
        self._watch(False)
        self._arm(now)

    def _flush(self) -> None:
        if self._stopped:
            return
        self.stack.flush()
        self._arm()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
        if not self.loop.is_closed() and self._watching:
            self._watching = False
            for fd in self.fds:
                with contextlib.suppress(Exception):  # loop already torn down
                    self.loop.remove_reader(fd)


class ThreadDriver:
    """Drive ``stack`` from a daemon thread (see module doc)."""

    def __init__(self, stack: Stack, *, name: str = "joyride-engine") -> None:
        self.stack = stack
        self.fds = nic_fds(stack.engine.nic)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sleep_until = 0.0
        self._stopping = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()
        self.thread_id = self.thread.ident

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and not self._stopping.is_set()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        try:
            for fd in self.fds:
                sel.register(fd, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                self.stack.poll()
                now = self.stack.clock()
                deadline = self.stack.next_deadline()
                timeout = MAX_SLEEP if deadline is None else deadline - now
                if not self.fds:
                    timeout = min(timeout, MEMORY_POLL)
                timeout = min(max(timeout, MIN_SLEEP), MAX_SLEEP)
                self._sleep_until = now + timeout
                for key, _ in sel.select(timeout):
                    if key.fd == self._wake_r:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_r, 4096)
                self._sleep_until = 0.0
        except BaseException as exc:  # kept for diagnosis; waiters time out or see close
            self.error = exc
            raise
        finally:
            sel.close()

    def kick(self) -> None:
        # Transmit in the caller's thread: no hop, no wakeup on the common path.
        self.stack.flush()
        deadline = self.stack.next_deadline()
        if deadline is not None and deadline < self._sleep_until:
            self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wake()
        if threading.get_ident() != self.thread_id:
            self.thread.join(5)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def ensure_asyncio_driver(stack: Stack, loop: _asyncio.AbstractEventLoop, *,
                          spin: float = DEFAULT_SPIN) -> None:
    """Make ``loop`` drive ``stack`` unless a live driver already does.

    A live thread driver is kept (endpoints then hand callbacks to the loop); a driver
    whose loop has closed (an earlier ``asyncio.run``) is replaced.
    """
    with stack.lock:
        if stack.closed:
            raise RuntimeError("the Joyride stack is closed")
        driver = stack.driver
        if isinstance(driver, AsyncioDriver) and driver.loop is loop and driver.alive:
            return
        if isinstance(driver, ThreadDriver) and driver.alive:
            return
        if driver is not None:
            driver.stop()
        stack.driver = AsyncioDriver(stack, loop, spin=spin)


def ensure_thread_driver(stack: Stack) -> None:
    """Make sure something drives ``stack`` for blocking callers."""
    with stack.lock:
        if stack.closed:
            raise RuntimeError("the Joyride stack is closed")
        driver = stack.driver
        if isinstance(driver, ThreadDriver | AsyncioDriver) and driver.alive:
            return
        if driver is not None:
            driver.stop()
        stack.driver = ThreadDriver(stack)


def drives_here(stack: Stack) -> bool:
    """True when the calling thread is the one that polls ``stack``: a blocking wait
    here must poll itself or it would wait for itself."""
    driver = stack.driver
    return driver is not None and getattr(driver, "thread_id", None) == threading.get_ident()
