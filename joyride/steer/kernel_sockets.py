"""Which local TCP ports the kernel has connections on (``/proc/net/tcp``, ``tcp6``).

The steering program looks a steered frame's 4-tuple up in the kernel's socket table
only where the kernel may own it (bpf/steer.c, ``JR_PORT_KERNEL_CONNS``): on a port
Joyride serves or connects from, new kernel connections cannot appear (their SYNs are
Joyride's), so once those found here are gone the lookup, a measurable cost per frame,
is skipped. Both files are read: a dual-stack ``[::]`` socket's IPv4 connections are
listed in ``tcp6``. They are the reading thread's namespace's (``netns.proc_net``: an
embedded service's thread may differ from the process's main thread).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from joyride.netns import proc_net

PROC_FILES: Final = (proc_net("tcp"), proc_net("tcp6"))
# include/net/tcp_states.h, as /proc/net/tcp prints "st". Neither counts: a listener's
# frames are looked up on ports Joyride does not serve anyway, and on the ports the flag
# is for, a TIME-WAIT tuple is Joyride's (bpf/steer.c).
TCP_TIME_WAIT: Final = 0x06
TCP_LISTEN: Final = 0x0A


def ports_with_connections(text: str, ports: set[int]) -> set[int]:
    """The ports of ``ports`` that a connection in one ``/proc/net/tcp`` table (its
    text) has as its local port: any state but LISTEN and TIME-WAIT."""
    found: set[int] = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        _, _, port_hex = fields[1].rpartition(":")
        try:
            port, state = int(port_hex, 16), int(fields[3], 16)
        except ValueError:
            continue
        if state not in (TCP_LISTEN, TCP_TIME_WAIT) and port in ports:
            found.add(port)
    return found


def connected_ports(ports: Iterable[int]) -> set[int]:
    """The ports of ``ports`` on which the kernel has a TCP connection (established,
    handshaking or closing). An unreadable table counts as "maybe all of them": the
    lookup stays on."""
    wanted = set(ports)
    if not wanted:
        return set()
    found: set[int] = set()
    for path in PROC_FILES:
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue  # no IPv6 in this kernel
        except OSError:
            return wanted
        found |= ports_with_connections(text, wanted)
    return found
