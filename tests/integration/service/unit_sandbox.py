"""Run a command inside what ``packaging/joyride@.service`` grants, without systemd.

``python unit_sandbox.py UNIT -- CMD...`` applies to itself what systemd would apply to
the unit's main process, then executes CMD: the unit's ``LimitMEMLOCK=`` and
``LimitNOFILE=``, ``CapabilityBoundingSet=`` (every other capability leaves the bounding
set, so root's CMD starts with exactly those), ``NoNewPrivileges=``, and one seccomp
filter for ``SystemCallArchitectures=native``, ``SystemCallFilter=`` (groups expanded
by ``systemd-analyze syscall-filter``; ``@default`` added, as systemd adds it),
``SystemCallErrorNumber=``, ``RestrictAddressFamilies=`` (``socket()`` of another
family fails with EAFNOSUPPORT) and ``MemoryDenyWriteExecute=`` (systemd 252's rules:
``mmap`` with PROT_WRITE|PROT_EXEC, ``mprotect``/``pkey_mprotect`` with PROT_EXEC and
``shmat`` with SHM_EXEC fail with EPERM). The file-system directives (``ProtectSystem=``,
``ProtectHome=``, ``PrivateTmp=``) need a mount namespace and are not applied here; the
test checks the paths the service writes instead.

Used by ``test_systemd_unit.py``: systemd is not PID 1 on the test machines, and this
machine's systemd must not be touched.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import resource
import socket
import struct
import subprocess
import sys
from functools import cache
from pathlib import Path

CAPS = (  # linux/capability.h, by number
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid",
    "setuid", "setpcap", "linux_immutable", "net_bind_service", "net_broadcast",
    "net_admin", "net_raw", "ipc_lock", "ipc_owner", "sys_module", "sys_rawio",
    "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
    "sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write",
    "audit_control", "setfcap", "mac_override", "mac_admin", "syslog", "wake_alarm",
    "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
)
PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
SYS_SECCOMP = 317
AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
RET_ALLOW = 0x7FFF0000
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
# classic BPF (linux/filter.h)
LD_W_ABS, JEQ_K, JGE_K, JSET_K, AND_K, RET_K = 0x20, 0x15, 0x35, 0x45, 0x54, 0x06
OFF_NR, OFF_ARCH = 0, 4


def arg_offset(n: int) -> int:
    return 16 + 8 * n  # the low 32 bits of args[n] (little-endian)


def parse_unit(path: Path) -> dict[str, list[str]]:
    """Directive -> its values, in order (``[Service]`` etc. sections merged)."""
    out: dict[str, list[str]] = {}
    text = re.sub(r"\\\n", " ", path.read_text())
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def syscall_numbers() -> dict[str, int]:
    header = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h").read_text()
    return {m[1]: int(m[2]) for m in re.finditer(r"#define __NR_(\w+) (\d+)", header)}


@cache
def expand(name: str) -> frozenset[str]:
    """System call names of ``name`` (a call, or an ``@group`` expanded recursively)."""
    if not name.startswith("@"):
        return frozenset({name})
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], check=True,
                         capture_output=True, text=True).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        line = line.strip()
        if line and not line.startswith("#"):
            names |= expand(line)
    return frozenset(names)


def allowed_syscalls(unit: dict[str, list[str]]) -> set[str]:
    allow: set[str] = set(expand("@default"))
    deny: set[str] = set()
    for value in unit.get("SystemCallFilter", []):
        if value.startswith("~"):
            for name in value[1:].split():
                deny |= expand(name)
        else:
            for name in value.split():
                allow |= expand(name)
    return allow - deny


def insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def build(unit: dict[str, list[str]]) -> bytes:
    numbers = syscall_numbers()
    allowed = {numbers[n] for n in allowed_syscalls(unit) if n in numbers}
    error = errno.EPERM
    for value in unit.get("SystemCallErrorNumber", []):
        error = int(getattr(errno, value))
    deny = (RET_ERRNO | error) if unit.get("SystemCallErrorNumber") else RET_KILL_PROCESS
    families = {int(getattr(socket, f)) if hasattr(socket, f) else {"AF_XDP": 44}[f]
                for v in unit.get("RestrictAddressFamilies", []) for f in v.split()}
    mdwe = unit.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes"

    def ret(k: int) -> bytes:
        return insn(RET_K, 0, 0, k)

    def verdict(nr: int) -> int:
        return RET_ALLOW if nr in allowed else deny

    blocks: list[tuple[int, list[bytes]]] = []  # (nr, its block: taken when nr matches)
    if families:
        block = [insn(LD_W_ABS, 0, 0, arg_offset(0))]
        for fam in sorted(families):
            block += [insn(JEQ_K, 0, 1, fam), ret(verdict(numbers["socket"]))]
        block.append(ret(RET_ERRNO | errno.EAFNOSUPPORT))
        blocks.append((numbers["socket"], block))
    if mdwe:
        for name, arg, mask in (("mmap", 2, PROT_WRITE | PROT_EXEC), ("mprotect", 2, PROT_EXEC),
                                ("pkey_mprotect", 2, PROT_EXEC), ("shmat", 2, SHM_EXEC)):
            nr = numbers[name]
            block = [insn(LD_W_ABS, 0, 0, arg_offset(arg)), insn(AND_K, 0, 0, mask),
                     insn(JEQ_K, 0, 1, mask), ret(RET_ERRNO | errno.EPERM), ret(verdict(nr))]
            blocks.append((nr, block))
    special = {nr for nr, _ in blocks}
    prog = [insn(LD_W_ABS, 0, 0, OFF_ARCH), insn(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
            ret(RET_KILL_PROCESS), insn(LD_W_ABS, 0, 0, OFF_NR),
            insn(JGE_K, 0, 1, X32_SYSCALL_BIT), ret(deny)]
    for nr, block in blocks:
        prog.append(insn(JEQ_K, 0, len(block), nr))
        prog += block
        prog.append(insn(LD_W_ABS, 0, 0, OFF_NR))  # blocks load an argument: reload nr
    for nr in sorted(allowed - special):
        prog += [insn(JEQ_K, 0, 1, nr), ret(RET_ALLOW)]
    prog.append(ret(deny))
    assert len(prog) < 4096
    return b"".join(prog)


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def apply(unit: dict[str, list[str]]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for key, res in (("LimitMEMLOCK", resource.RLIMIT_MEMLOCK),
                     ("LimitNOFILE", resource.RLIMIT_NOFILE)):
        for value in unit.get(key, []):
            n = resource.RLIM_INFINITY if value == "infinity" else int(value)
            hard = resource.getrlimit(res)[1]
            if hard != resource.RLIM_INFINITY and (n == resource.RLIM_INFINITY or n > hard):
                n = hard  # raising it needs CAP_SYS_RESOURCE, which a test may lack
            resource.setrlimit(res, (n, n))
    if unit.get("CapabilityBoundingSet"):
        keep = {c.lower().removeprefix("cap_")
                for v in unit["CapabilityBoundingSet"] for c in v.split()}
        unknown = keep - set(CAPS)
        assert not unknown, unknown
        for number, name in enumerate(CAPS):
            if name not in keep and libc.prctl(PR_CAPBSET_DROP, number, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), f"PR_CAPBSET_DROP {name}")
    if unit.get("NoNewPrivileges", ["no"])[-1] == "yes":
        assert libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    program = build(unit)
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p).value)
    libc.syscall.restype = ctypes.c_long
    if libc.syscall(ctypes.c_long(SYS_SECCOMP), ctypes.c_long(1), ctypes.c_long(0),
                    ctypes.byref(fprog)) != 0:
        raise OSError(ctypes.get_errno(), "seccomp")


def main(argv: list[str]) -> None:
    unit_path, sep, *cmd = argv
    assert sep == "--" and cmd
    apply(parse_unit(Path(unit_path)))
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
