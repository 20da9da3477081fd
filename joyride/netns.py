"""Entering a network namespace from inside this process.

Python 3.11 has no ``os.setns``; libc's ``setns(2)`` is called through ctypes. Only the
calling thread moves, which is exactly what a test or a tool needs to create sockets,
attach XDP programs or open AF_XDP sockets inside a namespace it owns.

Note: ``/sys/class/net`` keeps showing the namespace that sysfs was mounted in, so code
that may run inside another namespace must look interfaces up over netlink or ioctl
(``socket.if_nametoindex``), never through ``/sys``. Likewise ``/proc/net`` is
``/proc/self/net``, the namespace of the process's main thread: a thread reads its own
namespace's tables through ``proc_net``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"
# The calling thread's /proc/net (Linux 3.17+). /proc/net follows the main thread: an
# embedded service's thread read the namespace a test's main thread had just entered to
# connect from the peer, took every listener for gone and dropped them (CI, session 33).
PROC_NET_OWN = Path("/proc/thread-self/net")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def proc_net(table: str) -> Path:
    """``/proc/net/<table>`` of the calling thread's network namespace (``unix``,
    ``tcp``, ``tcp6``), whichever namespace the process's other threads are in."""
    return PROC_NET_OWN / table


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def inside(netns: str) -> Iterator[None]:
    """Run the body with the current thread inside the named namespace (``ip netns`` name)."""
    target = os.open(os.path.join(NETNS_RUN_DIR, netns), os.O_RDONLY)
    try:
        with inside_fd(target):
            yield
    finally:
        os.close(target)


def current_fd() -> int:
    """An fd for the calling thread's network namespace (the caller closes it)."""
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


def same_namespace(fd: int) -> bool:
    here = os.stat("/proc/thread-self/ns/net")
    there = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


@contextmanager
def inside_fd(fd: int) -> Iterator[None]:
    """Like ``inside`` for a namespace held as an fd; a no-op when already there."""
    if same_namespace(fd):
        yield
        return
    original = current_fd()
    try:
        _setns(fd)
        try:
            yield
        finally:
            _setns(original)
    finally:
        os.close(original)
