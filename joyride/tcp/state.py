"""The eleven connection states of RFC 9293 §3.3.2 and the events a connection reports."""

from __future__ import annotations

import enum


class FastEnum(enum.Enum):
    """A plain Enum hashed by identity, in C.

    ``enum.Enum.__hash__`` is a Python function (``hash(self._name_)``), and these
    members are hashed on every segment (state sets, the timer table). Members of a
    plain Enum compare by identity, so the identity hash agrees with ``==``."""

    __hash__ = object.__hash__


class TcpState(FastEnum):
    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"

    @property
    def synchronized(self) -> bool:
        """RFC 9293 §3.5.2: every state after the handshake has completed (SYN-RECEIVED
        counts: it has seen the peer's SYN and RST/SYN rules of §3.10.7.4 apply)."""
        return self not in (TcpState.CLOSED, TcpState.LISTEN, TcpState.SYN_SENT)


#: States in which received text is delivered (RFC 9293 §3.10.7.4, "seventh").
RECEIVING_STATES = frozenset({TcpState.ESTABLISHED, TcpState.FIN_WAIT_1, TcpState.FIN_WAIT_2})
#: States in which the application may still queue data.
SENDING_STATES = frozenset(
    {TcpState.SYN_SENT, TcpState.SYN_RECEIVED, TcpState.ESTABLISHED, TcpState.CLOSE_WAIT}
)


class TcpEvent(FastEnum):
    """What the application learns from ``TcpConnection.events()``."""

    ESTABLISHED = "established"  # handshake complete
    DATA = "data"  # new bytes are readable
    WRITABLE = "writable"  # send-buffer space freed after it had been full
    EOF = "eof"  # the peer's FIN arrived in order: no more data will come
    RESET = "reset"  # the peer reset the connection (or we timed out: see reason)
    CLOSED = "closed"  # the connection reached CLOSED and can be forgotten
