"""Claiming ring mode (cffi_build/chan_claim.h): the arena, the claim, the verdict.

``cffi_build/chan_claim_test.c`` runs each case under AddressSanitizer and UBSan: a
claim accepted and released (two slots of one arena share one mapping, trimmed when
idle); a second claim of a live slot refused without a byte written there; every
malformed or hostile claim refused with its reason and no descriptor leaked (short,
wrong magic or version, capacities off the grid, an offset past the arena or wrapping,
no descriptor, an unsealed memfd, a file that is no memfd, the arena opened read-only
before and after the service mapped it, a slot larger than the arena, a claim after
stream bytes, a full table of arenas); a claim that asks for the process's bell (refused
without one, or from another arena than the bell's; with one, its tokens go to the bell,
the eventfd written only while the application is armed, a full queue counted as lost;
the door: the service's arm finds a tx_eof rung while it was unarmed); a channel born
armed for the bell when asked before the service lays it out, for a token when asked too
late or withdrawn, with both after a withdrawal that comes after the birth; a connection's
stray descriptors closed; and two processes, the application asleep on its
verdict (futex) until the service decides, then bytes both ways through the rings.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SOURCE = ROOT / "cffi_build" / "chan_claim_test.c"
CASES = ("accept_release", "busy_slot", "refusals", "recv", "two_processes",
         "wait_times_out", "bell", "arena_bell", "birth")

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    exe = tmp_path_factory.mktemp("claim") / "chan_claim_test"
    cc = subprocess.run(
        ["gcc", "-O1", "-g", "-std=gnu11", "-Wall", "-Wextra", "-Werror",
         "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         "-fno-omit-frame-pointer", f"-I{ROOT / 'cffi_build'}", str(SOURCE), "-o", str(exe)],
        capture_output=True, text=True, timeout=120,
    )
    if cc.returncode != 0 and "cannot find" in cc.stderr and "san" in cc.stderr.lower():
        pytest.skip(f"no sanitizer runtime: {cc.stderr[:200]}")
    assert cc.returncode == 0, cc.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120,
                         env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1"})
    lines = {}
    for line in out.stdout.splitlines():
        if line.startswith("case "):
            name, _, verdict = line[5:].partition(" ")
            lines[name] = verdict
    assert "ERROR: AddressSanitizer" not in out.stderr, out.stderr[-3000:]
    assert "runtime error" not in out.stderr, out.stderr[-3000:]
    assert out.returncode in (0, 1), out.stdout + out.stderr[-3000:]
    return lines


@pytest.mark.parametrize("case", CASES)
def test_claim_case(results: dict[str, str], case: str) -> None:
    assert results.get(case) == "ok", results.get(case, "did not run")
