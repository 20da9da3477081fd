"""Profile the network service under one unmodified-program workload.

``python -m joyride.bench.profile nginx_64k --seconds 5`` builds a test bed, starts the
workload's server under ``joyride run``, drives it from the peer namespace with the same
client ``joyride.bench.daemons`` uses, and records the service process (all its threads)
with ``perf record -g`` while the load runs. It prints the samples by module (DSO) and the
hottest symbols, and keeps ``perf.data`` when ``--keep`` names a path.

``--system`` records every CPU instead (``perf record -a``) and prints the samples by
task too (the client, the server, the service, softirq), and ``--stack kernel`` runs the
same workload on the kernel's TCP: together they say where the whole machine's time goes
on each stack, which is what "machine CPU per request" in the benchmark compares.

An outgoing workload (``redis_client_get``) runs the kernel's server on the peer and the
client in Joyride's namespace, under ``joyride run --outgoing`` (or on the kernel's TCP
with ``--stack kernel``), as the daemons benchmark does.

This is how the profiles in the README and the closing notes are taken; it measures
nothing the daemons benchmark does not, it only says where the service's time goes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from joyride.bench import daemons, tools
from joyride.bench.servers import attach, detach, service_stats
from joyride.processes import terminate
from joyride.testbed import Testbed


def perf_report(data: Path, sort: str, limit: int) -> str:
    proc = subprocess.run(
        ["perf", "report", "-i", str(data), "--no-children", "--sort", sort, "--stdio",
         "--percent-limit", "0.5", "-g", "none"],
        capture_output=True, text=True, timeout=300, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
    return "\n".join(lines[:limit]) or proc.stderr.strip()


def plane_counters(bed: Testbed) -> dict[str, int]:
    doc = service_stats(bed)
    plane = (doc.get("datapath") or {}).get("dataplane") or {}
    return {k: int(v) for k, v in plane.items() if isinstance(v, int)}


def kernel_tcp_counters(bed: Testbed) -> dict[str, int]:
    """The Joyride end's kernel TCP counters (``/proc/net/snmp``'s Tcp line), which say
    how much work a kernel run recorded: PassiveOpens, InSegs, OutSegs."""
    out = bed.joy.run("cat", "/proc/net/snmp").stdout.decode()
    head, values = [line.split() for line in out.splitlines() if line.startswith("Tcp:")][:2]
    return {k: int(v) for k, v in zip(head[1:], values[1:], strict=True)
            if k in ("PassiveOpens", "InSegs", "OutSegs")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workload", choices=[d.key for d in daemons.DAEMONS])
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the recording")
    ap.add_argument("--keep", type=Path, help="keep perf.data at this path")
    ap.add_argument("--symbols", type=int, default=40, help="how many symbols to print")
    ap.add_argument("--system", action="store_true",
                    help="record every CPU, not the service alone, and sort by task too")
    ap.add_argument("--stack", choices=("joyride", "kernel"), default="joyride",
                    help="the stack the server runs on (kernel: implies --system)")
    args = ap.parse_args(argv)
    system = args.system or args.stack == "kernel"
    if shutil.which("perf") is None:
        print("perf is not installed (scripts/setup.sh installs it)", file=sys.stderr)
        return 2
    d = next(x for x in daemons.DAEMONS if x.key == args.workload)
    with Testbed() as bed, tempfile.TemporaryDirectory(prefix="joyride-profile-") as tmp:
        work = Path(tmp)
        tools.prepare_load_generator(bed.peer)
        svc = attach(bed, daemons.PORTS) if args.stack == "joyride" else None
        try:
            ep = daemons.start_server(bed, d, args.stack, work, work / "server.log")
            try:
                load_seconds = args.seconds + 3.0  # warm up 1 s, record, stop past the end
                client = subprocess.Popen(daemons.client_command(bed, d, args.stack, load_seconds),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                data = args.keep or work / "perf.data"
                try:
                    time.sleep(1.0)
                    before = plane_counters(bed) if svc is not None else kernel_tcp_counters(bed)
                    target = ["-a"] if system else ["-p", str(svc)]
                    subprocess.run(
                        ["perf", "record", "-g", "-q", "-o", str(data), *target,
                         "--", "sleep", str(args.seconds)],
                        check=True, timeout=args.seconds + 60,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    after = plane_counters(bed) if svc is not None else kernel_tcp_counters(bed)
                finally:
                    terminate([client], 5.0)
                who = f"service pid {svc}" if svc is not None else "the kernel's TCP"
                print(f"== {d.title}: {who}, {'every CPU, ' if system else ''}"
                      f"{args.seconds:g} s\n")
                print("-- the data plane's counters while recorded --" if svc is not None
                      else "-- the kernel's TCP counters while recorded --")
                print("  ".join(f"{k}={after[k] - before.get(k, 0)}" for k in sorted(after)
                                if after[k] != before.get(k, 0)))
                print()
                if system:
                    print("-- by task --")
                    print(perf_report(data, "comm", 20))
                    print("\n-- by task and module --")
                    print(perf_report(data, "comm,dso", 30))
                    print()
                print("-- by module --")
                print(perf_report(data, "dso", 20))
                print("\n-- by symbol --")
                print(perf_report(data, "dso,symbol", args.symbols))
            finally:
                terminate(ep.procs, 5.0)
        finally:
            if svc is not None:
                detach(bed)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
