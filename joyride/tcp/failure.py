"""Why a connection failed, and the errno each reason is reported as: the one owner.

``TcpConnection.error`` is one of these (None while the connection has not failed).
Every front end reports a failure through this table: the asyncio and socket APIs
raise ``exception()``, the service answers ``OP_CONNECT`` and ``SO_ERROR`` with
``errno``. The members are strings (``ConnectionFailure.RESET == "reset"``), as the
reason was before it had a type.
"""

from __future__ import annotations

import enum
import errno as _errno
from typing import Final


class ConnectionFailure(enum.StrEnum):
    RESET = "reset"  # the peer reset the connection (RFC 9293 §3.10.7)
    REFUSED = "refused"  # a reset answered our SYN
    TIMEOUT = "timeout"  # retransmissions or keepalive probes went unanswered

    @property
    def errno(self) -> int:
        return _ERRNO[self][0]

    def exception(self) -> OSError:
        """The exception a socket call on the failed connection raises, as the kernel's
        would (``ConnectionResetError``, ``ConnectionRefusedError``, ``TimeoutError``)."""
        code, message = _ERRNO[self]
        return _EXCEPTION[self](code, message)


_ERRNO: Final = {
    ConnectionFailure.RESET: (_errno.ECONNRESET, "Connection reset by peer"),
    ConnectionFailure.REFUSED: (_errno.ECONNREFUSED, "Connection refused"),
    ConnectionFailure.TIMEOUT: (_errno.ETIMEDOUT, "Connection timed out"),
}
_EXCEPTION: Final[dict[ConnectionFailure, type[OSError]]] = {
    ConnectionFailure.RESET: ConnectionResetError,
    ConnectionFailure.REFUSED: ConnectionRefusedError,
    ConnectionFailure.TIMEOUT: TimeoutError,
}


def failure_errno(failure: ConnectionFailure | None, default: int = 0) -> int:
    """The errno a connection that failed with ``failure`` reports (``default`` if it
    did not fail)."""
    return default if failure is None else failure.errno
