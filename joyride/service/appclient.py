"""A Python client of the application protocol (``joyride.service.protocol``).

What the preload shim does in C, for Python callers and tests: ``listen`` returns a
unix listening socket from which this module's ``accept`` takes Joyride connections
(refusing any the service did not deliver), ``connect`` returns a connected stream
socket carrying one TCP connection.
"""

from __future__ import annotations

import array
import contextlib
import errno
import itertools
import logging
import os
import socket
from pathlib import Path
from typing import Final

from joyride.claim.statedir import StateDir
from joyride.service import apps, protocol
from joyride.wire.addr import packed

SOCKET_ENV: Final = "JOYRIDE_SOCKET"
_counter = itertools.count()
log = logging.getLogger(__name__)


class NotAccelerated(Exception):
    """The service says the request is not Joyride's business: use the kernel."""


def app_path(ifname: str | None = None) -> Path:
    """Where the application socket is: ``$JOYRIDE_SOCKET``, or the interface's."""
    env = os.environ.get(SOCKET_ENV)
    if env and ifname is None:
        return Path(env)
    if ifname is not None:
        return StateDir(ifname).app_path
    # A service that died without undoing its claim (SIGKILL) leaves its directory; a
    # later one in a namespace of the same inode must not be hidden behind it.
    dirs = [d for d in StateDir.all_in_netns() if d.app_path.exists() and d.service_alive()]
    if len(dirs) != 1:
        raise FileNotFoundError("no single Joyride service in this network namespace "
                                "(give the interface)")
    return dirs[0].app_path


def _session(path: Path, request: protocol.Request, timeout: float | None,
             size: int = protocol.REPLY.size) -> tuple[bytes, int | None]:
    """One request, one reply of at most ``size`` bytes and at most one descriptor."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        sock.send(request.encode())
        fds = array.array("i")
        # Close-on-exec, as every descriptor Python makes (PEP 446) and the shim's.
        raw, ancdata, _flags, _addr = sock.recvmsg(
            size, socket.CMSG_SPACE(fds.itemsize), socket.MSG_CMSG_CLOEXEC)
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    finally:
        sock.close()
    for extra in fds[1:]:
        os.close(extra)
    fd = fds[0] if fds else None
    if not raw:
        if fd is not None:
            os.close(fd)
        raise ConnectionResetError("the service closed the application socket")
    return raw, fd


def _exchange(path: Path, request: protocol.Request, timeout: float | None
              ) -> tuple[protocol.Reply, int | None]:
    raw, fd = _session(path, request, timeout)
    try:
        return protocol.Reply.decode(raw), fd
    except protocol.ProtocolError:
        if fd is not None:
            os.close(fd)
        raise


def _unix_name(name: object) -> str:
    """An abstract unix name as the protocol spells it (no leading NUL)."""
    if isinstance(name, bytes):
        return name.lstrip(b"\0").decode("ascii", "replace")
    return str(name).lstrip("\0")


def _raise_for(reply: protocol.Reply, what: str) -> None:
    if reply.status == protocol.NOT_ACCELERATED:
        raise NotAccelerated(what)
    if reply.status == protocol.NOT_ADMITTED:
        raise PermissionError(
            errno.EACCES, f"{what}: the Joyride service admits only root and its group "
            f"(joyride attach --group), and uid {os.getuid()} is not in it: add the user "
            "to that group, or attach without --group")
    if reply.status != 0:
        raise OSError(reply.status, f"{what}: {os.strerror(reply.status)}")


def listen(port: int, ip: str = "0.0.0.0", backlog: int = 128, *,
           path: Path | None = None, timeout: float | None = 10.0,
           reuseport: bool = False, v6only: bool = False) -> socket.socket:
    """A listening socket for ``ip:port`` served by Joyride; ``accept()`` on it returns
    connections (their peer name spells the TCP 4-tuple: ``peer_of``). ``reuseport``:
    share the port with other such listeners of this uid, as ``SO_REUSEPORT`` does. An
    IPv6 ``ip`` (``"::"``) listens as an ``AF_INET6`` socket: for IPv4 too (v4-mapped)
    unless ``v6only``."""
    return listen_claiming(port, ip, backlog, path=path, timeout=timeout,
                           reuseport=reuseport, v6only=v6only, channels=False)[0]


def listen_claiming(port: int, ip: str = "0.0.0.0", backlog: int = 128, *,
                    path: Path | None = None, timeout: float | None = 10.0,
                    reuseport: bool = False, v6only: bool = False,
                    channels: bool = True) -> tuple[socket.socket, bool]:
    """``listen``, saying that the application will claim a shared-memory channel on
    each connection (``channels``, docs/channels.md): the listener, and whether the
    service grants that (it keeps channels only on the C data plane). A listener it does
    not grant gets plain streams, and must not claim."""
    ip_bytes = packed(ip)
    flags = (protocol.FLAG_REUSEPORT if reuseport else 0) | \
        (protocol.FLAG_CHANNELS if channels else 0)
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        while True:
            name = protocol.listener_name(ip_bytes, port, os.getpid(), next(_counter),
                                          v6only=v6only)
            try:
                lsock.bind(protocol.abstract(name))
                break
            except OSError as exc:  # a name left by a forked sibling: take the next
                if exc.errno != 98:
                    raise
        lsock.listen(backlog)
        reply, fd = _exchange(path or app_path(),
                              protocol.Request(protocol.OP_LISTEN, ip_bytes, port, name,
                                               flags),
                              timeout)
        if fd is not None:
            os.close(fd)
        _raise_for(reply, f"listen on {ip}:{port}")
    except BaseException:
        lsock.close()
        raise
    granted = reply.flags & protocol.REPLY_CHANNELS or reply.remote_port & protocol.FLAG_CHANNELS
    return lsock, channels and bool(granted)


def connect(ip: str, port: int, *, path: Path | None = None,
            timeout: float | None = 30.0, nonblocking: bool = False) -> socket.socket:
    """A stream socket carrying a new TCP connection to ``ip:port``.

    ``nonblocking``: returned at once while the handshake goes on behind it
    (``protocol.FLAG_NONBLOCK``); a failed handshake shows as a reset on first use."""
    flags = protocol.FLAG_NONBLOCK if nonblocking else 0
    request = protocol.Request(protocol.OP_CONNECT, packed(ip), port, flags=flags)
    reply, fd = _exchange(path or app_path(), request,
                          10.0 if nonblocking else timeout)
    if reply.status != 0 and fd is not None:
        os.close(fd)
    _raise_for(reply, f"connect to {ip}:{port}")
    if fd is None:
        raise ConnectionError("the service replied without a connection")
    return socket.socket(fileno=fd)


def set_option(sock: socket.socket, level: int, optname: int, value: int, *,
               path: Path | None = None, timeout: float | None = 10.0) -> bool:
    """Apply a socket option with a TCP meaning (``protocol.SETOPT_OPTIONS``) to the
    Joyride listener or connection ``sock`` (``OP_SETOPT``). False when it has none
    (the caller keeps its own behaviour); ``OSError`` with the service's errno."""
    code = next((c for c, opt in protocol.SETOPT_OPTIONS.items() if opt == (level, optname)),
                None)
    if code is None:
        return False
    # The unix names, through socket.socket's own methods: a subclass (joyride.asyncio's
    # ServiceSocket) answers these with the TCP addresses.
    if socket.socket.getsockopt(sock, socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        name = socket.socket.getsockname(sock)
    else:
        name = socket.socket.getpeername(sock)
    text = _unix_name(name)
    carrier = (value & 0xFFFFFFFF).to_bytes(4, "little")
    reply, fd = _exchange(path or app_path(),
                          protocol.Request(protocol.OP_SETOPT, carrier, code, text), timeout)
    if fd is not None:
        os.close(fd)
    if reply.status == protocol.NOT_ACCELERATED:
        return False
    _raise_for(reply, f"setsockopt({level}, {optname}, {value})")
    return True


def get_info(sock: socket.socket, *, path: Path | None = None,
             timeout: float | None = 10.0) -> protocol.Info:
    """What a kernel TCP socket would report of the Joyride connection ``sock``
    (``OP_GETINFO``: ``TCP_INFO``, ``SO_ERROR``, ``SIOCOUTQ`` ...). ``OSError`` with
    the service's errno (``ENOTCONN``: it has no such connection)."""
    name = socket.socket.getpeername(sock)
    text = _unix_name(name)
    request = protocol.Request(protocol.OP_GETINFO, bytes(4), 0, text)
    raw, fd = _session(path or app_path(), request, timeout, protocol.INFO_REPLY + 1)
    if fd is not None:
        os.close(fd)
    reply = protocol.Reply.decode(raw[:protocol.REPLY.size])
    _raise_for(reply, "getsockopt")
    return protocol.Info.decode(raw[protocol.REPLY.size:])


def service_uids() -> set[int]:
    """Who may deliver connections here: the owners of this namespace's application
    sockets (``apps.service_uids``), or of ``$JOYRIDE_SOCKET``'s."""
    paths = [d.app_path for d in StateDir.all_in_netns()]
    env = os.environ.get(SOCKET_ENV)
    if env:
        paths.append(Path(env))
    return apps.service_uids(paths)


def accept(listener: socket.socket, uids: set[int] | None
           ) -> tuple[socket.socket, object]:
    """``listener.accept()`` for a Joyride listener, taking only connections the service
    delivered (``protocol.OP_REFUSED``): any other peer is closed and reported, and the
    next connection is taken (``BlockingIOError`` when none waits on a non-blocking
    listener, as ``accept`` says). ``uids``: ``service_uids()`` as found when the
    listener was made, in its network namespace (None: look now)."""
    while True:
        conn, unix_name = socket.socket.accept(listener)
        if uids is None:
            uids = service_uids()
        if apps.from_service(conn, uids):
            return conn, unix_name
        _refuse(listener, conn)


def _refuse(listener: socket.socket, conn: socket.socket) -> None:
    try:
        forger = apps.peer_credentials(conn)
        who = f"pid {forger.pid}, uid {forger.uid}"
    except OSError:
        who = "a peer that is gone"
    conn.close()
    name = socket.socket.getsockname(listener)
    text = _unix_name(name)
    log.warning("joyride: refused a connection to %s from %s: only the Joyride service "
                "delivers connections", text, who)
    parsed = protocol.parse_name(text)
    ip = packed(parsed.local[0]) if parsed is not None else bytes(4)
    port = parsed.local[1] if parsed is not None else 0
    # The report is for the operator; the refusal stands without it.
    with contextlib.suppress(OSError, protocol.ProtocolError):
        _exchange(app_path(), protocol.Request(protocol.OP_REFUSED, ip, port, text), 2.0)


def peer_of(sock: socket.socket) -> tuple[tuple[str, int], tuple[str, int]] | None:
    """(local, remote) TCP addresses of a Joyride connection socket, else None."""
    parsed = protocol.parse_name(sock.getpeername())
    if parsed is None or parsed.remote is None:
        return None
    return parsed.local, parsed.remote
