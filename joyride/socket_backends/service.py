"""A ``joyride.socket`` served by the network service (``joyride attach``).

The socket is the real descriptor the service hands over (``joyride.service.appclient``),
so everything the kernel offers on a descriptor keeps working. It is an ``AF_UNIX``
socket, but ``getsockname``/``getpeername`` and ``accept`` report the TCP addresses,
read from the unix names the service binds (they spell the 4-tuple:
``joyride.service.protocol``), so the answer survives ``dup``/``fork``/``exec``;
``getsockopt``/``setsockopt`` answer as a kernel TCP socket would, as the preload shim
does (``sockopts.TcpAnswers``: ``TCP_INFO``, ``SO_ERROR`` ... from the service).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket as _stdlib
from typing import Any

from joyride import sockopts
from joyride.claim.statedir import StateDir
from joyride.service import appclient, protocol
from joyride.socket_backends import Address
from joyride.socket_backends.kernel import KernelSocket

_UNAVAILABLE = (appclient.NotAccelerated, FileNotFoundError, ConnectionRefusedError)


def candidate() -> bool:
    """A service runs in this network namespace: a port no embedded stack owns may be
    its (bind waits for listen or connect to know)."""
    return any(d.service_alive() for d in StateDir.all_in_netns())


def listening(host: str, port: int, backlog: int, reuseport: bool, *,
              family: int = _stdlib.AF_INET, v6only: bool = False) -> _stdlib.socket | None:
    """A listening descriptor from the network service for a socket of ``family``
    (``AF_INET6``: dual-stack unless ``v6only``), or None (not accelerated)."""
    wildcard = "::" if family == _stdlib.AF_INET6 else "0.0.0.0"
    try:
        return appclient.listen(port, host or wildcard, backlog, reuseport=reuseport,
                                v6only=v6only and family == _stdlib.AF_INET6)
    except _UNAVAILABLE:
        return None


def connected(ip: str, port: int, timeout: float | None) -> _stdlib.socket | None:
    """A descriptor carrying a new connection from the service, or None (not
    accelerated). Non-blocking (``timeout`` 0): the handshake goes on behind it."""
    try:
        return appclient.connect(ip, port, timeout=timeout, nonblocking=timeout == 0.0)
    except _UNAVAILABLE:
        return None


class ServiceSocket(KernelSocket):
    """A service descriptor: a kernel (unix) socket whose names and TCP options are
    answered as the TCP socket's it stands for."""

    mode = "service"

    def __init__(self, sock: _stdlib.socket, timeout: float | None,
                 options: list[tuple[int, int, Any]]) -> None:
        # The options with a TCP meaning set so far go to the service (OP_SETOPT), as
        # the preload shim carries them over.
        for level, opt, value in options:
            if isinstance(value, int) and sockopts.changes(level, opt, value):
                with contextlib.suppress(OSError):
                    appclient.set_option(sock, level, opt, value)
        # The rest as the shim carries them: the unix socket takes the SOL_SOCKET ones
        # it can hold, TCP's are answered as a kernel socket would.
        self.answers = sockopts.TcpAnswers(sock, options)
        self.answers.adopt()
        sock.settimeout(timeout)
        super().__init__(sock, timeout)
        self.uids: set[int] | None = None  # a listener: who may deliver connections

    def listening(self, backlog: int) -> None:
        """It listens (the service made it a listener): remember the backlog, and find
        who may deliver connections to it now, in the listener's namespace."""
        self.answers.backlog = min(max(backlog, 0), sockopts.somaxconn())
        self.uids = appclient.service_uids()

    def accept(self) -> tuple[Any, Address]:
        delivered, _unix_name = appclient.accept(self.sock, self.uids)
        # As the kernel: accepted sockets are blocking unless a default timeout is set.
        accepted = ServiceSocket(delivered, _stdlib.getdefaulttimeout(), [])
        accepted.mode = self.mode  # "embedded" when this process's own data path serves it
        accepted.answers = self.answers.inherited(delivered)  # as Linux: its listener's
        peer = accepted.name(peer=True)
        return accepted, peer if peer is not None else ("0.0.0.0", 0)

    def name(self, peer: bool) -> protocol.TcpAddress | None:
        """The TCP address the descriptor's unix names spell (the socket module's form
        of its family), or None."""
        local, remote = protocol.tcp_addresses(self.sock)
        return remote if peer else local

    def connect_ex(self, addr: tuple[str, int]) -> int:
        """connect on a connection already made: Linux TCP's answer, as the preload
        shim's jr_connect_again gives it (event loops call connect again to learn how a
        non-blocking one ended): the failed handshake's error, else EISCONN, also while
        the handshake still runs behind the descriptor (a listener's is EISCONN too)."""
        code = self.answers.getsockopt(_stdlib.SOL_SOCKET, _stdlib.SO_ERROR, 0)
        return int(code) or errno.EISCONN

    def setsockopt(self, level: int, optname: int, value: Any) -> None:
        self.answers.setsockopt(level, optname, value)

    def getsockopt(self, level: int, optname: int, buflen: int) -> Any:
        # The unix descriptor's answers are a unix socket's: a TCP socket's, as the
        # shim gives them (TCP_INFO, SO_ERROR ... from the service).
        return self.answers.getsockopt(level, optname, buflen)

    def getsockname(self) -> Address:
        return self._tcp_name(peer=False)

    def getpeername(self) -> Address:
        return self._tcp_name(peer=True)

    def _tcp_name(self, peer: bool) -> protocol.TcpAddress:
        name = self.name(peer)
        if name is None:  # a listener's peer, or the service's end went away
            code = errno.EBADF if self.closed else errno.ENOTCONN
            raise OSError(code, os.strerror(code))
        return name

    def describe(self) -> str:
        return f"<joyride.socket service fd={self.sock.fileno()} laddr={self.name(False)}>"
