"""``joyride stats IFACE [--json] [--watch [SECONDS]]``: steering and socket counters."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Final


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "stats", help="counters of the steering program (per reason) and of the sockets")
    parser.add_argument("ifname", metavar="IFACE")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--all", action="store_true", help="also show counters that are 0")
    parser.add_argument("--watch", nargs="?", type=float, const=1.0, default=None,
                        metavar="SECONDS", help="repeat every SECONDS (default 1), "
                                                "showing the change since the last report")
    parser.add_argument("--count", type=int, default=0,
                        help="with --watch: stop after this many reports (0 = until Ctrl-C)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from joyride.service import client

    # Any user may read the counters, as `ss` and /proc/net/tcp are readable by all
    # (control.READ_ONLY); the service authorizes each request.
    snapshot = client.ask(args.ifname, {"op": "stats"})
    if args.watch is None:
        _emit(snapshot, args)
        return 0
    interval = max(0.1, args.watch)
    reports = 0
    while args.count <= 0 or reports < args.count:
        time.sleep(interval)
        current = client.ask(args.ifname, {"op": "stats"})
        _emit(_delta(current, snapshot), args, interval=interval)
        snapshot = current
        reports += 1
    return 0


def _delta(now: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    out = dict(now)
    for key in ("steer", "totals"):
        out[key] = {k: v - before[key].get(k, 0) for k, v in now[key].items()}
    out["queues"] = {
        q: {k: v - before["queues"].get(q, {}).get(k, 0) for k, v in stats.items()}
        for q, stats in now["queues"].items()
    }
    if now.get("datapath") and before.get("datapath"):
        # TCP's totals since the start rise only: their change is this interval's.
        earlier = before["datapath"].get("tcp_total", {})
        out["datapath"] = {**now["datapath"], "tcp_total": {
            k: v - earlier.get(k, 0) for k, v in now["datapath"].get("tcp_total", {}).items()}}
        plane, was = now["datapath"].get("dataplane"), before["datapath"].get("dataplane")
        if plane and was and "workers" in plane and "workers" in was \
                and len(plane["workers"]) == len(was["workers"]):
            # Each worker's counters as the interval's change; flows as they are now.
            out["datapath"]["dataplane"] = {**plane, "workers": [
                {k: v if k == "flows" else v - old.get(k, 0) for k, v in w.items()}
                for w, old in zip(plane["workers"], was["workers"], strict=True)]}
    return out


def _emit(stats: dict[str, Any], args: argparse.Namespace,
          interval: float | None = None) -> None:
    if args.json:
        print(json.dumps(stats, sort_keys=True), flush=True)
        return
    head = f"{stats['ifname']}: {stats['mode']} XDP, up {stats['uptime']:.1f} s"
    if interval is not None:
        head += f", change over {interval:g} s"
    print(head)
    totals = stats["totals"]
    print("  " + "  ".join(f"{k} {v}" for k, v in totals.items()))
    for name, value in stats["steer"].items():
        if value or args.all:
            print(f"    {name:<20} {value}")
    for queue, qstats in sorted(stats["queues"].items(), key=lambda kv: int(kv[0])):
        shown = {k: v for k, v in qstats.items() if v or args.all}
        print(f"  queue {queue}: " + (" ".join(f"{k} {v}" for k, v in shown.items())
                                      or "no traffic"))
    plane = (stats.get("datapath") or {}).get("dataplane") or {}
    for index, worker in enumerate(plane.get("workers", [])):
        print(f"  worker {index}: " + " ".join(f"{k} {worker.get(k, 0)}" for k in WORKER_SHOWN))
    for line in tcp_lines((stats.get("datapath") or {}).get("tcp_total", {}),
                          show_zero=args.all):
        print(line)
    print(flush=True)


def tcp_lines(tcp: dict[str, int], *, show_zero: bool = False) -> list[str]:
    """TCP's loss and recovery counters (since the service started, or the interval's
    change under --watch): retransmissions, then ``RECOVERY_COUNTERS`` and
    ``CONGESTION_COUNTERS``."""
    from joyride.tcp.counters import CONGESTION_COUNTERS, RECOVERY_COUNTERS

    out = []
    for title, names in (("tcp", LOSS_COUNTERS), ("recovery", sorted(RECOVERY_COUNTERS)),
                         ("congestion", sorted(CONGESTION_COUNTERS))):
        shown = [(k, tcp.get(k, 0)) for k in names if tcp.get(k, 0) or show_zero]
        if shown:
            out.append(f"  {title}: " + " ".join(f"{k} {v}" for k, v in shown))
    return out


# Each data-plane worker's line (joyride attach --workers): its flows now, what its
# queues gave it, what it ran in C and declined, and how often it stopped for Python.
WORKER_SHOWN: Final = ("flows", "rx_frames", "rx_fast", "declined", "established",
                       "runs", "asks")

# Retransmission and its triggers (joyride.tcp.recovery and connection), in this order.
LOSS_COUNTERS: Final = ("segments_received", "segments_sent", "retransmitted_segments",
                        "fast_retransmits", "rto_expired", "recovery_exits",
                        "limited_transmit_segments", "retransmit_timeout_abort")
