"""A redirect-everything XDP program, for testing AF_XDP sockets without the steering code.

``attach_redirect_all(ifname, mode)`` creates an XSKMAP keyed by rx queue and attaches

    return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);

so every frame on a queue with a registered socket goes to it and every other frame
falls through to the kernel. Why not BCC or clang: the program is five instructions,
emitted by hand in ``cffi_build/xsk_bpf.c`` and loaded with ``bpf(2)`` directly — no
compiler, no kernel headers, no compile step, and it loads in about a millisecond.
It is attached through a BPF link (``BPF_LINK_CREATE``), which the kernel removes with
the last fd: a test that crashes cannot leave it on an interface.
"""

from __future__ import annotations

import errno as E
import os
from types import TracebackType
from typing import Final, Literal

from xsk._native import ffi, lib
from xsk.errors import (
    InterfaceNotFound,
    QueueOutOfRange,
    SocketClosed,
    XdpAttachError,
    XskError,
    XskPermissionError,
    describe,
)
from xsk.xdp_socket import Socket, resolve_ifindex

AttachMode = Literal["auto", "native", "skb"]
MODE_FLAGS: Final[dict[str, int]] = {
    "auto": 0,  # the kernel picks native when the driver has it, generic otherwise
    "native": int(lib.XDP_FLAGS_DRV_MODE),
    "skb": int(lib.XDP_FLAGS_SKB_MODE),
}
LOG_SIZE: Final = 1 << 16


def _fail(err: int, what: str) -> XskError:
    if err in (E.EPERM, E.EACCES):
        return XskPermissionError(f"{what}: {describe(err)}: needs root or CAP_BPF + "
                                  "CAP_NET_ADMIN", err)
    return XdpAttachError(f"{what}: {describe(err)}", err)


class RedirectProgram:
    """An attached redirect-all program and its XSKMAP; ``detach()`` removes both."""

    def __init__(self, ifname: str | int, mode: AttachMode = "auto", *,
                 max_queues: int = 64) -> None:
        if mode not in MODE_FLAGS:
            raise ValueError(f"mode={mode!r}: one of {', '.join(MODE_FLAGS)}")
        if not 1 <= max_queues <= 4096:
            raise ValueError(f"max_queues={max_queues}: must be 1..4096")
        self.ifname, self.ifindex = resolve_ifindex(ifname)
        self.mode = mode
        self.max_queues = max_queues
        self.map_fd = self.prog_fd = self.link_fd = -1
        try:
            self._load()
        except BaseException:
            self.detach()
            raise

    def _load(self) -> None:
        fd = lib.xsk_bpf_xskmap_create(self.max_queues)
        if fd < 0:
            raise _fail(-fd, "creating the XSKMAP")
        self.map_fd = fd
        log = ffi.new("char[]", LOG_SIZE)
        fd = lib.xsk_bpf_prog_load_redirect(self.map_fd, log, LOG_SIZE)
        if fd < 0:
            text = ffi.string(log).decode(errors="replace").strip()
            err = _fail(-fd, "loading the redirect program")
            if text:
                err.args = (f"{err.args[0]}; verifier: {text[-400:]}",)
            raise err
        self.prog_fd = fd
        fd = lib.xsk_bpf_link_create(self.prog_fd, self.ifindex, MODE_FLAGS[self.mode])
        if fd < 0:
            raise self._attach_error(-fd)
        self.link_fd = fd
        ident = ffi.new("uint32_t *")
        lib.xsk_bpf_prog_id(self.prog_fd, ident)
        self.prog_id = int(ident[0])
        lib.xsk_bpf_map_id(self.map_fd, ident)
        self.map_id = int(ident[0])
        lib.xsk_bpf_link_id(self.link_fd, ident)
        self.link_id = int(ident[0])

    def _attach_error(self, err: int) -> XskError:
        where = f"attaching XDP ({self.mode}) to {self.ifname}"
        if err == E.ENODEV:
            return InterfaceNotFound(f"{where}: interface is gone", err)
        if err in (E.EBUSY, E.EEXIST):
            return XdpAttachError(f"{where}: it already has an XDP program", err)
        if err == E.ERANGE:
            return XdpAttachError(f"{where}: MTU too large for native XDP ({describe(err)})",
                                  err)
        if err == E.EOPNOTSUPP:
            return XdpAttachError(f"{where}: the driver has no native XDP", err)
        return _fail(err, where)

    @property
    def attached(self) -> bool:
        return self.link_fd >= 0

    def register(self, sock: Socket, queue: int | None = None) -> None:
        """Redirect frames of ``queue`` (default ``sock.queue``) to ``sock``."""
        if sock.closed:
            raise SocketClosed("cannot register a closed socket")
        self._update(sock.queue if queue is None else queue, sock.fileno())

    def _update(self, queue: int, fd: int) -> None:
        if not self.attached:
            raise XdpAttachError("program is detached")
        if not 0 <= queue < self.max_queues:
            raise QueueOutOfRange(f"queue {queue}: the XSKMAP has {self.max_queues} slots")
        rc = lib.xsk_bpf_map_update(self.map_fd, queue, fd)
        if rc < 0:
            raise _fail(-rc, f"XSKMAP[{queue}] = fd {fd}")

    def unregister(self, queue: int) -> None:
        """Stop redirecting ``queue``: its frames go to the kernel again."""
        if not self.attached:
            raise XdpAttachError("program is detached")
        rc = lib.xsk_bpf_map_delete(self.map_fd, queue)
        if rc < 0 and -rc != E.ENOENT:
            raise _fail(-rc, f"deleting XSKMAP[{queue}]")

    def detach(self) -> None:
        """Remove the program from the interface and free the map (idempotent)."""
        for name in ("link_fd", "prog_fd", "map_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                os.close(fd)

    def __enter__(self) -> RedirectProgram:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.detach()

    def __del__(self) -> None:
        if getattr(self, "map_fd", -1) >= 0 or getattr(self, "link_fd", -1) >= 0:
            self.detach()

    def __repr__(self) -> str:
        state = f"prog id {getattr(self, 'prog_id', '?')}" if self.attached else "detached"
        return f"RedirectProgram({self.ifname!r}, mode={self.mode!r}, {state})"


def attach_redirect_all(ifname: str | int, mode: AttachMode = "auto", *,
                        max_queues: int = 64) -> RedirectProgram:
    """Attach the redirect-all program to ``ifname`` (name or index) in ``mode``."""
    return RedirectProgram(ifname, mode, max_queues=max_queues)


__all__ = ["RedirectProgram", "attach_redirect_all"]
