"""The control socket: one JSON object per line, one request and one reply per line.

Requests are ``{"op": "<name>", ...}``; replies are ``{"ok": true, ...}`` or
``{"ok": false, "error": "<one line>", "exit_code": n}``. The socket is a Unix stream
socket in the service's state directory that every user may reach (mode 0666), and each
request is authorized on the peer's credentials (SO_PEERCRED): reading the service's
state (``READ_ONLY``) is everyone's, as ``ss`` and ``/proc/net/tcp`` are; changing it
(ports, shutdown) needs root or the service's own uid, because the service changes
what the kernel does with a host's traffic.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
from pathlib import Path
from typing import Any, Final

from joyride.errors import JoyrideError

MAX_LINE: Final = 1 << 20  # a request or reply longer than this is refused
MAX_REPLY: Final = 64 << 20  # a socket table of many connections is long
READ_ONLY: Final = frozenset({"status", "stats", "sockets"})  # operations any user may ask
_UCRED: Final = struct.Struct("iII")  # struct ucred: pid, uid, gid


class ControlError(JoyrideError):
    """The service could not be reached, or answered with an error."""


class ServiceNotRunning(ControlError):
    """No service answers on the control socket."""

    exit_code = 3


def listen(path: Path) -> socket.socket:
    """Bind the control socket at ``path`` (replacing a stale one), mode 0666."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o666)  # reachable by all; each request is authorized (module doc)
    sock.listen(16)
    sock.setblocking(False)
    return sock


def peer_allowed(conn: socket.socket, op: object) -> bool:
    """Whether the peer may ask for ``op``: anyone for ``READ_ONLY``, otherwise root or
    the service's own uid."""
    if op in READ_ONLY:
        return True
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    _pid, uid, _gid = _UCRED.unpack(raw)
    return uid in (0, os.geteuid())


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """Parse one line; a malformed line raises ControlError (never anything else)."""
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ControlError(f"malformed control message: {exc}") from exc
    if not isinstance(message, dict):
        raise ControlError("a control message must be a JSON object")
    return message


def error_reply(exc: JoyrideError) -> dict[str, Any]:
    return {"ok": False, "error": str(exc), "exit_code": exc.exit_code}


def request(path: Path, message: dict[str, Any], *, timeout: float = 10.0,
            max_reply: int = MAX_LINE) -> dict[str, Any]:
    """Send one request, return the reply; a service-side error becomes ControlError."""
    sock, reply, _rest = _exchange(path, message, timeout, max_reply)
    sock.close()
    return reply


def open_stream(path: Path, message: dict[str, Any], *, timeout: float = 10.0
                ) -> tuple[socket.socket, bytes]:
    """A request whose reply line is followed by a stream (``capture``): the connected
    socket (blocking, no timeout) and the bytes already read past the reply line.
    A refusal raises ControlError, as ``request`` does."""
    sock, _reply, rest = _exchange(path, message, timeout, MAX_LINE)
    sock.settimeout(None)
    return sock, rest


def _exchange(path: Path, message: dict[str, Any], timeout: float, max_reply: int
              ) -> tuple[socket.socket, dict[str, Any], bytes]:
    """Connect, send ``message``, read the reply line: (socket, reply, bytes past it)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ServiceNotRunning(f"no service answers on {path}") from exc
        sock.sendall(encode(message))
        buf = bytearray()
        while b"\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ControlError("the service closed the control connection mid-reply")
            buf += chunk
            if len(buf) > max_reply:
                raise ControlError("the service's reply is too long")
        line, _, rest = bytes(buf).partition(b"\n")
        reply = decode(line)
        if not reply.get("ok"):
            err = ControlError(str(reply.get("error") or "the service refused the request"))
            code = reply.get("exit_code")
            if isinstance(code, int):
                err.exit_code = code
            raise err
    except TimeoutError as exc:
        sock.close()
        raise ControlError(f"the service did not answer within {timeout:g} s") from exc
    except BaseException:
        sock.close()
        raise
    return sock, reply, rest
