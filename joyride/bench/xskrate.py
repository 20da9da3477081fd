"""The raw AF_XDP packet rate on a veth bed, for scale next to the stack's figures.

Reuses ``scripts/bench_xsk.py`` (its own test bed, a redirect-all XDP program, a C
flood sender in the peer namespace, C and Python receive loops) rather than repeating
it: it runs as a subprocess and its last output line is one JSON object. The script
ships with the source tree, not the wheel; without it the figure is reported missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import joyride

BATCH = "64"  # the batch size the engine uses per poll


def script_path() -> Path:
    return Path(joyride.__file__).resolve().parent.parent / "scripts" / "bench_xsk.py"


def parse(stdout: str) -> dict[str, Any] | None:
    """rx packets/s of the C loop and of the Python batch API at batch 64, tx likewise."""
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        return None
    try:
        doc = json.loads(lines[-1])
        rx, tx = doc["rx"][BATCH], doc["tx"][BATCH]
        return {"batch": int(BATCH), "frame_len": doc.get("frame_len"),
                "mode": doc.get("mode"),
                "rx_c_pps": round(float(rx["c_pps"])),
                "rx_python_pps": round(float(rx["python_pps"])),
                "tx_c_pps": round(float(tx["c_pps"])),
                "tx_python_pps": round(float(tx["python_pps"]))}
    except (ValueError, KeyError, TypeError):
        return None


def measure(quick: bool = False) -> dict[str, Any]:
    script = script_path()
    if not script.exists():
        return {"error": f"{script} not found (run from a source checkout)"}
    seconds = "0.3" if quick else "1.0"
    try:
        proc = subprocess.run([sys.executable, str(script), "--seconds", seconds],
                              capture_output=True, timeout=600, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"error": "bench_xsk.py did not finish within 600 s"}
    out = parse(proc.stdout.decode(errors="replace"))
    if proc.returncode != 0 or out is None:
        err = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
        return {"error": f"bench_xsk.py exited {proc.returncode}: {' | '.join(err)}"}
    return out
