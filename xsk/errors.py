"""Exceptions of the xsk package: one class per thing a caller can act on.

Every exception is an ``XskError``; those caused by a kernel refusal carry its
``errno``. Argument errors are also ``ValueError`` so that generic code catches them.
"""

from __future__ import annotations

import errno as _errno
import os


class XskError(Exception):
    """Base class; ``errno`` is set when the kernel refused something."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class XskPermissionError(XskError, PermissionError):
    """AF_XDP sockets need CAP_NET_RAW; XDP programs need CAP_BPF and CAP_NET_ADMIN."""


class XskUnsupported(XskError):
    """The kernel lacks AF_XDP or BPF support (or refuses this configuration)."""


class InterfaceNotFound(XskError):
    """No interface of that name or index in the calling thread's network namespace."""


class QueueOutOfRange(XskError, ValueError):
    """The queue id is not below the interface's number of rx/tx queues."""


class QueueBusy(XskError):
    """Another AF_XDP socket (or a zero-copy user) is already bound to that queue."""


class ConfigError(XskError, ValueError):
    """An argument combination the socket cannot honour (mode, flags, sharing)."""


class RingSizeError(ConfigError):
    """A ring size is not a power of two (or out of range)."""


class UmemError(XskError, ValueError):
    """Bad UMEM geometry (frame size, count, headroom) or a UMEM used after close."""


class UmemExhausted(XskError):
    """Fewer free frames than asked for: release rx batches or poll completions."""


class UmemInUse(XskError):
    """The UMEM cannot be closed: sockets or memory views still refer to it."""


class FrameError(XskError, ValueError):
    """A frame was released or sent that the application does not hold."""


class ZeroCopyUnsupported(XskError):
    """Zero-copy was required but the driver (or the XDP mode) cannot do it."""


class XdpAttachError(XskError):
    """The XDP program could not be loaded or attached."""


class SocketClosed(XskError):
    """An operation on a socket after ``close()``."""


def describe(err: int) -> str:
    """``"EINVAL (Invalid argument)"`` for an errno value."""
    name = _errno.errorcode.get(err, f"errno {err}")
    return f"{name} ({os.strerror(err)})"
