"""XDP attachment over rtnetlink and BPF object introspection over bpf(2).

BCC compiles and loads the program; attaching is done here, over netlink, because the
decisions Joyride must make need more than BCC offers: which program (by name and id)
is on the interface now, replacing only the program that was inspected
(``XDP_FLAGS_REPLACE`` with ``IFLA_XDP_EXPECTED_FD``, Linux 5.7+), and errors that say
what happened. Everything acts on the network namespace of the calling thread.

Every rtnetlink request runs on a netlink worker thread started for it
(``joyride.engine.netlink.on_netlink_thread``): pyroute2's synchronous API cannot run
in a thread whose asyncio loop (or uvloop's) is running, which is where ``embed()``
inside ``async def main()`` calls it from; the worker has no loop, and starts in the
caller's namespace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from joyride.errors import EnvironmentProblem, JoyrideError, PrivilegeError

T = TypeVar("T")

# include/uapi/linux/if_link.h
XDP_FLAGS_UPDATE_IF_NOEXIST: Final = 1 << 0
XDP_FLAGS_SKB_MODE: Final = 1 << 1
XDP_FLAGS_DRV_MODE: Final = 1 << 2
XDP_FLAGS_REPLACE: Final = 1 << 4
MODE_FLAGS: Final = {"native": XDP_FLAGS_DRV_MODE, "skb": XDP_FLAGS_SKB_MODE}
# IFLA_XDP_ATTACHED values, as pyroute2 names them.
_ATTACHED_MODES: Final = {"xdp": "native", "xdpgeneric": "skb", "xdpoffload": "hw",
                          "xdpmulti": "multi"}

# include/uapi/linux/bpf.h: commands and the offsets of bpf_prog_info / bpf_map_info.
_SYS_BPF: Final = 321  # x86_64
_BPF_PROG_GET_FD_BY_ID: Final = 13
_BPF_MAP_GET_FD_BY_ID: Final = 14
_BPF_OBJ_GET_INFO_BY_FD: Final = 15
_BPF_PROG_TEST_RUN: Final = 10
_OBJ_NAME_LEN: Final = 16
_INFO_BUF: Final = 512  # larger than either info struct; the kernel wants the tail zero

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


class XdpError(JoyrideError):
    """The kernel refused an XDP attach or detach."""


class InterfaceNotFound(JoyrideError):
    """No interface of that name in this network namespace."""

    exit_code = 2


@dataclass(frozen=True)
class AttachedProgram:
    """The XDP program an interface runs now."""

    prog_id: int
    mode: str  # native | skb | hw | multi
    name: str  # the program's BPF object name ("" when it could not be read)
    map_ids: tuple[int, ...] = ()


def ifindex(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError as exc:
        raise InterfaceNotFound(
            f"no interface {ifname!r} in this network namespace (see `ip link`)") from exc


def _rtnl(request: Callable[[Any], T]) -> T:
    """``request(ipr)`` with a fresh ``IPRoute``, opened, used and closed on a netlink
    worker in the calling thread's namespace; its result (materialized there) or its
    exception (``NetlinkError``) comes back to the caller."""
    # Imported here: importing joyride.engine loads the whole engine, which the CLI
    # commands that only import steering's port syntax should not pay for.
    from joyride.engine.netlink import on_netlink_thread

    def run() -> T:
        with IPRoute() as ipr:
            return request(ipr)

    return on_netlink_thread(run)


def query(index: int) -> AttachedProgram | None:
    """The program attached to interface ``index``, or None."""
    links = _rtnl(lambda ipr: list(ipr.get_links(index)))
    xdp = links[0].get_attr("IFLA_XDP") if links else None
    if not xdp:
        return None
    attrs = dict(xdp["attrs"])
    mode = _ATTACHED_MODES.get(attrs.get("IFLA_XDP_ATTACHED") or "", "")
    prog_id = int(attrs.get("IFLA_XDP_PROG_ID") or 0)
    if not mode or not prog_id:
        return None
    name, map_ids = prog_info(prog_id)
    return AttachedProgram(prog_id, mode, name, map_ids)


def _set_xdp(index: int, fd: int, flags: int, expected_fd: int | None = None) -> None:
    attrs: list[tuple[str, int]] = [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", flags)]
    if expected_fd is not None:
        attrs.append(("IFLA_XDP_EXPECTED_FD", expected_fd))
    _rtnl(lambda ipr: ipr.link("set", index=index, IFLA_XDP={"attrs": attrs}))


def attach(index: int, prog_fd: int, mode: str, *, replace: AttachedProgram | None) -> None:
    """Attach ``prog_fd`` in ``mode`` (native or skb).

    With ``replace`` None the attach fails if any program is there (no silent takeover);
    otherwise it atomically swaps out exactly that program, or fails if it changed.
    """
    flags = MODE_FLAGS[mode]
    try:
        if replace is None:
            _set_xdp(index, prog_fd, flags | XDP_FLAGS_UPDATE_IF_NOEXIST)
        elif replace.mode != mode:
            # The kernel keeps native and generic XDP apart ("can't be active at the
            # same time"): take the old program off in its mode, then attach.
            detach(index, replace)
            _set_xdp(index, prog_fd, flags | XDP_FLAGS_UPDATE_IF_NOEXIST)
        else:
            with prog_fd_by_id(replace.prog_id) as old_fd:
                _set_xdp(index, prog_fd, flags | XDP_FLAGS_REPLACE, expected_fd=old_fd)
    except NetlinkError as exc:
        raise _explain(exc, f"attaching XDP ({mode} mode)") from exc


def detach(index: int, prog: AttachedProgram) -> None:
    """Remove ``prog`` from the interface; a no-op if another program replaced it."""
    flags = MODE_FLAGS.get(prog.mode)
    if flags is None:
        raise XdpError(f"cannot detach an XDP program attached in {prog.mode} mode")
    try:
        with prog_fd_by_id(prog.prog_id) as old_fd:
            _set_xdp(index, -1, flags | XDP_FLAGS_REPLACE, expected_fd=old_fd)
    except BpfObjectGone:
        return
    except NetlinkError as exc:
        if exc.code == errno.EEXIST:  # EXPECTED_FD mismatch: someone else's program now
            return
        if exc.code == errno.ENODEV:  # the interface is gone, and its program with it
            return
        raise _explain(exc, "detaching XDP") from exc


def _explain(exc: NetlinkError, what: str) -> JoyrideError:
    code = exc.code
    if code == errno.EPERM:
        return PrivilegeError(f"{what} needs root (CAP_NET_ADMIN and CAP_BPF): run it as root")
    if code == errno.EEXIST:
        return XdpError(f"{what}: another XDP program is attached (in this or another mode)")
    if code == errno.ERANGE:
        return XdpError(f"{what}: the MTU is too large for XDP on this driver; lower it")
    if code == errno.EOPNOTSUPP:
        return XdpError(f"{what}: the driver does not support this XDP mode")
    return XdpError(f"{what}: {os.strerror(code)} (errno {code})")


# -- bpf(2) introspection ---------------------------------------------------------------


class BpfObjectGone(JoyrideError):
    """The BPF object with that id no longer exists."""


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    ret = _libc.syscall(_SYS_BPF, cmd, attr, len(attr))
    if ret < 0:
        err = ctypes.get_errno()
        if err == errno.ENOENT:
            raise BpfObjectGone(f"BPF object gone (bpf cmd {cmd})")
        if err == errno.EPERM:
            raise PrivilegeError("reading BPF objects needs root (CAP_SYS_ADMIN): run it as root")
        raise EnvironmentProblem(f"bpf(cmd {cmd}) failed: {os.strerror(err)}")
    return int(ret)


def _fd_by_id(cmd: int, obj_id: int) -> int:
    attr = ctypes.create_string_buffer(obj_id.to_bytes(4, "little"), 16)
    return _bpf(cmd, attr)


@contextmanager
def prog_fd_by_id(prog_id: int) -> Iterator[int]:
    fd = _fd_by_id(_BPF_PROG_GET_FD_BY_ID, prog_id)
    try:
        yield fd
    finally:
        os.close(fd)


def _info(fd: int, info: ctypes.Array[ctypes.c_char]) -> None:
    attr = ctypes.create_string_buffer(16)
    ctypes.memmove(attr, fd.to_bytes(4, "little") + len(info).to_bytes(4, "little"), 8)
    ptr = ctypes.addressof(info).to_bytes(8, "little")
    ctypes.memmove(ctypes.addressof(attr) + 8, ptr, 8)
    _bpf(_BPF_OBJ_GET_INFO_BY_FD, attr)


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def prog_info(prog_id: int, max_maps: int = 16) -> tuple[str, tuple[int, ...]]:
    """(name, map ids) of a loaded program; ("", ()) if it vanished meanwhile."""
    try:
        with prog_fd_by_id(prog_id) as fd:
            ids = (ctypes.c_uint32 * max_maps)()
            info = ctypes.create_string_buffer(_INFO_BUF)
            base = ctypes.addressof(info)
            # bpf_prog_info: nr_map_ids at 52 (in: capacity), map_ids pointer at 56.
            ctypes.memmove(base + 52, max_maps.to_bytes(4, "little"), 4)
            ctypes.memmove(base + 56, ctypes.addressof(ids).to_bytes(8, "little"), 8)
            _info(fd, info)
            nr_maps = min(int.from_bytes(info.raw[52:56], "little"), max_maps)
            return _cstr(info.raw[64:64 + _OBJ_NAME_LEN]), tuple(ids[:nr_maps])
    except BpfObjectGone:
        return "", ()


def prog_exists(prog_id: int) -> bool:
    try:
        with prog_fd_by_id(prog_id):
            return True
    except BpfObjectGone:
        return False


def map_exists(map_id: int) -> bool:
    try:
        os.close(_fd_by_id(_BPF_MAP_GET_FD_BY_ID, map_id))
    except BpfObjectGone:
        return False
    return True


def map_name(map_id: int) -> str:
    """The BPF object name of a map ("" if it vanished)."""
    try:
        fd = _fd_by_id(_BPF_MAP_GET_FD_BY_ID, map_id)
    except BpfObjectGone:
        return ""
    try:
        info = ctypes.create_string_buffer(_INFO_BUF)
        _info(fd, info)
        return _cstr(info.raw[24:24 + _OBJ_NAME_LEN])  # bpf_map_info.name
    finally:
        os.close(fd)


def test_run(prog_fd: int, frame: bytes, *, ifindex: int = 0, rx_queue: int = 0) -> int:
    """Run an XDP program once on ``frame`` (BPF_PROG_TEST_RUN); return its action.

    The program's maps and counters are the live ones: this is how the parser is
    exercised on frames no veth would carry (shorter than an Ethernet header).
    """
    return timed_run(prog_fd, frame, ifindex=ifindex, rx_queue=rx_queue)[0]


def timed_run(prog_fd: int, frame: bytes, *, ifindex: int = 0, rx_queue: int = 0,
              repeat: int = 1) -> tuple[int, int]:
    """(action, mean nanoseconds per run) of ``repeat`` in-kernel runs on ``frame``."""
    data = ctypes.create_string_buffer(frame, max(len(frame), 1))
    # struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    # egress_ifindex. A queue index needs an ingress device (kernel rule).
    ctx = ctypes.create_string_buffer(
        b"".join(v.to_bytes(4, "little") for v in (0, len(frame), 0, ifindex, rx_queue, 0)))
    attr = ctypes.create_string_buffer(80)
    base = ctypes.addressof(attr)

    def put(offset: int, value: int, size: int) -> None:
        ctypes.memmove(base + offset, value.to_bytes(size, "little"), size)

    # union bpf_attr, test member: prog_fd@0 retval@4 data_size_in@8 data_size_out@12
    # data_in@16 data_out@24 repeat@32 duration@36 ctx_size_in@40 ctx_size_out@44
    # ctx_in@48 ctx_out@56.
    put(0, prog_fd, 4)
    put(8, len(frame), 4)
    put(16, ctypes.addressof(data), 8)
    put(32, repeat, 4)
    put(40, len(ctx), 4)
    put(48, ctypes.addressof(ctx), 8)
    _bpf(_BPF_PROG_TEST_RUN, attr)
    return int.from_bytes(attr.raw[4:8], "little"), int.from_bytes(attr.raw[36:40], "little")
