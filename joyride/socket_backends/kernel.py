"""A ``joyride.socket`` that is a plain kernel socket: every call goes to it."""

from __future__ import annotations

import socket as _stdlib
from typing import Any

from joyride.socket_backends import Address


class KernelSocket:
    """``sock`` is the kernel socket; ``timeout`` is what ``gettimeout`` reports (set on
    ``sock`` by whoever made it, as the standard module's own sockets are)."""

    mode = "kernel"

    def __init__(self, sock: _stdlib.socket, timeout: float | None) -> None:
        self.sock = sock
        self.timeout = timeout
        self.closed = False

    @classmethod
    def fresh(cls, family: int, type_: int, proto: int,
              options: list[tuple[int, int, Any]], timeout: float | None) -> KernelSocket:
        """A new kernel socket with the options recorded so far replayed on it."""
        sock = _stdlib.socket(family, type_, proto)
        for level, opt, value in options:
            sock.setsockopt(level, opt, value)
        sock.settimeout(timeout)
        return cls(sock, timeout)

    def settimeout(self, value: float | None) -> None:
        self.timeout = None if value is None else float(value)
        self.sock.settimeout(value)

    def bind(self, addr: tuple[str, int]) -> None:
        self.sock.bind(addr)

    def listen(self, backlog: int) -> None:
        self.sock.listen(backlog)

    def accept(self) -> tuple[Any, Address]:
        return self.sock.accept()

    def connect_ex(self, addr: tuple[str, int]) -> int:
        return int(self.sock.connect_ex(addr))

    def send(self, data: bytes | bytearray | memoryview, flags: int) -> int:
        return int(self.sock.send(data, flags))

    def sendall(self, data: bytes | bytearray | memoryview, flags: int) -> None:
        self.sock.sendall(data, flags)

    def recv(self, bufsize: int, flags: int) -> bytes:
        return self.sock.recv(bufsize, flags)

    def recv_into(self, buffer: Any, nbytes: int, flags: int) -> int:
        return int(self.sock.recv_into(buffer, nbytes, flags))

    def recvfrom(self, bufsize: int, flags: int) -> tuple[bytes, Any]:
        return self.sock.recvfrom(bufsize, flags)

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def close(self, *, deferred: bool) -> None:
        """``deferred`` (``makefile`` objects still open) does not matter here: those
        are the kernel socket's own, which counts them itself."""
        self.closed = True
        self.sock.close()

    def detach(self) -> int:
        return int(self.sock.detach())

    def fileno(self) -> int:
        return int(self.sock.fileno())

    def setsockopt(self, level: int, optname: int, value: Any) -> None:
        self.sock.setsockopt(level, optname, value)

    def getsockopt(self, level: int, optname: int, buflen: int) -> Any:
        return self.sock.getsockopt(level, optname, buflen) if buflen else \
            self.sock.getsockopt(level, optname)

    def getsockname(self) -> Address:
        return self.sock.getsockname()

    def getpeername(self) -> Address:
        return self.sock.getpeername()

    def makefile(self, mode: str, buffering: int | None, *, encoding: str | None,
                 errors: str | None, newline: str | None) -> Any:
        makefile: Any = self.sock.makefile
        return makefile(mode, buffering, encoding=encoding, errors=errors, newline=newline)

    def describe(self) -> str:
        return f"<joyride.socket kernel {self.sock!r}>"
