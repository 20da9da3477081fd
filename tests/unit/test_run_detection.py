"""``joyride run``'s check for programs the shim cannot serve: the PATH lookup, ``#!``
scripts, secure execution, and the warning or the ``--strict`` refusal (no privileges;
synthetic ELF files)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from test_elfcheck import SHT_PROGBITS, Elf

from joyride.cli import run
from joyride.errors import EnvironmentProblem

STATIC = Elf(interp=None).build()
DYNAMIC = Elf().build()
GO = Elf(sections=[(".go.buildinfo", SHT_PROGBITS, bytes(32))]).build()


def program(directory: Path, name: str, content: bytes | str, mode: int = 0o755) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    path.chmod(mode)
    return path


@pytest.fixture
def shim(tmp_path: Path) -> Path:
    """A stand-in for the shim: 64-bit x86-64, like the synthetic programs."""
    return program(tmp_path / "lib", "libjoyride_preload.so", Elf(e_type=3, interp=None)
                   .build(), 0o644)


def test_path_lookup_as_execvp(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    program(first, "tool", STATIC, 0o644)  # not executable: skipped, as execvp does
    (first / "dir-tool").mkdir()
    program(second, "tool", DYNAMIC)
    program(second, "dir-tool", DYNAMIC)
    env = {"PATH": f"{first}:{second}"}
    assert run.find_executable("tool", env) == str(second / "tool")
    assert run.find_executable("dir-tool", env) == str(second / "dir-tool")
    assert run.find_executable("missing", env) is None
    assert run.find_executable(str(second / "tool"), {}) == str(second / "tool")
    assert run.find_executable(str(first / "tool"), {}) is None


def test_shebang_lines_split_as_the_kernel_does(tmp_path: Path) -> None:
    def line(text: str) -> tuple[str, str] | None:
        return run.shebang(str(program(tmp_path, "s", text)))

    assert line("#!/bin/sh\necho\n") == ("/bin/sh", "")
    assert line("#! /bin/sh -e -u\n") == ("/bin/sh", "-e -u")
    assert line("#!\t/usr/bin/env\tpython3  \n") == ("/usr/bin/env", "python3")
    assert line("#!/usr/bin/python3") == ("/usr/bin/python3", "")  # no newline at all
    assert line("#!\n") is None
    assert line("echo no interpreter\n") is None
    assert run.shebang(str(tmp_path / "missing")) is None


def test_env_command() -> None:
    assert run.env_command("python3") == "python3"
    assert run.env_command("-S python3 -u") == "python3"
    assert run.env_command("-S -i -u HOME LANG=C node --flag") == "node"
    assert run.env_command("-i") is None


def test_scripts_resolve_to_their_interpreter(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    static = program(bin_dir, "static-interp", STATIC)
    program(bin_dir, "dynamic-interp", DYNAMIC)
    env = {"PATH": str(bin_dir)}
    one = program(tmp_path, "one", f"#!{static} -x\n")
    two = program(tmp_path, "two", f"#!{one}\n")  # a script interpreting a script
    assert run.resolve_program(str(one), env) == str(static)
    assert run.resolve_program(str(two), env) == str(static)
    via_env = program(tmp_path, "via-env", "#!/usr/bin/env -S dynamic-interp -q\n")
    assert run.resolve_program(str(via_env), env) == str(bin_dir / "dynamic-interp")
    loop = program(tmp_path, "loop", f"#!{tmp_path / 'loop'}\n")
    assert run.resolve_program(str(loop), env) is None  # the kernel says ELOOP
    gone = program(tmp_path, "gone", "#!/no/such/interpreter\n")
    assert run.resolve_program(str(gone), env) is None


def test_unservable_programs_and_why(tmp_path: Path, shim: Path) -> None:
    bin_dir = tmp_path / "bin"
    env = {"PATH": str(bin_dir)}

    def reason(name: str, content: bytes | str) -> str | None:
        program(bin_dir, name, content)
        found = run.unservable(name, env, shim)
        return None if found is None else found.reason

    assert reason("static", STATIC) == "is statically linked"
    assert reason("go", GO) == "is a Go program (Go makes its system calls without libc)"
    go_static = Elf(interp=None, sections=[(".go.buildinfo", SHT_PROGBITS, bytes(8))])
    assert reason("go-static", go_static.build()) == (
        "is a statically linked Go program (Go makes its system calls without libc)")
    assert reason("i386", Elf(bits=32, machine=3).build()) == (
        "is a 32-bit program and the shim is 64-bit")
    assert reason("arm64", Elf(machine=183).build()) == (
        "is built for AArch64 (little-endian), the shim for x86-64 (little-endian)")
    # Served, or not judged: no finding.
    assert reason("dynamic", DYNAMIC) is None
    assert reason("text", "echo hello\n") is None
    assert reason("junk", b"\x7fELF\x02\x01\x01" + bytes(20)) is None
    assert reason("ld-linux-x86-64.so.2", STATIC) is None  # ld.so run directly
    assert run.unservable("no-such-program", env, shim) is None


def test_the_line_names_the_script_and_its_interpreter(tmp_path: Path, shim: Path) -> None:
    static = program(tmp_path / "bin", "static", STATIC)
    script = program(tmp_path, "serve.sh", f"#!{static}\n")
    found = run.unservable(str(script), {"PATH": ""}, shim)
    assert found is not None
    assert found.warning() == (
        f"joyride: {static} (the interpreter of {script}) is statically linked: the "
        "Joyride shim cannot serve it; its sockets stay on the kernel (use --strict to "
        "make this an error)")
    direct = run.unservable("static", {"PATH": str(tmp_path / "bin")}, shim)
    assert direct is not None and direct.subject() == str(static)
    error = direct.error()
    assert isinstance(error, EnvironmentProblem) and error.exit_code == 69
    assert str(error) == (f"{static} is statically linked: the Joyride shim cannot serve "
                          "it, and --strict refuses to run it on the kernel")


@pytest.fixture
def copy_of_a_program(tmp_path: Path) -> Path:
    if os.statvfs(tmp_path).f_flag & os.ST_NOSUID:
        pytest.skip(f"{tmp_path} is on a nosuid mount: set-id bits mean nothing there")
    return Path(shutil.copy(sys.executable, tmp_path / "prog"))


def test_set_id_bits_mean_secure_execution_unless_the_ids_are_ours(
        copy_of_a_program: Path) -> None:
    path = str(copy_of_a_program)
    st = os.stat(path)
    owner, group = st.st_uid, st.st_gid
    other_uid, other_gid = owner + 1, group + 1
    nnp = False
    assert run.secure_execution(path, other_uid, other_gid, nnp) is None  # no set-id bits
    copy_of_a_program.chmod(0o4755)
    assert run.secure_execution(path, other_uid, group, nnp) == (
        f"is set-uid (to uid {owner}), so the loader ignores LD_PRELOAD")
    assert run.secure_execution(path, owner, group, nnp) is None  # root running setuid-root
    assert run.secure_execution(path, other_uid, group, True) is None  # no_new_privs
    copy_of_a_program.chmod(0o2755)
    assert run.secure_execution(path, owner, other_gid, nnp) == (
        f"is set-gid (to gid {group}), so the loader ignores LD_PRELOAD")
    assert run.secure_execution(path, owner, group, nnp) is None
    copy_of_a_program.chmod(0o2745)  # set-gid without group execute: not set-gid at exec
    assert run.secure_execution(path, owner, other_gid, nnp) is None


def test_file_capabilities_mean_secure_execution_for_non_root(
        copy_of_a_program: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(copy_of_a_program)
    monkeypatch.setattr(run, "_has_file_capabilities", lambda p: p == path)
    assert run.secure_execution(path, 1000, 1000, False) == (
        "has file capabilities, so the loader ignores LD_PRELOAD")
    assert run.secure_execution(path, 0, 0, False) is None  # root gains nothing


def test_nosuid_mounts_ignore_set_id_bits(copy_of_a_program: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    copy_of_a_program.chmod(0o6755)
    path = str(copy_of_a_program)
    assert run.secure_execution(path, os.stat(path).st_uid + 1, 0, False) is not None

    class NoSuid:
        f_flag = os.ST_NOSUID

    monkeypatch.setattr(os, "statvfs", lambda p: NoSuid())
    assert run.secure_execution(path, os.stat(path).st_uid + 1, 0, False) is None


def test_run_warns_or_refuses(tmp_path: Path, shim: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """``run()`` through its exec: a warning then the exec, or ``--strict``'s error and
    no exec; a servable program gets neither."""
    monkeypatch.setenv("JOYRIDE_RUN_DIR", str(tmp_path / "run"))  # no service here
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(run, "preload_library", lambda: shim)
    static = program(tmp_path / "bin", "static", STATIC)
    program(tmp_path / "bin", "dynamic", DYNAMIC)
    execs: list[list[str]] = []

    def execvpe(file: str, argv: list[str], env: dict[str, Any]) -> None:
        execs.append(argv)

    monkeypatch.setattr(os, "execvpe", execvpe)

    def args(*argv: str, strict: bool = False) -> argparse.Namespace:
        return argparse.Namespace(argv=["--", *argv], iface=None, outgoing=False,
                                  strict=strict)

    assert run.run(args("static", "-v")) == 127  # the fake exec returned
    assert execs == [["static", "-v"]]
    err = capsys.readouterr().err.splitlines()
    assert err == [f"joyride: {static} is statically linked: the Joyride shim cannot "
                   "serve it; its sockets stay on the kernel (use --strict to make this "
                   "an error)"]
    with pytest.raises(run.UnservableProgram, match="--strict refuses to run it"):
        run.run(args("static", strict=True))
    assert len(execs) == 1
    run.run(args("dynamic", strict=True))
    assert execs[-1] == ["dynamic"] and capsys.readouterr().err == ""


def test_strict_is_a_cli_option(tmp_path: Path, shim: Path,
                                monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    from joyride.cli import main

    monkeypatch.setenv("JOYRIDE_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(run, "preload_library", lambda: shim)
    static = program(tmp_path / "bin", "static", STATIC)
    assert main(["run", "--strict", "--", str(static)]) == 69
    assert capsys.readouterr().err == (
        f"joyride: {static} is statically linked: the Joyride shim cannot serve it, and "
        "--strict refuses to run it on the kernel\n")
