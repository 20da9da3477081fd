"""Who may talk to the service, and what the kernel would let them bind.

Isolation rules (issue 6), enforced here on the service side because the preload shim
runs inside the application and proves nothing:

* the application socket is reachable by every user, as the kernel's ``socket(2)`` is:
  the rules below are what decide. ``joyride attach --group`` is an opt-in restriction:
  the socket becomes reachable only by root and that group (file mode 0660, directory
  mode 0710), and the service checks the peer's credentials again (``SO_PEERCRED``;
  supplementary groups from ``/proc``), answering ``protocol.NOT_ADMITTED`` so the
  shim can say why;
* listening on a port below ``net.ipv4.ip_unprivileged_port_start`` needs
  ``CAP_NET_BIND_SERVICE`` in the caller's effective set, exactly as ``bind(2)``
  demands (``inet_bind`` → ``inet_port_requires_bind_service``);
* a port served for one uid cannot be joined by another (Linux's ``SO_REUSEPORT``
  rule: sockets sharing a port must belong to the same effective uid), so an
  application only ever receives connections meant for its own listeners;
* only the service delivers connections: the application side accepts a connection on
  its Joyride listener only from a peer whose ``SO_PEERCRED`` uid owns the application
  socket (``service_uids``), so no other user can inject one with forged addresses.
"""

from __future__ import annotations

import contextlib
import grp
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from joyride import netns

CAP_NET_BIND_SERVICE: Final = 10
_UCRED: Final = struct.Struct("iII")  # struct ucred: pid, uid, gid
DEFAULT_UNPRIVILEGED_PORT_START: Final = 1024


@dataclass(frozen=True)
class Credentials:
    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> Credentials:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return Credentials(*_UCRED.unpack(raw))


def group_id(name: str) -> int | None:
    """The gid of a group given by name or number; None for "" (root only)."""
    if not name:
        return None
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError as exc:
        raise ValueError(f"no group named {name!r}") from exc


def _status_fields(pid: int) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def may_connect(creds: Credentials, gid: int | None) -> bool:
    """Every user without ``--group``; with it, root or a member (primary or
    supplementary) of that group."""
    if creds.uid == 0 or gid is None:
        return True
    if creds.gid == gid:
        return True
    groups = _status_fields(creds.pid).get("Groups", "").split()
    return str(gid) in groups


def unprivileged_port_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return DEFAULT_UNPRIVILEGED_PORT_START


def may_bind(creds: Credentials, port: int) -> bool:
    """Whether the kernel would let this process bind ``port`` (see module doc)."""
    if port >= unprivileged_port_start():
        return True
    cap_eff = _status_fields(creds.pid).get("CapEff")
    if cap_eff is None:
        return False  # the process is gone, or /proc hides it: deny
    try:
        return bool(int(cap_eff, 16) >> CAP_NET_BIND_SERVICE & 1)
    except ValueError:
        return False


def listen_app_socket(path: Path, gid: int | None) -> socket.socket:
    """Bind the application socket (SOCK_SEQPACKET, non-blocking) with its permissions:
    every user may connect (mode 0666, directory 0711: traverse, not list) unless ``gid``
    restricts it to root and that group."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX,
                         socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    if gid is not None:
        os.chown(path, os.geteuid(), gid)
        os.chmod(path, 0o660)
        # The state directory is 0700; let the group traverse it (not list it).
        os.chown(path.parent, os.geteuid(), gid)
        os.chmod(path.parent, 0o710)
    else:
        os.chmod(path, 0o666)
        os.chmod(path.parent, 0o711)
    for parent in (path.parent.parent, path.parent.parent.parent):
        with contextlib.suppress(OSError):
            mode = parent.stat().st_mode & 0o777
            os.chmod(parent, mode | 0o011)  # traverse for group and others
    sock.listen(128)
    return sock


def service_uids(app_paths: list[Path]) -> set[int]:
    """The uids a delivered connection may come from: the owners of the application
    sockets (the service binds them, in directories only it may write)."""
    uids: set[int] = set()
    for path in app_paths:
        with contextlib.suppress(OSError):
            uids.add(path.stat().st_uid)
    return uids


def from_service(conn: socket.socket, uids: set[int]) -> bool:
    """Whether ``conn``'s peer, by ``SO_PEERCRED``, is one of the services ``uids``."""
    try:
        return peer_credentials(conn).uid in uids
    except OSError:
        return False


def listening_names() -> set[str] | None:
    """Abstract names of listening unix sockets in this network namespace; None when
    they cannot be read now (no descriptor left, say): a caller must then not take
    every listener for gone."""
    names: set[str] = set()
    try:
        text = netns.proc_net("unix").read_text()
    except OSError:
        return None
    for line in text.splitlines()[1:]:
        fields = line.split()
        # Num RefCount Protocol Flags Type St Inode Path; __SO_ACCEPTCON = 0x10000
        if len(fields) < 8 or not fields[7].startswith("@joyride/l/"):
            continue
        try:
            if int(fields[3], 16) & 0x10000:
                names.add(fields[7][1:])
        except ValueError:
            continue
    return names
