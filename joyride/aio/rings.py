"""``asyncio`` over shared-memory channels, for an embedding process's own connections.

In embedded mode on the C data plane (``joyride.embed``) the network service's data
path is a thread of this process. A ``joyride.asyncio`` server there registers its
listener claiming channels, and each accepted connection moves its bytes through the
rings of a ``joyride.dataplane.hub.Hub`` instead of the AF_UNIX socket: no system call
per read or write on either side. The socket stays the connection's descriptor for its
life and its end: the service shuts it down after the last received byte (EOF) and
closes it at a reset; closing it is how the application ends the connection.

Readiness comes from the hub's bell, one eventfd for all connections (``LoopBell``):
the data plane names a connection in the bell's queue when its receive ring gets bytes
the application has not been told of, and writes the eventfd only while the loop is
armed, which it is from the end of one dispatch of the queue to the start of the next.
A busy loop is then told of many connections by one eventfd write and one read.

``RingTransport`` behaves as the standard library's selector transports do (flow
control with ``pause_reading`` and the write buffer's limits, ``write_eof``, ``close``
after the buffered bytes, ``abort``, ``connection_lost``), so ``StreamReader``/
``StreamWriter`` and hand-written protocols work unchanged. A connection the service
refuses a channel (no slot free) runs the same transport over its socket, as a stream.
"""

from __future__ import annotations

import asyncio as _asyncio
import contextlib
import errno
import functools
import logging
import os
import socket as _socket
from collections.abc import Callable
from typing import Any, Final

from joyride.aio.server import ServerBase
from joyride.aio.transport import write_buffer_limits
from joyride.dataplane.hub import Hub
from joyride.dataplane.plane import ffi

log = logging.getLogger("joyride.aio.rings")

READ_CHUNK: Final = 256 * 1024  # bytes handed to data_received at most per call
READS_PER_TURN: Final = 4  # READ_CHUNKs a connection reads before others get a turn
DISPATCH_ROUNDS: Final = 8  # bell batches one dispatch takes before yielding the loop
ACCEPTS_PER_TURN: Final = 64
# A pending claim looks at its slot this often too: a service that is not this process's
# (another interface's) refuses a bell claim in the slot without ringing (chan_claim.h).
VERDICT_LOOK: Final = 0.01
# ... and gives up after this long (the service always answers a claim it reads; one it
# never reads is a connection it closed).
VERDICT_GIVE_UP: Final = 5.0
LOG_WRITES_AFTER_LOSS: Final = 5  # asyncio's constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES

PENDING, RING, STREAM = "pending", "ring", "stream"


class LoopBell:
    """A hub's bell, heard in one event loop: it hands the slots the data plane names
    to their transports (module doc)."""

    def __init__(self, hub: Hub, loop: _asyncio.AbstractEventLoop) -> None:
        self.hub = hub
        self.loop = loop
        self.transports: dict[int, RingTransport] = {}
        self.read_buf = ffi.new("uint8_t[]", READ_CHUNK)  # one loop thread: shared
        self.read_view = ffi.buffer(self.read_buf)
        self.rescan = False
        loop.add_reader(hub.efd, self.dispatch)
        hub.watched = True
        if self.hub.arm():
            loop.call_soon(self.dispatch)

    def dispatch(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.hub.efd, 8)
        done = False
        try:
            for _ in range(DISPATCH_ROUNDS):
                slots = self.hub.take()
                if self.hub.lost() or self.rescan:  # the queue overflowed, or a batch was
                    self.rescan = False  # cut short: look at every connection
                    slots.extend(self.transports)
                for slot in slots:
                    transport = self.transports.get(slot)
                    if transport is not None:
                        transport.rung()
                if not self.hub.arm():
                    done = True
                    return
        finally:
            if not done:  # more, or an exception out of a protocol: after the loop's
                self.rescan = True  # other work (the taken slots' rest included)
                self.loop.call_soon(self.dispatch)

    def forget(self) -> None:
        """The loop is gone (closed without closing these connections): end them."""
        for transport in list(self.transports.values()):
            transport.drop()
        self.transports.clear()
        self.hub.unwatch()


_bells: dict[int, LoopBell] = {}  # id(hub) -> its bell, in the loop that last claimed it


def bell_for(hub: Hub, loop: _asyncio.AbstractEventLoop) -> LoopBell | None:
    """``hub``'s bell in ``loop``, or None when another running loop has it (a hub
    serves one loop at a time; the other loop's servers get streams)."""
    bell = _bells.get(id(hub))
    if bell is not None and bell.loop is loop:
        return bell
    if bell is not None:
        if not bell.loop.is_closed():
            return None
        bell.forget()
    if hub.closed:
        return None
    bell = _bells[id(hub)] = LoopBell(hub, loop)
    hub.on_close = functools.partial(release_bell, hub)
    return bell


def release_bell(hub: Hub) -> None:
    """The hub closes (embedding ends): stop hearing its eventfd. A loop still running
    in another thread keeps it (and the hub its memory) until the process ends."""
    bell = _bells.pop(id(hub), None)
    if bell is None:
        return
    if bell.loop.is_closed():
        hub.unwatch()
    elif not bell.loop.is_running() or _asyncio._get_running_loop() is bell.loop:
        bell.loop.remove_reader(hub.efd)
        hub.unwatch()


class RingTransport(_asyncio.Transport):
    """A stream transport over one connection's channel, or its socket (module doc)."""

    def __init__(self, bell: LoopBell, sock: _socket.socket, slot: int,
                 protocol: _asyncio.BaseProtocol, peer: Any, server: RingServer | None
                 ) -> None:
        try:
            sockname = sock.getsockname()
        except OSError:
            sockname = None
        super().__init__({"peername": peer, "sockname": sockname, "socket": sock})
        self._bell = bell
        self._hub = bell.hub
        self._loop = bell.loop
        self._sock = sock
        self._fd = sock.fileno()
        self._slot = slot
        self._mode = PENDING if slot >= 0 else STREAM
        self._protocol = protocol
        self._server = server
        self._pending = bytearray()  # written, not yet in the ring (or the socket)
        self._high, self._low = write_buffer_limits(None, None)
        self._protocol_paused = False
        self._reading_paused = False
        self._unread = False  # the bell rang while reading was paused
        self._watching_socket = False
        self._writer_added = False
        self._closing = False
        self._eof_requested = False
        self._eof_seen = False
        self._lost = False
        self._writes_after_loss = 0
        if server is not None:
            server._attach()

    def start(self) -> None:
        self._protocol.connection_made(self)
        self._watch_socket(True)
        if self._slot >= 0:
            self._bell.transports[self._slot] = self
            self.rung()  # the verdict may be in already
            if self._mode == PENDING:
                self._loop.call_later(VERDICT_LOOK, self._look_for_verdict,
                                      self._loop.time() + VERDICT_GIVE_UP)

    def _look_for_verdict(self, give_up: float) -> None:
        if self._mode != PENDING or self._lost:
            return
        self.rung()
        if self._mode != PENDING:
            return
        if self._loop.time() < give_up:
            self._loop.call_later(VERDICT_LOOK, self._look_for_verdict, give_up)
        else:
            self._fatal(ConnectionResetError(errno.ECONNRESET, "joyride: the service "
                                             "never answered the channel's claim"))

    # -- readiness -------------------------------------------------------------------------

    def rung(self) -> None:
        """The bell named this connection: its verdict came, or rx has bytes."""
        if self._lost:
            return
        if self._mode == PENDING:
            verdict = self._hub.verdict(self._slot)
            if verdict == -errno.EAGAIN:
                return
            if verdict == 1:
                self._mode = RING
            else:  # refused: the socket carries the bytes
                self._mode = STREAM
                self._give_slot_back()
                if self._reading_paused:
                    self._watch_socket(False)
            self._flush()  # writes that waited for the verdict, and a close behind them
        if self._mode == RING:
            self._read_ring()

    def _watch_socket(self, on: bool) -> None:
        if on and not self._watching_socket and not self._eof_seen:
            self._loop.add_reader(self._fd, self._socket_readable)
            self._watching_socket = True
        elif not on and self._watching_socket:
            self._loop.remove_reader(self._fd)
            self._watching_socket = False

    def _socket_readable(self) -> None:
        """Stream mode: bytes. Ring mode: the service's end shut (EOF) or closed."""
        if self._closing or self._reading_paused:
            # Nothing is read now (resume_reading watches again); the verdict a closing
            # transport waits for comes by the bell.
            self._watch_socket(False)
            self._unread = self._mode == RING
            return
        if self._mode == PENDING:
            self.rung()
            if self._mode == PENDING:
                # Bytes or the end, and no verdict: the service took the claim for
                # payload (it answers it later, refused) or closed before reading it.
                # The slot waits for that answer (Hub.done); the bytes are a stream.
                self._give_slot_back()
                self._mode = STREAM
                self._flush()
        if self._mode == STREAM:
            self._read_stream()
            return
        # Ring mode: everything rx holds first (the EOF, if any, comes after it).
        if not self._read_ring(to_end=True):
            return
        try:
            peeked = self._sock.recv(1, _socket.MSG_PEEK | _socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal(exc)
            return
        if peeked:
            # The service sends nothing on a ring-mode socket: read it away, or the
            # loop would find the socket readable for ever.
            with contextlib.suppress(OSError):
                self._sock.recv(4096)
            return
        self._watch_socket(False)  # the service's end closed with no EOF in the ring
        self._fatal(ConnectionResetError(errno.ECONNRESET, os.strerror(errno.ECONNRESET)))

    # -- reading ---------------------------------------------------------------------------

    def _read_ring(self, to_end: bool = False) -> bool:
        """Hand rx's bytes to the protocol: a turn's worth, or (``to_end``) until rx
        is empty. True when rx was found empty with no EOF (and the transport reads on)."""
        if self._reading_paused or self._closing:
            self._unread = True
            return False
        view = self._bell.read_view
        turns = 0
        while to_end or turns < READS_PER_TURN:
            turns += 1
            n = self._hub.read_into(self._slot, self._bell.read_buf, READ_CHUNK)
            if n > 0:
                self._deliver(view[:n])
                if self._reading_paused or self._lost or self._closing:
                    self._unread = True
                    return False
                if n < READ_CHUNK and not to_end:
                    return True  # jr_chan_read stopped short: rx is empty and armed
            elif n == 0:
                self._eof()
                return False
            elif n == -errno.EAGAIN:
                return True
            else:
                self._fatal(OSError(-n, os.strerror(-n)))
                return False
        self._loop.call_soon(self.rung)  # more than a turn's worth: after the others
        return False

    def _read_stream(self) -> None:
        if self._reading_paused or self._closing:
            self._watch_socket(False)
            return
        try:
            data = self._sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal(exc)
            return
        if data:
            self._deliver(data)
        else:
            self._eof()

    def _deliver(self, data: Any) -> None:
        protocol = self._protocol
        try:
            if isinstance(protocol, _asyncio.BufferedProtocol):
                _feed_buffered(protocol, data)
            else:
                protocol.data_received(bytes(data))  # type: ignore[attr-defined]
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal(exc, "protocol.data_received() call failed.")

    def _eof(self) -> None:
        if self._eof_seen:
            return
        self._eof_seen = True
        self._watch_socket(False)
        try:
            keep_open = self._protocol.eof_received()  # type: ignore[attr-defined]
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal(exc, "protocol.eof_received() call failed.")
            return
        if not keep_open:
            self.close()

    def is_reading(self) -> bool:
        return not self._reading_paused and not self._closing and not self._lost

    def pause_reading(self) -> None:
        if self._reading_paused or self._closing:
            return
        self._reading_paused = True
        if self._mode == STREAM:
            self._watch_socket(False)

    def resume_reading(self) -> None:
        if not self._reading_paused or self._closing:
            return
        self._reading_paused = False
        self._watch_socket(True)
        if self._mode == RING:
            self._unread = False
            self._loop.call_soon(self.rung)  # what waited in rx (its window reopens)

    # -- writing ---------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, "
                            f"not {type(data).__name__!r}")
        if self._eof_requested:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data:
            return
        # Lost: dropped and counted, as asyncio's transports do. (After close() with bytes
        # still buffered, a write queues behind them, as there.)
        if self._lost:
            if self._writes_after_loss >= LOG_WRITES_AFTER_LOSS:
                log.warning("socket.send() raised exception.")
            self._writes_after_loss += 1
            return
        if not self._pending and self._mode != PENDING:
            taken = self._send(data)
            if taken < 0:
                return
            if taken == len(data):
                return
            data = memoryview(data)[taken:]
        self._pending += data
        self._want_writable()
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def _send(self, data: Any) -> int:
        """Bytes taken now (the ring's tx, or the socket's buffer); -1 after a failure."""
        if self._mode == RING:
            n = self._hub.write(self._slot, data)
            if n >= 0:
                return n
            if n == -errno.EAGAIN:
                return 0
            self._fatal(OSError(-n, os.strerror(-n)))
            return -1
        try:
            return self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self._fatal(exc)
            return -1

    def _want_writable(self) -> None:
        # In ring mode a full tx left the socket filled and armed (chan.h's writer): it
        # turns writable when the service makes room, as a stream's does.
        if not self._writer_added and self._mode != PENDING:
            self._loop.add_writer(self._fd, self._flush)
            self._writer_added = True

    def _flush(self) -> None:
        if self._lost:
            return
        if self._pending:
            taken = self._send(self._pending)
            if taken < 0:
                return
            del self._pending[:taken]
        if self._pending:
            self._want_writable()
            self._maybe_resume_protocol()
            return
        if self._writer_added:
            self._loop.remove_writer(self._fd)
            self._writer_added = False
        self._maybe_resume_protocol()
        if self._eof_requested:
            self._shutdown_write()
        if self._closing:
            self._lose(None)

    def _shutdown_write(self) -> None:
        if self._mode == RING:
            self._hub.shutdown(self._slot)
            return
        with contextlib.suppress(OSError):
            self._sock.shutdown(_socket.SHUT_WR)

    def write_eof(self) -> None:
        if self._eof_requested or self._closing:
            return
        self._eof_requested = True
        if not self._pending and self._mode != PENDING:
            self._shutdown_write()

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return len(self._pending)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high, self._low = write_buffer_limits(high, low)
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if len(self._pending) > self._high and not self._protocol_paused:
            self._set_protocol_paused(True)

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and len(self._pending) <= self._low:
            self._set_protocol_paused(False)

    def _set_protocol_paused(self, paused: bool) -> None:
        """Tell the protocol to pause or resume writing; its failure is the loop's
        exception handler's, as asyncio's transports do."""
        self._protocol_paused = paused
        name = "pause_writing" if paused else "resume_writing"
        try:
            getattr(self._protocol, name)()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({
                "message": f"protocol.{name}() failed", "exception": exc,
                "transport": self, "protocol": self._protocol})

    # -- closing ---------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def close(self) -> None:
        """Send what is buffered, then end the connection (the service sends a FIN
        after the bytes the ring holds)."""
        if self._closing or self._lost:
            return
        self._closing = True
        self._watch_socket(False)
        if not self._pending:
            self._lose(None)
        # else: after the buffered bytes (_flush; a pending claim's after its verdict)

    def abort(self) -> None:
        if self._lost:
            return
        self._pending.clear()
        self._lose(None)

    def _fatal(self, exc: BaseException, message: str = "Fatal error on transport") -> None:
        if not isinstance(exc, OSError):
            self._loop.call_exception_handler({
                "message": message, "exception": exc, "transport": self,
                "protocol": self._protocol})
        self._pending.clear()
        self._lose(exc if isinstance(exc, Exception) else None)

    def _lose(self, exc: Exception | None) -> None:
        """End the connection now and tell the protocol next (as asyncio does)."""
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._watch_socket(False)
        if self._writer_added:
            self._loop.remove_writer(self._fd)
            self._writer_added = False
        self._give_slot_back()  # before the close: no channel step uses the socket after
        self._loop.call_soon(self._connection_lost, exc)

    def _give_slot_back(self) -> None:
        if self._slot >= 0:
            self._bell.transports.pop(self._slot, None)
            self._hub.done(self._slot)  # reused once the service answered and let go
            self._slot = -1

    def _connection_lost(self, exc: Exception | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()  # the service sees the hang-up: FIN after tx's bytes
            if self._server is not None:
                self._server._detach()
                self._server = None

    def drop(self) -> None:
        """The loop is gone: release the slot and the socket, telling no one."""
        if not self._lost:
            self._lost = True
            self._give_slot_back()
            self._sock.close()

    # -- protocol swapping -----------------------------------------------------------------

    def set_protocol(self, protocol: _asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> _asyncio.BaseProtocol:
        return self._protocol

    def __repr__(self) -> str:
        return f"<RingTransport {self.get_extra_info('peername')} {self._mode}>"


def _feed_buffered(protocol: _asyncio.BufferedProtocol, data: Any) -> None:
    """Hand ``data`` to a ``BufferedProtocol`` through its own buffers."""
    view = memoryview(data)
    while view:
        buf = memoryview(protocol.get_buffer(len(view)))
        n = min(len(buf), len(view))
        if n == 0:
            raise RuntimeError("get_buffer() returned an empty buffer")
        buf[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]


class RingServer(ServerBase):
    """A service listener whose connections each claim a channel of ``bell``'s hub."""

    def __init__(self, bell: LoopBell, lsock: Any,
                 protocol_factory: Callable[[], _asyncio.BaseProtocol], *,
                 start_serving: bool = True) -> None:
        super().__init__(bell.loop)
        self._bell = bell
        self._lsock: Any = lsock
        self._factory = protocol_factory
        self._listening = False
        lsock.setblocking(False)
        if start_serving:
            self._start()

    def _start(self) -> None:
        if not self._listening and not self._closed:
            self._loop.add_reader(self._lsock.fileno(), self._accept_ready)
            self._listening = True

    def _stop_listening(self) -> None:
        if self._lsock is None:
            return
        if self._listening:
            self._loop.remove_reader(self._lsock.fileno())
            self._listening = False
        self._lsock.close()
        self._lsock = None

    def _accept_ready(self) -> None:
        for _ in range(ACCEPTS_PER_TURN):
            if self._lsock is None:
                return
            try:
                conn, peer = self._lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: asyncio logs and goes on
                self._loop.call_exception_handler({
                    "message": "socket.accept() out of system resource", "exception": exc,
                    "socket": self._lsock})
                return
            conn.setblocking(False)
            self.accepted += 1
            slot = self._bell.hub.claim(conn.fileno())
            if slot < 0 and slot != -errno.ENOSPC:  # the claim was not sent: a stream
                log.debug("joyride: claiming a channel failed: %s", os.strerror(-slot))
            try:
                protocol = self._factory()
            except Exception as exc:
                if slot >= 0:
                    self._bell.hub.done(slot)
                conn.close()
                self._loop.call_exception_handler({
                    "message": "protocol factory failed", "exception": exc})
                continue
            RingTransport(self._bell, conn, max(slot, -1), protocol, peer, self).start()

    def is_serving(self) -> bool:
        return self._listening

    @property
    def sockets(self) -> tuple[Any, ...]:
        return () if self._lsock is None else (self._lsock,)

    def __repr__(self) -> str:
        return f"<RingServer {self.sockets} serving={self.is_serving()}>"
