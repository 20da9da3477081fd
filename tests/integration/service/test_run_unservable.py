"""``joyride run`` on programs the shim cannot serve, end to end through the CLI, with
real binaries: each reports whether it runs in secure-execution mode and whether the
shim is mapped into it, so the check is compared with what the loader really did.

No service is needed (nor a network namespace): the programs open no sockets, and
``JOYRIDE_RUN_DIR`` points at an empty directory so no service is found."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from service_helpers import JOYRIDE

pytestmark = pytest.mark.integration

SOURCE = r"""
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>

int main(void)
{
    char line[4096];
    int shim = 0;
    FILE *maps = fopen("/proc/self/maps", "r");
    while (maps && fgets(line, sizeof(line), maps))
        shim |= strstr(line, "libjoyride_preload") != NULL;
    if (maps)
        fclose(maps);
    printf("secure=%lu shim=%d\n", getauxval(AT_SECURE), shim);
    return 0;
}
"""
WARNING_TAIL = ("the Joyride shim cannot serve it; its sockets stay on the kernel (use "
                "--strict to make this an error)")
SERVED = "secure=0 shim=1"
NOT_SERVED_STATIC = "secure=0 shim=0"
NOT_SERVED_SECURE = "secure=1 shim=0"


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same C program linked dynamically and statically."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: cannot build the test programs")
    where = tmp_path_factory.mktemp("programs")
    source = where / "probe.c"
    source.write_text(SOURCE)
    dynamic, static = where / "probe-dynamic", where / "probe-static"
    subprocess.run([gcc, "-O1", "-o", str(dynamic), str(source)], check=True)
    linked = subprocess.run([gcc, "-O1", "-static", "-o", str(static), str(source)],
                            capture_output=True, text=True)
    if linked.returncode != 0:
        pytest.skip(f"gcc cannot link statically (is libc6-dev's libc.a there?): "
                    f"{linked.stderr.strip()[-300:]}")
    return {"dynamic": dynamic, "static": static}


def joyride_run(tmp_path: Path, *args: str) -> tuple[int, str, list[str]]:
    """``joyride run ARGS``: exit status, stdout, and stderr's ``joyride:`` lines."""
    env = dict(os.environ, JOYRIDE_RUN_DIR=str(tmp_path / "run"))
    proc = subprocess.run([JOYRIDE, "run", *args], capture_output=True, text=True, env=env,
                          timeout=60)
    notes = [line for line in proc.stderr.splitlines() if line.startswith("joyride:")]
    return proc.returncode, proc.stdout.strip(), notes


def test_static_program_warns_once_and_runs(programs: dict[str, Path],
                                            tmp_path: Path) -> None:
    static = programs["static"]
    status, out, notes = joyride_run(tmp_path, "--", str(static))
    assert (status, out) == (0, NOT_SERVED_STATIC)
    assert notes == [f"joyride: {static} is statically linked: {WARNING_TAIL}"]


def test_strict_refuses_a_static_program(programs: dict[str, Path], tmp_path: Path) -> None:
    static = programs["static"]
    status, out, notes = joyride_run(tmp_path, "--strict", "--", str(static))
    assert status == 69 and out == ""  # it did not run
    assert notes == [f"joyride: {static} is statically linked: the Joyride shim cannot "
                     "serve it, and --strict refuses to run it on the kernel"]


def test_a_script_whose_interpreter_is_static(programs: dict[str, Path],
                                              tmp_path: Path) -> None:
    script = tmp_path / "serve"
    script.write_text(f"#!{programs['static']}\n")
    script.chmod(0o755)
    status, out, notes = joyride_run(tmp_path, "--", str(script))
    assert (status, out) == (0, NOT_SERVED_STATIC)
    assert notes == [f"joyride: {programs['static']} (the interpreter of {script}) is "
                     f"statically linked: {WARNING_TAIL}"]


def test_served_programs_get_no_line(programs: dict[str, Path], tmp_path: Path) -> None:
    dynamic = programs["dynamic"]
    for args in (["--", str(dynamic)], ["--strict", "--", str(dynamic)],
                 # ld.so run directly has no PT_INTERP, but loads the shim
                 ["--", "/lib64/ld-linux-x86-64.so.2", str(dynamic)]):
        status, out, notes = joyride_run(tmp_path, *args)
        assert (status, out, notes) == (0, SERVED, []), args
    # By name, along PATH, and through #!/usr/bin/env.
    status, out, notes = joyride_run(tmp_path, "--strict", "--", "python3", "-c",
                                     "print('ok')")
    assert (status, out, notes) == (0, "ok", [])
    script = tmp_path / "hello.py"
    script.write_text("#!/usr/bin/env python3\nprint('ok')\n")
    script.chmod(0o755)
    status, out, notes = joyride_run(tmp_path, "--strict", "--", str(script))
    assert (status, out, notes) == (0, "ok", [])


@pytest.fixture
def setid_copy(programs: dict[str, Path], tmp_path: Path) -> Path:
    if os.statvfs(tmp_path).f_flag & os.ST_NOSUID:
        pytest.skip(f"{tmp_path} is on a nosuid mount: set-id bits mean nothing there")
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    tmp_path.chmod(0o755)
    return Path(shutil.copy(programs["dynamic"], tmp_path / "probe-setid"))


def test_set_gid_to_another_group_warns(setid_copy: Path, tmp_path: Path) -> None:
    other_gid = os.getgid() + 4242
    os.chown(setid_copy, 0, other_gid)
    setid_copy.chmod(0o2755)
    status, out, notes = joyride_run(tmp_path, "--", str(setid_copy))
    assert (status, out) == (0, NOT_SERVED_SECURE)  # the loader really ignored the shim
    assert notes == [f"joyride: {setid_copy} is set-gid (to gid {other_gid}), so the "
                     f"loader ignores LD_PRELOAD: {WARNING_TAIL}"]
    status, out, _ = joyride_run(tmp_path, "--strict", "--", str(setid_copy))
    assert (status, out) == (69, "")


def test_set_uid_to_our_own_uid_is_served(setid_copy: Path, tmp_path: Path) -> None:
    """Root running a set-uid-root program gains nothing: no secure execution."""
    os.chown(setid_copy, os.getuid(), os.getgid())
    setid_copy.chmod(0o4755)
    status, out, notes = joyride_run(tmp_path, "--strict", "--", str(setid_copy))
    assert (status, out, notes) == (0, SERVED, [])
