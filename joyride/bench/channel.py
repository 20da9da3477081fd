"""Channel microbenchmark: the shared-memory channel (cffi_build/chan.h) against the
unix socket the service uses as each connection's application channel today.

``python -m joyride.bench.channel [--repeat N] [--rr N] [--bulk N] [--json F]`` builds
``cffi_build/chan_bench.c`` with gcc and runs it between two processes, no network, no
root: a 64-byte request and response (the application writes, the service answers)
and 64 KiB chunks streamed from the service to the application, over

* ``unix``: a socketpair with read/write, today's channel;
* ``ring``: chan.h's rings, both sides asleep when idle (tokens, doorbells);
* ``ring-poll``: chan.h's rings with the service side polling (it never sleeps, so the
  application never rings it; its CPU counts whole).

Alternating repetitions, medians; wall and CPU time (both processes) per operation, and
each against ``unix``. It measures what issue 17's channel can save before it is
wired into the service and the shim (docs/channels.md).

It also measures what entering ring mode costs a connection
(``cffi_build/chan_claim_bench.c``, ``--claims N``): a memfd per connection against a
slot of the application's arena (``cffi_build/chan_claim.h``). That cost is paid once
per connection, so it is what short connections feel. Beside them, the whole life of a
connection's channel in service mode (the delivery's socket, bind and connect, the
accept, the claim, the hang-up), which the kernel's stack does not pay at all, and the
kernel's whole TCP connection on loopback, whose server half is what the channel and
the data plane's TCP together replace (docs/channels.md, "What a new connection cannot
shed").
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).resolve().parents[2] / "cffi_build" / "chan_bench.c"
CLAIM_SOURCE = SOURCE.with_name("chan_claim_bench.c")
TRANSPORTS = ("unix", "ring", "ring-poll")
CLAIM_METHODS = ("memfd", "arena", "connection", "tcp")


def build(workdir: Path, source: Path = SOURCE) -> Path:
    if shutil.which("gcc") is None:
        raise SystemExit("the channel benchmark needs gcc")
    exe = workdir / source.stem
    subprocess.run(["gcc", "-O2", "-std=gnu11", f"-I{source.parent}", str(source), "-o",
                    str(exe)], check=True, capture_output=True, text=True)
    return exe


def measure_claims(repeat: int, count: int) -> dict[str, Any]:
    """Per-connection cost of each way into ring mode, alternating, medians."""
    samples: dict[str, list[dict[str, Any]]] = {m: [] for m in CLAIM_METHODS}
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(Path(tmp), CLAIM_SOURCE)
        for _ in range(repeat):
            for method in CLAIM_METHODS:
                out = subprocess.run([str(exe), method, str(count)], check=True,
                                     capture_output=True, text=True, timeout=300)
                samples[method].append(json.loads(out.stdout))
    medians = {m: {k: statistics.median(r[k] for r in runs)
                   for k in ("wall_us_per_claim", "cpu_us_per_claim")}
               for m, runs in samples.items()}
    return {"count": count, "medians": medians, "samples": samples}


CLAIM_NAMES = {
    "memfd": "claim: a memfd per connection",
    "arena": "claim: a slot of the process's arena",
    "connection": "the whole channel: delivery, accept, arena claim, rings, hang-up",
    "tcp": "the kernel's TCP connection on loopback, both ends",
}


def claims_table(result: dict[str, Any]) -> str:
    """Each method's CPU per connection, against the memfd claim and against the
    kernel's whole loopback TCP connection."""
    med = result["medians"]
    memfd, tcp = med["memfd"]["cpu_us_per_claim"], med["tcp"]["cpu_us_per_claim"]
    lines = ["| per connection | CPU µs | vs a memfd claim | vs the kernel's TCP connection |",
             "|---|---:|---:|---:|"]
    for method, row in med.items():
        cpu = row["cpu_us_per_claim"]
        lines.append(f"| {CLAIM_NAMES[method]} | {cpu:.2f} | {cpu / memfd:.2f}× | "
                     f"{cpu / tcp:.2f}× |")
    return "\n".join(lines)


def run_once(exe: Path, transport: str, workload: str, count: int) -> dict[str, Any]:
    out = subprocess.run([str(exe), transport, workload, str(count)], check=True,
                         capture_output=True, text=True, timeout=300)
    return dict(json.loads(out.stdout))


def measure(repeat: int, counts: dict[str, int]) -> dict[str, Any]:
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        w: {t: [] for t in TRANSPORTS} for w in counts}
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(Path(tmp))
        for _ in range(repeat):
            for workload, count in counts.items():
                for transport in TRANSPORTS:
                    samples[workload][transport].append(
                        run_once(exe, transport, workload, count))
    summary: dict[str, Any] = {}
    for workload, by_transport in samples.items():
        rows = {}
        for transport, runs in by_transport.items():
            rows[transport] = {
                key: statistics.median(r[key] for r in runs)
                for key in ("wall_us_per_op", "cpu_us_per_op")}
        base = rows["unix"]
        for row in rows.values():
            row["wall_vs_unix"] = row["wall_us_per_op"] / base["wall_us_per_op"]
            row["cpu_vs_unix"] = row["cpu_us_per_op"] / base["cpu_us_per_op"]
        summary[workload] = rows
    return {"repeat": repeat, "counts": counts, "medians": summary, "samples": samples}


def table(result: dict[str, Any]) -> str:
    lines = ["| workload | channel | wall µs/op | CPU µs/op | wall vs unix | CPU vs unix |",
             "|---|---|---:|---:|---:|---:|"]
    names = {"rr": "64 B request + response", "bulk": "64 KiB to the application"}
    for workload, rows in result["medians"].items():
        for transport, row in rows.items():
            lines.append(
                f"| {names[workload]} | {transport} | {row['wall_us_per_op']:.2f} | "
                f"{row['cpu_us_per_op']:.2f} | {row['wall_vs_unix']:.2f}× | "
                f"{row['cpu_vs_unix']:.2f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rr", type=int, default=50_000, help="round trips per run")
    ap.add_argument("--bulk", type=int, default=20_000, help="64 KiB chunks per run")
    ap.add_argument("--claims", type=int, default=20_000, help="claims per run")
    ap.add_argument("--json", type=Path, help="write every sample here")
    args = ap.parse_args(argv)
    result = measure(args.repeat, {"rr": args.rr, "bulk": args.bulk})
    result["claims"] = measure_claims(args.repeat, args.claims)
    print(table(result))
    print()
    print(claims_table(result["claims"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
