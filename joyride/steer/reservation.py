"""Reserving Joyride's ephemeral ports in the kernel, per network namespace.

Joyride's own outgoing connections take local ports from an ephemeral range that the
steering map sends to Joyride. The kernel must never hand the same ports to its own
sockets: a UDP socket's datagrams would be steered away from it, and a TCP connection
of the kernel's would keep the frames of a Joyride connection on the same 4-tuple (the
steering program leaves the kernel what its socket table holds). The range is added to
``net.ipv4.ip_local_reserved_ports`` (ip-sysctl.rst: reserved ports are skipped by
automatic port assignment; explicit bind(2) still works). The sysctl is per network
namespace and ``/proc/sys/net`` shows the namespace of the calling thread, so the
functions here act on whatever namespace the caller is in.

Release removes only what Joyride added: ports that were already reserved before
(``original``) stay reserved, and entries someone else added meanwhile are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from joyride.errors import EnvironmentProblem, PrivilegeError
from joyride.steer.ports import PortSet

SYSCTL: Final = Path("/proc/sys/net/ipv4/ip_local_reserved_ports")


def read_reserved(path: Path = SYSCTL) -> PortSet:
    return PortSet.parse(path.read_text().strip(), allow_empty=True)


def write_reserved(ports: PortSet, path: Path = SYSCTL) -> None:
    # The kernel treats an empty write as "nothing reserved"; a lone newline does the
    # same and works on every kernel version.
    try:
        path.write_text(f"{ports}\n")
    except PermissionError as exc:
        raise PrivilegeError(f"writing {path} needs root (CAP_NET_ADMIN): run it as root") \
            from exc
    except OSError as exc:
        raise EnvironmentProblem(f"the kernel refused {path} = {ports}: {exc}") from exc


def reserve(ephemeral: PortSet, path: Path = SYSCTL) -> PortSet:
    """Add ``ephemeral`` to the reserved ports; return the value found before."""
    original = read_reserved(path)
    if ephemeral:
        write_reserved(original | ephemeral, path)
    return original


def release(ephemeral: PortSet, original: PortSet, path: Path = SYSCTL) -> bool:
    """Undo ``reserve``: drop the ports of ``ephemeral`` that ``original`` did not hold.

    Returns False, touching nothing, when none of Joyride's ports is reserved any more:
    that happens when someone reset the sysctl, and also when a stale state file
    outlives its namespace and names a new namespace that reuses the inode number.
    """
    if not ephemeral:
        return True
    current = read_reserved(path)
    ours = ephemeral - original
    if ours and current.isdisjoint(ours):
        return False
    write_reserved(current - ours, path)
    return True
