"""One connection's pump: bytes between the application's socket and a TcpConnection.

The service holds one end of a unix stream socket, the application the other. Both
directions are flow controlled by what each side accepts, and nothing is queued in
between beyond one chunk per direction, so memory per connection is bounded by the
TCP buffers (``TcpConfig``) plus the unix socket buffers plus ``2 * CHUNK``:

* application → network: read from the socket only while the TCP send buffer takes
  it; a slow network fills the send buffer, reading stops, the socket buffer fills and
  the application's ``write`` blocks (or returns EAGAIN);
* network → application: take from the TCP receive buffer only what the socket
  accepts; a slow reader leaves bytes in the receive buffer, whose advertised window
  then shrinks to zero (RFC 9293 §3.8.6.2.2), throttling the peer.

EOF maps to FIN both ways (the application's ``shutdown(SHUT_WR)``/``close`` → FIN;
the peer's FIN → ``shutdown(SHUT_WR)`` on our end → the application reads EOF). A
write to a closed application end (EPIPE) means it closed the connection entirely:
the TCP connection is closed, as Linux closes a socket (a RST if data was unread).

An application that claims ring mode (docs/channels.md) moves the bytes through a
shared-memory channel instead, and the socket carries only readiness. The C data plane
keeps every channel; a pump moves a ring-mode connection's bytes with the same steps
C's flows use (``DataPlane.chan_*``), so the protocol has one implementation.
"""

from __future__ import annotations

import contextlib
import errno
import select
import selectors
import socket
from typing import Final

from joyride.dataplane.plane import ChannelState, DataPlane
from joyride.tcp.connection import TcpConnection
from joyride.tcp.state import TcpState

CHUNK: Final = 64 * 1024  # bytes moved per syscall; also the application's holdover
BUDGET: Final = 16  # chunks per direction per ``service`` call: fairness between pumps
# The application's bytes cross the service in this buffer (``recv_into`` from its
# socket, ``send`` to TCP) with no allocation per chunk; only a remainder TCP refused
# is copied out. One for all pumps: the service loop is one thread and a chunk never
# outlives the call that read it. TCP's bytes go to the application straight from the
# receive buffer (``recv_view``), and what its socket refuses stays there.
_SCRATCH: Final = memoryview(bytearray(CHUNK))
REGION_AFTER: Final = CHUNK  # queued bytes from which app bytes go straight to TCP
_SENDING: Final = frozenset({TcpState.SYN_SENT, TcpState.SYN_RECEIVED, TcpState.ESTABLISHED,
                             TcpState.CLOSE_WAIT})
WAIT_ROOM: Final = 1  # chan.h JR_CHAN_WAIT_ROOM
WAIT_BYTES: Final = 2  # chan.h JR_CHAN_WAIT_BYTES


class Pump:
    """Moves bytes for one connection; ``service()`` does a bounded amount of work."""

    __slots__ = ("app_eof", "app_full", "app_gone", "app_hung", "channel", "conn",
                 "door_waits", "fin_sent_to_app", "mask", "pid", "plane", "region_reads",
                 "sock", "sock_replaced", "to_tcp", "uid")

    def __init__(self, conn: TcpConnection, sock: socket.socket, uid: int = -1,
                 pid: int = 0, *, plane: DataPlane | None = None,
                 channel: ChannelState | None = None) -> None:
        sock.setblocking(False)
        self.conn = conn
        self.sock = sock
        # The channel's mode; without the C data plane there is no channel (the service
        # then grants no claim: protocol.FLAG_CHANNELS).
        self.plane = plane
        self.channel = channel if channel is not None and plane is not None else ChannelState()
        self.uid = uid  # the application's (-1: unknown); it alone may set options
        self.pid = pid  # the process that listened or connected (0: unknown; joyride ss)
        # The application's socket refused bytes: wait until it is writable. What it
        # refused stays in TCP's receive buffer (recv_view/recv_taken), not here, so
        # a lagging reader's connection is idle for the C data plane all the same.
        self.app_full = False
        self.to_tcp: memoryview | None = None  # read from app, not yet accepted by TCP
        self.app_eof = False  # the application will write no more (FIN queued)
        self.app_gone = False  # the application's end is closed (EPIPE/ECONNRESET)
        self.fin_sent_to_app = False
        self.app_hung = False  # ring mode: the application's end of the socket is closed
        # Ring mode: asleep on the arena's door with the socket unwatched, while TCP
        # takes nothing from tx (_chan_idle); Datapath wakes it when the door rings.
        self.door_waits = False
        self.mask = 0  # events registered with the selector
        # The application's new socket took the old one's descriptor (a revert): the
        # selector's registration went with the old socket (Datapath._settle).
        self.sock_replaced = False
        self.region_reads = 0  # reads straight into the send buffer (no scratch copy)

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- moving bytes -----------------------------------------------------------------------

    def service(self, budget: int = BUDGET) -> bool:
        """Move what can move now (at most ``budget`` chunks each way).

        Returns True when a direction stopped because the budget ran out rather than
        because a buffer was full or empty: the caller must service the pump again
        without waiting for an event. Nothing else would wake it: the selector only
        watches for a full socket draining, and the peer may have nothing more to send
        (its FIN already arrived) while the receive buffer still holds data.
        """
        if not self.channel.chan:
            self.door_waits = False  # a stream now (a revert): its socket is watched
        if self.channel.claim_check and not self.app_gone:
            self._claim_check()  # first: what it decides (the mode) the rest follows
        more = self._to_app(budget)
        more = self._from_app(budget) or more
        if self.channel.chan and not self.app_gone and self._chan_revert():
            return True  # a stream now: serve it as one
        if self.channel.chan and not more and not self.app_gone:
            more = self._chan_idle()
        return more

    def _chan_revert(self) -> bool:
        """The application left ring mode (chan.h, ``JR_CHAN_REVERT_BYTE``): once tx is
        empty its new socket takes this one's descriptor, and the pump serves a stream,
        rx's unread bytes first (``_flush``). True when it switched."""
        assert self.plane is not None
        rc = self.plane.chan_revert(self.channel.chan, self.sock.fileno())
        if rc < 0:
            self._app_closed()
        if rc != 1:
            return False
        self.channel.revert_chan, self.channel.chan = self.channel.chan, 0
        self.fin_sent_to_app = False  # an EOF shown on the old socket is shown again
        self.sock_replaced = True
        return True

    def _flush(self) -> bool:
        """After a revert: rx's bytes the application never read go first. True once
        they are all sent (the channel is released)."""
        assert self.plane is not None
        left = self.plane.chan_flush(self.channel.revert_chan, self.sock.fileno())
        if left < 0:
            self._app_closed()
            return False
        if left > 0:
            self.app_full = True  # wait for EVENT_WRITE
            return False
        self.plane.chan_release(self.channel.revert_chan)
        self.channel.revert_chan = 0
        return True

    def claim_expired(self) -> None:
        """No claim came in time (a process without the shim): deliver as a stream."""
        self.channel.claim_wait = False

    def _chan_idle(self) -> bool:
        """Before the pump waits: arm the channel for what it waits for (chan.h's
        idle step). True when there is work now instead."""
        assert self.plane is not None
        waits = self._chan_waits()
        if self._writer_blocked() and not self._app_hangs_up():
            rc = self.plane.chan_wait_door(self.channel.chan, self.sock.fileno(), waits)
            if rc != -errno.ENODEV:
                return self._door_armed(rc)
        self.door_waits = False
        # With nothing awaited the step still drains the socket and answers a re-token
        # request (a read that left bytes in rx would otherwise wait for a token until
        # TCP next wakes the pump); an error then (the application gone) is met by the
        # next arm, after TCP took tx's bytes.
        rc = self.plane.chan_idle(self.channel.chan, self.sock.fileno(), waits)
        if self._chan_revert():
            return True  # its drain found a revert request: the old socket's EOF is moot
        if not waits:
            # TCP wakes the pump. The socket stays watched (a revert request may come
            # whatever the pump waits for) unless the application closed its end: then
            # it is readable for ever, and tx's bytes still go out as TCP takes them.
            self.app_hung = self.app_hung or self._app_socket_eof()  # a close is for good
            if self.app_hung and self.app_eof and self._rx_unread():
                # It shut down writing, then closed with bytes unread: lost (C's
                # chan_read resets it the same way). Its written bytes are in TCP.
                self._app_closed(lost=True)
            return False
        if rc == -errno.EPROTO:  # an impossible index: reset, as C's chan_broken
            self._app_closed()
            return False
        if rc < 0:  # a re-token's send failed: its end is closed
            self._app_hung_up()
            return False
        if rc == 0:
            return True
        # Asleep until the socket is readable; an application that closed its end
        # leaves it readable for ever (EOF), and no byte says so: look for it now.
        if self._app_socket_eof():
            self._app_hung_up()
        return False

    def _writer_blocked(self) -> bool:
        """Ring mode: TCP takes nothing from tx now, and tx holds bytes, so its writer
        may sleep on filler. Draining the socket then would make the writer's socket
        writable with tx still full: it would wake, fill again and wake the pump again,
        the two spinning until TCP moves (docs/channels.md, "A writer blocked with rx
        full"). TCP's progress wakes the pump instead, and its drain follows the room
        it makes (chan.h: JR_CHAN_DRAIN after tx_release)."""
        assert self.plane is not None
        if self.app_eof or self.conn.state not in _SENDING:
            return False
        if self.to_tcp is None and self.conn.writable:
            return False
        return self.plane.chan_tx_queued(self.channel.chan) > 0

    def _app_hangs_up(self) -> bool:
        """Whether the application's end of the socket is closed or shut, whatever bytes
        wait there (a peek would find its filler first): then the pump takes the normal
        way, whose drain no writer is left to mind."""
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLRDHUP)
        return any(ev & (select.POLLRDHUP | select.POLLHUP) for _, ev in poller.poll(0))

    def _door_armed(self, rc: int) -> bool:
        """After ``chan_wait_door``: its answer, as ``_chan_idle``'s."""
        if rc == -errno.EPROTO:  # an impossible index: reset, as C's chan_broken
            self._app_closed()
        elif rc < 0:  # a re-token's send failed: its end is closed
            self._app_hung_up()
        elif rc == 0:
            return True
        else:
            self.door_waits = True  # rx room by the door; tx's bytes by TCP's progress
        return False

    def _app_hung_up(self) -> None:
        """Ring mode: the application's end of the socket is closed. Bytes it left in
        rx were lost (a reset follows, as C's chan_read decides); a token it left
        unread was not."""
        self._app_closed(lost=self._rx_unread())

    def _rx_unread(self) -> bool:
        """Ring mode: rx holds bytes the application has not taken (or an impossible
        index)."""
        assert self.plane is not None
        return self.plane.chan_rx_unread(self.channel.chan) != 0

    def _app_socket_eof(self) -> bool:
        """Whether the application's end of the socket is closed (a peek)."""
        try:
            return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _chan_waits(self) -> int:
        """What a ring-mode pump waits for from its application (chan.h's waits), as
        C's ``chan_arm``: room in rx while TCP holds bytes for it; bytes in tx only
        while TCP can take them (else ACKs wake the pump, not the application, and an
        application that closed its end would leave the socket ready for ever)."""
        waits = 0
        if self.conn.recv_queue:
            waits |= WAIT_ROOM  # rx was full
        if not self.app_eof and self.to_tcp is None and self.conn.state in _SENDING \
                and self.conn.writable:
            waits |= WAIT_BYTES
        return waits

    def _to_app(self, budget: int) -> bool:
        if self.app_gone or self.channel.claim_wait:
            return False  # claim_wait: nothing is delivered before the application's claim
        self.app_full = False
        if self.channel.revert_chan and not self._flush():
            return False
        for _ in range(budget):
            chunk = self.conn.recv_view(CHUNK)
            size = len(chunk)
            if not size:
                break
            n = self._send_app(chunk)
            chunk.release()  # before the buffer changes
            if n < 0:
                self._app_closed()
                return False
            self.conn.recv_taken(n)
            if n < size:
                # The socket is full: the rest stays in TCP's buffer; wait for
                # EVENT_WRITE.
                self.app_full = True
                return False
        else:
            if self.conn.recv_queue:
                return True  # budget spent with bytes left: come back next iteration
        if self.conn.eof and not self.conn.recv_queue and not self.fin_sent_to_app:
            # RFC 9293 §3.10.7.4 eighth: the peer's FIN: the application reads EOF.
            self.fin_sent_to_app = True
            if self.channel.chan:
                assert self.plane is not None
                self.plane.chan_rx_eof(self.channel.chan)  # after the last byte put
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
        return False

    def _send_app(self, chunk: memoryview) -> int:
        """Give the application what it takes of ``chunk``: bytes taken, -1 when its
        end is closed (EPIPE, ECONNRESET) or its channel is broken."""
        if self.channel.chan:
            assert self.plane is not None
            n = self.plane.chan_deliver(self.channel.chan, self.sock.fileno(), chunk)
            return n if n >= 0 else -1
        try:
            return self.sock.send(chunk, socket.MSG_NOSIGNAL)
        except BlockingIOError:
            return 0
        except OSError:  # EPIPE / ECONNRESET: the application closed its end
            return -1

    def _from_app(self, budget: int) -> bool:
        if self.app_eof or self.app_gone:
            return False
        if self.conn.state not in _SENDING:
            return False
        for _ in range(budget):
            if self.to_tcp is not None:
                n = self.conn.send(self.to_tcp)
                rest = self.to_tcp[n:]
                self.to_tcp = rest if len(rest) else None
                if self.to_tcp is not None:
                    return False  # the send buffer is full: wait for ACKs to free it
            if self.conn.send_queue >= REGION_AFTER:
                # A bulk sender (a chunk or more queued): read the application's bytes
                # straight into the send buffer's free space, no copy through the
                # scratch. Only then: asking for the region grows the ring to the whole
                # send buffer, and a ring that big is released each time it drains, so
                # a request/response flow would reallocate it per response; a bulk
                # flow pays that once per drain, over at least REGION_AFTER bytes.
                region = self.conn.send_region()
                if not region:
                    return False  # the send buffer is full: wait for ACKs to free it
                with region:
                    got = self._read_app(region)
                if got is None:
                    return False
                if got:
                    self.conn.send_commit(got)
                    self.region_reads += 1
                    continue
            else:
                got = self._read_app(_SCRATCH)
                if got is None:
                    return False
            if not got:
                # The application shut down writing (or closed): RFC 9293 §3.10.4 CLOSE
                # of the sending half; a FIN follows the queued data.
                self.app_eof = True
                self.conn.shutdown_write()
                return False
            taken = self.conn.send(_SCRATCH[:got])
            if taken < got:
                # The send buffer is full: keep the rest (copied: the scratch is reused).
                self.to_tcp = memoryview(_SCRATCH[taken:got].tobytes())
                return False
        # Budget spent with the socket perhaps still readable: come back next iteration.
        return True

    def _read_app(self, into: memoryview) -> int | None:
        """``recv_into`` from the application: bytes read (0: its EOF), None when
        there is nothing now or its end is gone (then the connection is closed)."""
        if self.channel.claim_check:
            return None  # the claim check reads the first bytes (service)
        if self.channel.chan:
            return self._collect(into)
        try:
            return self.sock.recv_into(into)
        except BlockingIOError:
            return None
        except OSError:
            self._app_closed()
            return None

    def _claim_check(self) -> None:
        """The claim check (docs/channels.md): the application's first bytes, read on
        their own. A claim switches the pump to ring mode or is refused (stream mode);
        payload waits for TCP in ``to_tcp``; the EOF is the application's."""
        assert self.plane is not None
        # Claimable while delivery still waited for it: nothing was delivered yet.
        n, first, decision = self.plane.chan_take_first(self.sock.fileno(),
                                                        self.channel.claim_wait)
        if n in (-errno.EAGAIN, -errno.EINTR):
            return
        self.channel.claim_check = self.channel.claim_wait = False
        if n < 0:
            self._app_closed()
        elif n == 0:
            self.app_shut_down()
        elif decision > 0:
            self.channel.chan = decision
        elif decision == -errno.ENOMSG:  # not a claim: the application speaks first
            self.to_tcp = memoryview(first)

    def _collect(self, into: memoryview) -> int | None:
        """Ring mode's read: tx's bytes; 0 once the application shut down writing and
        tx is empty; None when there is nothing now."""
        assert self.plane is not None
        chan = self.channel.chan
        eof = self.plane.chan_tx_eof(chan)  # before the look at tx: no byte follows it
        n = self.plane.chan_collect(chan, self.sock.fileno(), into)
        if n < 0:
            self._app_closed()
            return None
        if n:
            return n
        return 0 if eof else None

    def _app_closed(self, *, lost: bool = True) -> None:
        """The application's end is gone. ``lost``: with bytes it never took (unread in
        its socket or rx, or refused: EPIPE, ECONNRESET, a broken channel), which the
        connection's close turns into a reset (TcpConnection.close)."""
        self.app_gone = True
        self.app_full = False
        self.to_tcp = None
        self.conn.close(lost=lost)

    def app_closed(self) -> None:
        """The application's end is gone (seen by the C data plane, which says so only
        when bytes were lost with it: its app_gone): as EPIPE here."""
        self._app_closed()

    def app_shut_down(self) -> None:
        """The application shut down writing (its EOF, seen by the C data plane): the
        FIN follows the queued data (RFC 9293 §3.10.4)."""
        if not self.app_eof:
            self.app_eof = True
            self.conn.shutdown_write()

    # -- what to wait for -------------------------------------------------------------------

    def wanted(self) -> int:
        """Selector events this pump needs now (0: nothing until TCP changes)."""
        if self.app_gone:
            return 0
        if self.channel.chan:
            if self.door_waits:
                return 0  # its writer is blocked: the door and TCP wake it (_chan_idle)
            # Its bytes only say "look" (_chan_idle armed what it waits for), and one
            # may be a revert request, which can come whatever the pump waits for; a
            # closed end, readable for ever, is watched only while awaited.
            return selectors.EVENT_READ if self._chan_waits() or not self.app_hung else 0
        events = 0
        if self.app_full:
            events |= selectors.EVENT_WRITE
        if not self.app_eof and self.to_tcp is None and self.conn.state in _SENDING \
                and self.conn.writable:
            events |= selectors.EVENT_READ
        return events

    @property
    def finished(self) -> bool:
        """Nothing more will move: the service can close its end."""
        if self.app_gone:
            return True
        if self.conn.state is TcpState.CLOSED:
            # After an orderly close deliver what is left; after a reset, nothing is.
            return self.conn.error is not None or not self.conn.recv_queue
        return self.app_eof and self.fin_sent_to_app and self.to_tcp is None

    @property
    def buffered(self) -> int:
        """Bytes this pump holds outside the TCP and socket buffers (≤ CHUNK)."""
        return len(self.to_tcp) if self.to_tcp is not None else 0

    def close(self) -> None:
        """Close the service's end; a live TCP connection is closed as the app would."""
        if self.conn.state is not TcpState.CLOSED and not self.app_gone:
            self.conn.close()
        if self.plane is not None:
            if self.channel.claim_check:
                # The first bytes were never read: a claim among them is answered
                # (refused), as C's claim_refuse_unread does, so the application's slot
                # is its own again instead of waiting for a verdict for ever.
                self.plane.chan_take_first(self.sock.fileno(), False)
                self.channel.claim_check = self.channel.claim_wait = False
            for chan in (self.channel.chan, self.channel.revert_chan):
                if chan:
                    self.plane.chan_release(chan)
            self.channel.chan = self.channel.revert_chan = 0
        self.sock.close()
