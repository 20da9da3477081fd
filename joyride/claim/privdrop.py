"""Least privilege for the owner of an interface: drop root after setup (issue 21).

Written for the network service, whose steps follow; an embedding process uses ``drop``
without the seccomp filter, and ``NeighbourRequests`` (``Embedded.drop_privileges``).

The service parses every frame an attacker can send, so once its privileged setup is
done (the steering program attached, maps filled, AF_XDP sockets bound and their UMEMs
registered, the state directory, the control and application sockets) it gives up
what it no longer needs, in this order:

1. hands ``app.sock``, ``control.sock`` and ``state.json`` to the service user
   (``app.sock``'s owner is the uid applications accept deliveries from,
   ``apps.service_uids``), keeping the group (``--group``); the state directory stays
   root's (the service rewrites ``state.json`` in place), so the service cannot plant
   names there that root opens later;
2. ``setgroups`` (none, or ``--group``'s), ``setresgid``, ``setresuid`` to that user.
   glibc applies these to every thread (the C data plane's transmit threads and the
   netlink worker too), and the kernel clears the permitted, effective and ambient
   capability sets of a thread whose uids all leave 0: **no capability remains**
   (``CapEff: 0``, checked here for every thread). What still needs one goes elsewhere:
   BPF map updates (``joyride ports``, address refresh) work on the map descriptors the
   service already holds (Linux 6.5+ checks no capability for map operations on a
   descriptor); managed neighbour entries (a netlink write, ``CAP_NET_ADMIN``) are asked
   of the root supervisor over a socket pair (``NEIGH_REQUEST``,
   ``joyride.service.supervisor``); undoing setup (detaching the program, releasing the
   reserved ports, removing the state) is done by the supervisor after the service
   exits;
3. ``PR_SET_NO_NEW_PRIVS``;
4. a seccomp filter (``SECCOMP_FILTER_FLAG_TSYNC``: every thread) that allows only the
   system calls of the steady state (``ALLOWED``) and kills the process
   (``SECCOMP_RET_KILL_PROCESS``) on any other: the kernel then closes the AF_XDP
   sockets, the XSKMAP empties and every frame reaches the kernel (fail-open), and the
   supervisor restarts the service as after any crash. ``bpf`` is allowed only for map
   element and info commands, ``socket`` only for ``AF_UNIX``.

The filter is built here (classic BPF, installed with ``seccomp(2)``), for x86-64; on
another architecture the service logs that it runs without one.

``JOYRIDE_DEBUG_FORBIDDEN_SYSCALL=<path>`` (debugging and tests only) makes the service
attempt a forbidden system call (``ptrace``) once ``<path>`` exists.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import pwd
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from joyride.wire.addr import text

log = logging.getLogger(__name__)

DEFAULT_USER: Final = "joyride"  # created by scripts/setup.sh (a system user and group)
TRIGGER_ENV: Final = "JOYRIDE_DEBUG_FORBIDDEN_SYSCALL"
NO_SECCOMP_ENV: Final = "JOYRIDE_DEBUG_NO_SECCOMP"
NEIGH_REQUEST: Final = b"neigh "  # + the address as text: the service asks for a managed entry

PR_SET_NO_NEW_PRIVS: Final = 38
SYS_SECCOMP_X86_64: Final = 317
SYS_PTRACE_X86_64: Final = 101
SECCOMP_SET_MODE_FILTER: Final = 1
SECCOMP_FILTER_FLAG_TSYNC: Final = 1
SECCOMP_RET_KILL_PROCESS: Final = 0x80000000
SECCOMP_RET_ALLOW: Final = 0x7FFF0000
AUDIT_ARCH_X86_64: Final = 0xC000003E
X32_SYSCALL_BIT: Final = 0x40000000

# Classic BPF opcodes (linux/filter.h).
BPF_LD_W_ABS: Final = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS
BPF_JEQ_K: Final = 0x05 | 0x10 | 0x00  # BPF_JMP | BPF_JEQ | BPF_K
BPF_JGE_K: Final = 0x05 | 0x30 | 0x00  # BPF_JMP | BPF_JGE | BPF_K
BPF_RET_K: Final = 0x06 | 0x00  # BPF_RET | BPF_K
# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6].
OFF_NR: Final = 0
OFF_ARCH: Final = 4
OFF_ARG0_LO: Final = 16  # little-endian: the low 32 bits of args[0]

# The steady state's system calls on x86-64, with their numbers (asm/unistd_64.h):
# those ``strace -f -c`` counted in every unprivileged service during the service, api
# and steer integration suites (run with ``$JOYRIDE_DEBUG_NO_SECCOMP=1``: traffic,
# ``joyride ports``, stats, application churn, restarts, stop), plus the runtime's
# basics that a rarer path may need (thread start and exit, clocks and sleeps, pipes,
# dup, fcntl, fstat, the other polls). No exec, ptrace, mount, set*id, chmod/chown,
# mkdir/unlink, kill, module, key or namespace calls.
ALLOWED: Final[dict[str, int]] = {
    "read": 0, "write": 1, "close": 3, "fstat": 5, "poll": 7, "lseek": 8, "mmap": 9,
    "mprotect": 10, "munmap": 11, "brk": 12, "rt_sigaction": 13, "rt_sigprocmask": 14,
    "rt_sigreturn": 15, "ioctl": 16, "readv": 19, "writev": 20, "select": 23,
    "fstatfs": 138,  # a ring-mode claim: the arena must be plain shmem (chan_claim.h)
    "sched_yield": 24, "mremap": 25, "madvise": 28, "dup": 32, "nanosleep": 35,
    "getpid": 39, "socket": 41, "connect": 42, "sendto": 44, "recvfrom": 45, "sendmsg": 46,
    "recvmsg": 47, "shutdown": 48, "bind": 49, "listen": 50, "getsockname": 51,
    "getpeername": 52, "socketpair": 53, "setsockopt": 54, "getsockopt": 55, "clone": 56,
    "exit": 60, "uname": 63, "fcntl": 72, "gettimeofday": 96, "getuid": 102,
    "getgid": 104, "geteuid": 107, "getegid": 108, "sigaltstack": 131, "gettid": 186,
    "futex": 202, "sched_getaffinity": 204, "restart_syscall": 219, "clock_gettime": 228,
    "clock_nanosleep": 230, "exit_group": 231, "epoll_wait": 232, "epoll_ctl": 233,
    "tgkill": 234, "openat": 257, "newfstatat": 262, "pselect6": 270, "ppoll": 271,
    "set_robust_list": 273, "epoll_pwait": 281, "accept4": 288, "eventfd2": 290,
    "epoll_create1": 291, "dup3": 292, "pipe2": 293, "prlimit64": 302, "getrandom": 318,
    "bpf": 321, "statx": 332, "rseq": 334, "clone3": 435,
    "pidfd_open": 434,  # a listening application's exit sweeps its port at once
    "pread64": 17,  # the data plane's spin looks at the run queue (/proc/loadavg)
}
# System calls allowed only for some values of their first argument.
BPF_MAP_COMMANDS: Final = frozenset({
    1, 2, 3, 4,  # BPF_MAP_LOOKUP_ELEM, _UPDATE_ELEM, _DELETE_ELEM, _GET_NEXT_KEY
    15,  # BPF_OBJ_GET_INFO_BY_FD
    24, 25, 26, 27,  # BPF_MAP_LOOKUP_BATCH, _LOOKUP_AND_DELETE_BATCH, _UPDATE_, _DELETE_
})
AF_UNIX: Final = 1
ARG0_RULES: Final[dict[str, frozenset[int]]] = {
    "bpf": BPF_MAP_COMMANDS,
    "socket": frozenset({AF_UNIX}),
}


class PrivilegeDropError(RuntimeError):
    """Dropping privileges failed: the service must not serve with them."""


@dataclass(frozen=True)
class ServiceUser:
    name: str
    uid: int
    gid: int


def resolve_user(name: str) -> ServiceUser:
    """The uid and primary gid of a user given by name or number; KeyError if unknown."""
    entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    if entry.pw_uid == 0:
        raise KeyError(f"{name!r} is root: the service must drop to another user")
    return ServiceUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def hand_over(paths: Iterable[Path], user: ServiceUser) -> None:
    """Make ``user`` the owner of ``paths`` (groups kept); missing ones are skipped."""
    for path in paths:
        try:
            os.chown(path, user.uid, -1, follow_symlinks=False)
        except FileNotFoundError:
            continue


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def change_user(user: ServiceUser, groups: Iterable[int] = ()) -> None:
    """Become ``user`` for good (every thread): supplementary ``groups`` (only these),
    gids, uids."""
    os.setgroups(sorted(set(groups)))
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)
    if os.getresuid() != (user.uid,) * 3 or os.getresgid() != (user.gid,) * 3:
        raise PrivilegeDropError("setresuid/setresgid did not take")


def capabilities(pid: int | str = "self") -> dict[str, dict[str, int]]:
    """Per thread of ``pid``: CapInh/CapPrm/CapEff/CapBnd/CapAmb, NoNewPrivs, Seccomp."""
    out: dict[str, dict[str, int]] = {}
    base = Path(f"/proc/{pid}/task")
    for task in sorted(base.iterdir()):
        fields: dict[str, int] = {}
        try:
            text = (task / "status").read_text()
        except OSError:
            continue  # the thread ended
        for line in text.splitlines():
            key, _, value = line.partition(":")
            value = value.strip()
            if key.startswith("Cap"):
                fields[key] = int(value, 16)
            elif key in ("NoNewPrivs", "Seccomp") or key in ("Uid", "Gid"):
                fields[key] = int(value.split()[0])
        out[task.name] = fields
    return out


def check_no_capabilities() -> None:
    for tid, fields in capabilities().items():
        held = {k: v for k, v in fields.items() if k in ("CapPrm", "CapEff", "CapAmb") and v}
        if held or fields.get("Uid") == 0:
            raise PrivilegeDropError(f"thread {tid} still holds {held or 'uid 0'}")


def set_no_new_privs() -> None:
    if _libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise PrivilegeDropError(f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def build_filter(allowed: dict[str, int] = ALLOWED,
                 arg0_rules: dict[str, frozenset[int]] = ARG0_RULES) -> bytes:
    """The classic BPF program (struct sock_filter[]) of the allow-list (x86-64)."""
    kill = _insn(BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS)
    allow = _insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW)
    load_nr = _insn(BPF_LD_W_ABS, 0, 0, OFF_NR)
    prog = [
        _insn(BPF_LD_W_ABS, 0, 0, OFF_ARCH),
        _insn(BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64), kill,
        load_nr,
        _insn(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT), kill,
    ]
    for name, nr in sorted(allowed.items(), key=lambda item: item[1]):
        values = arg0_rules.get(name)
        if values is None:
            prog += [_insn(BPF_JEQ_K, 0, 1, nr), allow]
            continue
        # if nr matches: load arg0, allow listed values, else kill; else skip the block
        block = [_insn(BPF_LD_W_ABS, 0, 0, OFF_ARG0_LO)]
        for value in sorted(values):
            block += [_insn(BPF_JEQ_K, 0, 1, value), allow]
        block.append(kill)
        prog.append(_insn(BPF_JEQ_K, 0, len(block), nr))
        prog += block
    prog.append(kill)
    if len(prog) > 4096:
        raise PrivilegeDropError("the seccomp filter is too long")
    return b"".join(prog)


ALLOW_ALL: Final = _insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_supported() -> bool:
    return platform.machine() == "x86_64"


def install_filter(program: bytes | None = None) -> None:
    """Install the allow-list on every thread of this process (needs no_new_privs)."""
    program = build_filter() if program is None else program
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p).value)
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    rc = libc.syscall(ctypes.c_long(SYS_SECCOMP_X86_64), ctypes.c_long(SECCOMP_SET_MODE_FILTER),
                      ctypes.c_long(SECCOMP_FILTER_FLAG_TSYNC), ctypes.byref(fprog))
    if rc != 0:
        err = ctypes.get_errno()
        what = os.strerror(err) if rc < 0 else f"thread {rc} could not be synchronised"
        raise PrivilegeDropError(f"seccomp(SECCOMP_SET_MODE_FILTER): {what}")


def drop(user: ServiceUser, *, groups: Iterable[int] = (), seccomp: bool = True) -> list[str]:
    """Steps 2-4 of the module doc; what was done, for the log. Raises on any failure
    (the caller then stops: a service that could not drop must not serve). ``groups``:
    supplementary groups to keep (``--group``, whose state directory is 0710 to it).
    ``seccomp=False`` (an embedding program, ``joyride.embed(..., drop_to=U)``) installs
    an allow-everything filter instead of the allow-list, only for what ``TSYNC`` does
    besides: no_new_privs is a per-thread flag, and the kernel sets it on every thread
    it synchronises."""
    change_user(user, groups)
    check_no_capabilities()
    set_no_new_privs()
    done = [f"uid/gid {user.uid}/{user.gid} ({user.name})", "no capabilities",
            "no_new_privs"]
    if os.environ.get(NO_SECCOMP_ENV) == "1":
        seccomp = False  # debugging only: to list a new steady state's calls with strace
        done.append(f"no seccomp filter (${NO_SECCOMP_ENV})")
    if seccomp and seccomp_supported():
        install_filter()
        done.append(f"seccomp allow-list of {len(ALLOWED)} system calls")
    elif seccomp:
        done.append(f"no seccomp filter (not built for {platform.machine()})")
    elif seccomp_supported():
        install_filter(ALLOW_ALL)  # every thread gets no_new_privs (TSYNC), nothing else
        done.append("no seccomp allow-list (an allow-all filter sets no_new_privs on "
                    "every thread)")
    return done


class ForbiddenCallTrigger:
    """Debug-only: ``$JOYRIDE_DEBUG_FORBIDDEN_SYSCALL`` names a file; once it exists,
    ``check`` attempts ``ptrace`` (not on the allow-list: the filter kills the process)."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path if path is not None else os.environ.get(TRIGGER_ENV, "")
        self._libc = _libc() if self.path else None

    def check(self) -> None:
        if self._libc is None or not os.path.exists(self.path):
            return
        log.warning("debug trigger %s: attempting a forbidden system call (ptrace)", self.path)
        self._libc.syscall(ctypes.c_long(SYS_PTRACE_X86_64), ctypes.c_long(0),
                           ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))


class NeighbourRequests:
    """The unprivileged end of the supervisor's narrow privileged helper (the service's,
    or an embedding process's once it dropped): one datagram per managed neighbour entry
    wanted (``NEIGH_REQUEST`` + the address as text, either family), sent without
    waiting (the engine sees the entry resolve through its own netlink reads)."""

    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)
        self.failures = 0

    def request(self, ip: bytes) -> bool:
        try:
            self.sock.send(NEIGH_REQUEST + text(ip).encode())
        except OSError as exc:
            if not self.failures:  # the engine retries every few ms: say it once
                log.warning("neighbour request for %s not sent (supervisor gone?): %s",
                            text(ip), exc)
            self.failures += 1
            return False
        return True
