"""Loss recovery under impairment, Joyride beside the kernel (issue 15's benchmark).

    python -m joyride.bench.impair [--profiles mixed,loss1] [--mb 10] [--reps 3]
                                   [--min-seconds 2] [--max-reps 15]
                                   [--modes service,embedded] [--out results/impair.json]

For each profile a fresh test bed with the profile's impairments (nftables loss and
duplication on the peer's veth, the user-space relay for delay, reordering and
corruption) carries ``--mb`` MB each way between a kernel client in the peer namespace
and the benchmark's Python server (``pyserver --bulk``) in the Joyride namespace: once
on the kernel (an unsteered port), once on Joyride (service mode under ``joyride run``;
embedded mode through ``joyride.embed``), alternating which goes first at every
repetition, every transfer checked by SHA-256. Each side first makes one untimed
transfer (the first connection to a fresh server pays for its warm-up). A profile
whose transfers are short repeats its pairs beyond ``--reps`` until each side has run
for ``--min-seconds`` in all, up to ``--max-reps`` pairs (``repetitions_needed``): a
clean 10 MB transfer takes 10–20 ms here, and three of those move by a third from one
run to the next. The kernel side sends segment-sized
frames (TSO and GSO off on the Joyride-side veth), as Joyride does: the bed's loss rule
drops whole frames. The kernel's congestion controller is ``--kernel-cc`` on every
connection (TCP_CONGESTION: the server's listener, the client's socket), CUBIC by
default as Joyride's: this machine's default is BBR, which does
not take random loss for congestion, and beside it a loss-based controller measures the
controllers' difference, not loss recovery's (``--kernel-cc bbr`` shows that one).
"download" is Joyride sending, "upload" Joyride receiving. Reported: the median
completion time of each side and their ratio (Joyride / kernel: 1.0 is parity, above is
slower), plus the Joyride side's recovery counters (``joyride stats``) and its data
plane's from one more, untimed transfer each way (both modes).

Bounded: every transfer has a timeout (recorded as an error, never waited out), and
every bed, server and service is gone when this returns.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from joyride.bench import servers
from joyride.bench.pyserver import bulk_bytes
from joyride.bench.runner import machine
from joyride.testbed import Impairment, Testbed

MB: Final = 1 << 20

#: name -> (towards Joyride, towards the peer). The bed duplicates towards Joyride only
#: (an ingress hook cannot re-inject a copy); delay is per direction.
PROFILES: Final[dict[str, tuple[Impairment, Impairment]]] = {
    "clean": (Impairment(), Impairment()),
    "loss1": (Impairment(loss=0.01), Impairment(loss=0.01)),
    "loss3": (Impairment(loss=0.03), Impairment(loss=0.03)),
    "reorder10": (Impairment(reorder=0.10), Impairment(reorder=0.10)),
    "reorder30": (Impairment(reorder=0.30), Impairment(reorder=0.30)),
    "loss1_delay20": (Impairment(loss=0.01, delay=0.02), Impairment(loss=0.01, delay=0.02)),
    "mixed": (Impairment(loss=0.03, reorder=0.10, duplicate=0.01, corrupt=0.005, delay=0.005),
              Impairment(loss=0.03, reorder=0.10, corrupt=0.005, delay=0.005)),
}
DIRECTIONS: Final = ("download", "upload")
#: Recovery counters reported per profile (``joyride stats --json`` totals).
COUNTERS: Final = (
    "retransmitted_segments", "rto_expired", "fast_retransmits", "dsack_received",
    "dsack_sent", "spurious_detected_timestamps", "spurious_detected_dsack",
    "spurious_detected_frto", "undo_fast_recovery", "undo_rto", "rack_reordering_seen",
    "rack_timer_fired", "rack_lost_retransmissions", "tlp_probes_new_data",
    "tlp_probes_retransmitted", "tlp_no_loss", "tlp_loss_repaired",
    "hystart_css_entered", "hystart_css_abandoned", "hystart_slow_start_exits",
    "hystart_ack_train_exits",
)


def transfer(bed: Testbed, port: int, direction: str, size: int, timeout: float,
             cc: str | None = None) -> float:
    """One transfer from the peer's kernel client (``cc``: its congestion controller,
    which sends the uploads); seconds, or ValueError if the bytes that arrived are not
    the bytes sent."""
    data = bulk_bytes(size)
    start = time.monotonic()
    with bed.peer.inside():
        sock = socket.socket()
    with sock:
        if cc is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
        sock.settimeout(timeout)
        sock.connect((bed.joy.ip, port))
        sock.settimeout(timeout)
        if direction == "download":
            sock.sendall(b"D" + size.to_bytes(8, "big"))
            digest, got = hashlib.sha256(), 0
            while chunk := sock.recv(1 << 18):
                digest.update(chunk)
                got += len(chunk)
            elapsed = time.monotonic() - start
            if got != size or digest.digest() != hashlib.sha256(data).digest():
                raise ValueError(f"download: {got} of {size} bytes, or not the bytes sent")
            return elapsed
        sock.sendall(b"U" + size.to_bytes(8, "big"))
        sock.sendall(data)
        reply = b""
        while len(reply) < 32 and (chunk := sock.recv(32 - len(reply))):
            reply += chunk
        elapsed = time.monotonic() - start
    if reply != hashlib.sha256(data).digest():
        raise ValueError("upload: the server's SHA-256 is not that of the bytes sent")
    return elapsed


#: The C data plane's counters reported beside them (``joyride stats``: ``datapath``
#: ``dataplane``): how much of the transfer C ran, and what it handed to Python.
PLANE_COUNTERS: Final = (
    "rx_frames", "rx_fast", "rx_ooo", "ooo_filled", "declined", "tx_data_segs",
    "gso_segs", "flows_adopted", "flows_released", "timers_host_queued",
)


def service_counters(bed: Testbed) -> dict[str, int]:
    """The service's cumulative counters: TCP's since it started (``tcp_total``: closed
    connections too, and what C counted of those it runs now) under their names
    (COUNTERS), the data plane's (PLANE_COUNTERS, and its hand-backs by reason) with
    ``plane_`` before the name; {} when the service does not answer."""
    datapath = servers.service_stats(bed).get("datapath") or {}
    tcp = datapath.get("tcp_total") or {}
    plane = datapath.get("dataplane") or {}
    out = {k: int(tcp.get(k, 0)) for k in COUNTERS} if tcp else {}
    out.update({f"plane_{k}": int(v) for k, v in plane.items()
                if isinstance(v, int) and (k in PLANE_COUNTERS or k.startswith("handback_"))})
    return out


def counted_transfer(bed: Testbed, port: int, direction: str, size: int,
                     timeout: float, cc: str | None) -> dict[str, int]:
    """One more transfer (not timed), with what it added to the service's counters
    (service_counters, read before and after: only this transfer runs meanwhile). The
    recovery counters are all reported, zeros too; the data plane's only where they
    moved."""
    before = service_counters(bed)
    _sample(bed, port, direction, size, timeout, cc)
    after = service_counters(bed)
    return {k: v - before.get(k, 0) for k, v in after.items()
            if k in COUNTERS or v != before.get(k, 0)}


def _sample(bed: Testbed, port: int, direction: str, size: int, timeout: float,
            cc: str | None) -> dict[str, Any]:
    try:
        return {"seconds": round(transfer(bed, port, direction, size, timeout, cc), 4)}
    except (OSError, ValueError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def repetitions_needed(samples: dict[str, list[dict[str, Any]]], reps: int,
                       min_seconds: float, max_reps: int) -> bool:
    """Whether another alternating pair is due: fewer than ``reps`` so far, or (below
    ``max_reps``) a side whose timed transfers add up to less than ``min_seconds``.
    A failed transfer counts as ``min_seconds`` (it already ended the row's median)."""
    done = min(len(side) for side in samples.values())
    if done < reps:
        return True
    if done >= max_reps:
        return False
    return any(sum(s.get("seconds", min_seconds) for s in side) < min_seconds
               for side in samples.values())


def _median(samples: list[dict[str, Any]]) -> float | None:
    values = [s["seconds"] for s in samples if "seconds" in s]
    return round(statistics.median(values), 4) if len(values) == len(samples) and values \
        else None


def run_profile(name: str, modes: list[str], size: int, reps: int, timeout: float,
                workdir: Path, log: Any, kernel_cc: str = "cubic",
                directions: tuple[str, ...] = DIRECTIONS, min_seconds: float = 0.0,
                max_reps: int = 0) -> dict[str, Any]:
    to_joy, to_peer = PROFILES[name]
    out: dict[str, Any] = {"to_joyride": _imp_json(to_joy), "to_peer": _imp_json(to_peer),
                           "kernel_cc": kernel_cc, "modes": {}}
    with Testbed(to_joy=to_joy, to_peer=to_peer, seed=15) as bed, \
            contextlib.ExitStack() as kernel_stack:
        # The kernel's TSO/GSO frames would cross the veth whole and meet the loss rule
        # whole: one 64 KB frame lost is one loss event for 45 segments, while Joyride's
        # frames are one segment each. Segment-sized frames on both sides (as the bed
        # already has when the relay runs).
        bed.joy.run("ethtool", "-K", bed.joy.ifname, "tso", "off", "gso", "off")
        kernel = servers.start(bed, "python", "kernel", workdir, workdir / "kernel.log",
                               ("--cc", kernel_cc))
        kernel_stack.callback(kernel.stop)
        for mode in modes:
            with contextlib.ExitStack() as stack:
                if mode == "service":
                    stack.callback(servers.detach, bed)
                    servers.attach(bed, ports=str(servers.port_of("service", "py_bulk")))
                joy = servers.start(bed, "python", mode, workdir, workdir / f"{mode}.log")
                stack.callback(joy.stop)
                result: dict[str, Any] = {}
                for direction in directions:
                    pair: dict[str, list[dict[str, Any]]] = {"kernel": [], "joyride": []}
                    sides = [("kernel", kernel.ports["bulk"]), ("joyride", joy.ports["bulk"])]
                    for _side, port in sides:  # warm-up, untimed
                        _sample(bed, port, direction, size, timeout, kernel_cc)
                    rep = 0
                    while repetitions_needed(pair, reps, min_seconds, max(reps, max_reps)):
                        order = sides[::-1] if rep % 2 else sides
                        rep += 1
                        for side, port in order:
                            got = _sample(bed, port, direction, size, timeout, kernel_cc)
                            pair[side].append(got)
                            print(f"  {name} {mode} {direction} rep {rep} {side}: {got}",
                                  file=log, flush=True)
                    k, j = _median(pair["kernel"]), _median(pair["joyride"])
                    result[direction] = {
                        "kernel_s": k, "joyride_s": j,
                        "ratio": round(j / k, 2) if j is not None and k else None,
                        "samples": pair,
                    }
                result["counters"] = {
                    direction: counted_transfer(bed, joy.ports["bulk"], direction, size,
                                                timeout, kernel_cc)
                    for direction in directions}
                out["modes"][mode] = result
    return out


def _imp_json(imp: Impairment) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(imp).items() if v}


def table(doc: dict[str, Any]) -> str:
    lines = [f"Measured {doc['when']} on {doc['machine'].get('cpus', '?')} vCPUs, "
             f"{doc['machine'].get('kernel', '')}; {doc['mb']} MB each way, medians of "
             f"{doc['reps']} or more alternating repetitions (until each side ran "
             f"{doc.get('min_seconds', 0):g} s, at most {doc.get('max_reps', doc['reps'])} "
             "pairs, after one untimed transfer each); kernel congestion control "
             f"{doc.get('kernel_cc', '?')}, Joyride's {doc.get('joyride_cc', '?')}; "
             "ratio = Joyride / kernel completion "
             "time (1.10 is the issue's target; above is slower). Run took "
             f"{doc['seconds']:.0f} s.", "",
             "| profile | mode | direction | kernel (s) | Joyride (s) | ratio |",
             "|---|---|---|---:|---:|---:|"]
    for name, prof in doc["profiles"].items():
        if "error" in prof:
            lines.append(f"| {name} | | | error: {prof['error']} | | |")
            continue
        for mode, res in prof["modes"].items():
            for direction in DIRECTIONS:
                if direction not in res:
                    continue
                r = res[direction]
                fmt = (lambda v: "error" if v is None else f"{v:.2f}")  # noqa: E731
                lines.append(f"| {name} | {mode} | {direction} | {fmt(r['kernel_s'])} | "
                             f"{fmt(r['joyride_s'])} | {fmt(r['ratio'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--profiles", default=",".join(PROFILES))
    ap.add_argument("--modes", default="service")
    ap.add_argument("--mb", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--min-seconds", type=float, default=2.0,
                    help="repeat short rows until each side ran this long in all")
    ap.add_argument("--max-reps", type=int, default=15,
                    help="at most this many pairs per row")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per transfer")
    ap.add_argument("--kernel-cc", default="cubic",
                    help="the kernel's congestion controller (both namespaces)")
    ap.add_argument("--directions", default=",".join(DIRECTIONS),
                    help="download (Joyride sends), upload (Joyride receives), or both")
    ap.add_argument("--out", default="results/impair.json")
    args = ap.parse_args(argv)
    names = [p for p in args.profiles.split(",") if p]
    unknown = [p for p in names if p not in PROFILES]
    directions = tuple(d for d in args.directions.split(",") if d)
    if unknown or args.reps < 3:
        ap.error(f"unknown profiles {unknown}" if unknown else "at least 3 repetitions")
    if not directions or any(d not in DIRECTIONS for d in directions):
        ap.error(f"--directions: some of {', '.join(DIRECTIONS)}")
    modes = [m for m in args.modes.split(",") if m]
    started = time.monotonic()
    doc: dict[str, Any] = {"when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                           "machine": machine(), "mb": args.mb, "reps": args.reps,
                           "min_seconds": args.min_seconds, "max_reps": args.max_reps,
                           "kernel_cc": args.kernel_cc, "joyride_cc": "cubic",
                           "profiles": {}}
    with tempfile.TemporaryDirectory(prefix="jr-impair-") as tmp:
        for name in names:
            print(f"profile {name}", file=sys.stderr, flush=True)
            try:
                doc["profiles"][name] = run_profile(name, modes, args.mb * MB, args.reps,
                                                    args.timeout, Path(tmp) / name, sys.stderr,
                                                    args.kernel_cc, directions,
                                                    args.min_seconds, args.max_reps)
            except (RuntimeError, OSError) as exc:  # ServerError, TestbedError
                doc["profiles"][name] = {"error": f"{type(exc).__name__}: {exc}"}
    doc["seconds"] = round(time.monotonic() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    out.with_suffix(".md").write_text(table(doc))
    print(table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
