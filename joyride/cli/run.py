"""``joyride run [--iface IFACE] [--outgoing] [--strict] -- CMD ARGS...``: an
unmodified program served by Joyride.

The program runs with the preload shim (``LD_PRELOAD``), which routes its sockets that
listen on an accelerated port (and, with ``--outgoing``, its outgoing IPv4 TCP
connections) to the interface's network service; everything else stays with the
kernel. Without a service the shim says so once and the program runs on the kernel.

Some programs the shim cannot serve at all, and they would silently run on the kernel:
a statically linked one (the dynamic loader, which reads ``LD_PRELOAD``, never runs), a
Go program (its runtime makes system calls without libc), one built for another ELF
class or machine than the shim, and one that runs in secure-execution mode (set-uid or
set-gid to another user or group, or file capabilities for a non-root caller: the
loader then ignores a preload given by path). ``joyride run`` finds the program as
``execvp`` would, follows ``#!`` scripts to their interpreter (and ``env``'s command),
reads its ELF headers (:mod:`joyride.elfcheck`) and says so in one line, or, with
``--strict``, refuses to run it. A program it cannot read or judge runs with no word.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from joyride import elfcheck

if TYPE_CHECKING:
    from joyride.claim.statedir import StateDir
from joyride.errors import EnvironmentProblem, JoyrideError

PRELOAD_PREFIX = "libjoyride_preload"  # + ".so" (dev build) or the ABI suffix (package)
# Interpreters followed from a #! line (the kernel allows 4 nested ones: BINPRM depth).
MAX_SCRIPT_DEPTH: Final = 4
SHEBANG_BYTES: Final = 256  # what the kernel reads of a script (BINPRM_BUF_SIZE)
# env(1) options that take the next word as their argument.
_ENV_OPTIONS_WITH_ARGUMENT: Final = frozenset({"-u", "--unset", "-C", "--chdir"})
_MACHINES: Final = {3: "i386", 8: "MIPS", 20: "PowerPC", 21: "PowerPC64", 22: "S/390",
                    40: "ARM", 62: "x86-64", 183: "AArch64", 243: "RISC-V"}


class UnservableProgram(EnvironmentProblem):
    """``--strict``: the program would run, but not served by Joyride."""


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "run", help="run an unmodified program with its sockets served by Joyride",
        description="Run CMD with the Joyride preload shim: sockets listening on an "
                    "accelerated port are served by the interface's network service.")
    parser.add_argument("--iface", default=None,
                        help="interface whose service to use (default: the only attached "
                             "one in this network namespace)")
    parser.add_argument("--outgoing", action="store_true",
                        help="also carry the program's outgoing IPv4 TCP connections")
    parser.add_argument("--strict", action="store_true",
                        help="refuse to run a program the shim cannot serve (statically "
                             "linked, Go, set-uid...) instead of warning and running it "
                             "on the kernel")
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS...")
    parser.set_defaults(func=run)


def preload_library() -> Path:
    """The shim shipped inside the package (built by the package build)."""
    import joyride

    here = Path(joyride.__file__).resolve().parent
    found = sorted(here.glob(f"{PRELOAD_PREFIX}*.so"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise EnvironmentProblem(f"the preload shim {here}/{PRELOAD_PREFIX}*.so is missing: "
                                 "reinstall Joyride (`pip install .` builds it from preload/)")
    return found[-1]  # the newest build


def _alive(state_dir: StateDir) -> bool:
    """Whether the directory's service is running; True when this user cannot tell
    (its liveness lock is root's), so the choice stays the user's."""
    try:
        return bool(state_dir.service_alive())
    except OSError:
        return True


def environment(iface: str | None, outgoing: bool,
                base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment CMD runs in."""
    from joyride.claim.statedir import StateDir

    env = dict(os.environ if base is None else base)
    lib = str(preload_library())
    existing = env.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = f"{lib} {existing}".strip() if lib not in existing else existing
    if iface is not None:
        env["JOYRIDE_SOCKET"] = str(StateDir(iface).app_path)
    else:
        # Only live services: a SIGKILLed one's directory outlives it (and a namespace
        # that reuses a dead one's inode would inherit it).
        found = [d for d in StateDir.all_in_netns() if d.app_path.exists() and _alive(d)]
        if len(found) > 1:
            names = ", ".join(d.ifname for d in found)
            raise JoyrideError(f"several Joyride services here ({names}): choose one "
                               "with --iface")
        if found:
            env["JOYRIDE_SOCKET"] = str(found[0].app_path)
    if outgoing:
        env["JOYRIDE_OUTGOING"] = "1"
    return env


@dataclass(frozen=True)
class Unservable:
    """Why the shim cannot serve a program."""

    program: str  # the file that runs: after the PATH lookup and any #! scripts
    reason: str  # completes "<program> ...", e.g. "is statically linked"
    script: str | None = None  # the #! script CMD named, when program is its interpreter

    def subject(self) -> str:
        if self.script is None:
            return self.program
        return f"{self.program} (the interpreter of {self.script})"

    def warning(self) -> str:
        return (f"joyride: {self.subject()} {self.reason}: the Joyride shim cannot serve "
                "it; its sockets stay on the kernel (use --strict to make this an error)")

    def error(self) -> UnservableProgram:
        return UnservableProgram(f"{self.subject()} {self.reason}: the Joyride shim cannot "
                                 "serve it, and --strict refuses to run it on the kernel")


def find_executable(command: str, env: Mapping[str, str]) -> str | None:
    """The file ``os.execvpe(command, ..., env)`` runs: ``command`` itself when it holds
    a slash, else the first executable regular file of that name along env's PATH."""
    if "/" in command:
        return command if _executable(command) else None
    for directory in os.get_exec_path(env):
        candidate = os.path.join(directory, command)
        if _executable(candidate):
            return candidate
    return None


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def shebang(path: str) -> tuple[str, str] | None:
    """``(interpreter, argument)`` of a ``#!`` script as the kernel splits its first
    line (one optional argument: the rest of the line), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(SHEBANG_BYTES)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].replace(b"\t", b" ").strip(b" ")
    if not line:
        return None
    interpreter, _, argument = line.partition(b" ")
    return (interpreter.decode("utf-8", "surrogateescape"),
            argument.strip(b" ").decode("utf-8", "surrogateescape"))


def env_command(argument: str) -> str | None:
    """The command ``env`` runs, given a ``#!/usr/bin/env ...`` line's argument: the
    first word that is not an option or a NAME=VALUE (``-S`` splits the words)."""
    words = argument.split() if argument.startswith("-") else [argument]
    skip_next = False
    for word in words:
        if skip_next:
            skip_next = False
        elif word in _ENV_OPTIONS_WITH_ARGUMENT:
            skip_next = True
        elif not word.startswith("-") and "=" not in word:
            return word
    return None


def resolve_program(command: str, env: Mapping[str, str]) -> str | None:
    """The binary that ends up running for ``command``: found on PATH, then through
    ``#!`` interpreters (and the command of ``#!/usr/bin/env CMD``). None if unknown."""
    path = find_executable(command, env)
    for _ in range(MAX_SCRIPT_DEPTH + 1):
        if path is None:
            return None
        line = shebang(path)
        if line is None:
            return path
        interpreter, argument = line
        if os.path.basename(interpreter) == "env" and argument:
            target = env_command(argument)
            # env passes the environment (LD_PRELOAD too) on: what it runs is what counts
            path = None if target is None else find_executable(target, env)
        else:
            path = interpreter if _executable(interpreter) else None
    return None  # deeper than the kernel follows


def _is_dynamic_loader(path: str) -> bool:
    """ld.so run directly (``ld-linux-x86-64.so.2 PROGRAM``) has no PT_INTERP itself
    but loads PROGRAM and its preloads: not a static program."""
    names = {os.path.basename(path), os.path.basename(os.path.realpath(path))}
    return any(n.startswith(("ld-linux", "ld64.so", "ld.so")) for n in names)


def secure_execution(path: str, uid: int | None = None, gid: int | None = None,
                     no_new_privs: bool | None = None) -> str | None:
    """Why the program would run in secure-execution mode (``AT_SECURE``), in which the
    dynamic loader ignores ``LD_PRELOAD`` entries given by path, or None.

    As the kernel decides it at ``execve`` (``bprm_fill_uid``, ``cap_bprm_creds_from_
    file``): set-uid to another user than the caller's real uid; set-gid (with group
    execute) to another group than its real gid; file capabilities, for a caller that
    is not root. None of them count on a ``nosuid`` mount, nor the set-id bits under
    ``no_new_privs``. ``uid``/``gid`` default to this process's real ids."""
    uid = os.getuid() if uid is None else uid
    gid = os.getgid() if gid is None else gid
    try:
        st = os.stat(path)
        if os.statvfs(path).f_flag & os.ST_NOSUID:
            return None
    except OSError:
        return None
    if not (_no_new_privs() if no_new_privs is None else no_new_privs):
        if st.st_mode & stat.S_ISUID and st.st_uid != uid:
            return f"is set-uid (to uid {st.st_uid}), so the loader ignores LD_PRELOAD"
        setgid = stat.S_ISGID | stat.S_IXGRP
        if st.st_mode & setgid == setgid and st.st_gid != gid:
            return f"is set-gid (to gid {st.st_gid}), so the loader ignores LD_PRELOAD"
    if uid != 0 and _has_file_capabilities(path):
        return "has file capabilities, so the loader ignores LD_PRELOAD"
    return None


def _no_new_privs() -> bool:
    try:
        with open("/proc/self/status") as f:
            return any(line.split() == ["NoNewPrivs:", "1"] for line in f)
    except OSError:
        return False


def _has_file_capabilities(path: str) -> bool:
    try:
        return bool(os.getxattr(path, "security.capability"))
    except OSError:  # ENODATA (none), ENOTSUP (the file system has no xattrs), ...
        return False


def unservable(command: str, env: Mapping[str, str],
               shim: Path | None = None) -> Unservable | None:
    """Why the shim cannot serve ``command`` run with ``env``, or None when it can (or
    when the program cannot be found or judged)."""
    program = resolve_program(command, env)
    if program is None or _is_dynamic_loader(program):
        return None
    info = elfcheck.read(program)
    if info is None:
        return None
    reason: str | None = None
    if info.go:
        linkage = "statically linked " if info.static else ""
        reason = f"is a {linkage}Go program (Go makes its system calls without libc)"
    elif info.static:
        reason = "is statically linked"
    elif shim is not None and (own := elfcheck.read(shim)) is not None:
        if info.bits != own.bits:
            reason = f"is a {info.bits}-bit program and the shim is {own.bits}-bit"
        elif info.machine != own.machine or info.little_endian != own.little_endian:
            reason = (f"is built for {_machine(info)}, the shim for {_machine(own)}")
    if reason is None:
        reason = secure_execution(program)
    if reason is None:
        return None
    named = find_executable(command, env)
    return Unservable(program, reason, None if named == program else named)


def _machine(info: elfcheck.ElfInfo) -> str:
    name = _MACHINES.get(info.machine, f"ELF machine {info.machine}")
    return f"{name} ({'little' if info.little_endian else 'big'}-endian)"


def run(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise JoyrideError("nothing to run: joyride run [--iface IFACE] -- CMD ARGS...")
    env = environment(args.iface, args.outgoing)
    finding = unservable(argv[0], env, preload_library())
    if finding is not None:
        if getattr(args, "strict", False):
            raise finding.error()
        print(finding.warning(), file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError as exc:
        raise JoyrideError(f"{argv[0]}: command not found") from exc
    except PermissionError as exc:
        raise JoyrideError(f"{argv[0]}: permission denied") from exc
    except OSError as exc:  # ENOEXEC (a script without #!), ELOOP, ...
        raise JoyrideError(f"{argv[0]}: cannot run it: {exc.strerror}") from exc
    return 127  # not reached: exec replaced this process
