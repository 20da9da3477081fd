"""Replay microbenchmark: segments through the C data plane's round, in ns each.

``python -m joyride.bench.replay [--megabytes N] [--requests N] [--repeat N] [--json F]``
runs the data plane in memory (``joyride.dataplane.membed``: a Python peer engine, the
plane over a ``MemoryPort``, the application at the end of a socketpair), with no veth,
NIC or second process, and counts only the C rounds' CPU time (the thread's, so time
lost to other processes is not counted). It is the issue's low-noise guard
for regressions: what it measures is the C per-segment path (parse, header prediction,
rings, ACK/segment building, the application channel's ``sendmsg``/``readv``), not the
machine's networking. Workloads:

* ``receive``: a bulk upload, in-order MSS segments into the receive ring and on to the
  application, ACK every second segment; ns per received segment;
* ``send``: a bulk download, the application's bytes read from its socket, segmented
  within cwnd and the peer's window, and the peer's ACKs taken; ns per data segment;
* ``request_response``: 64-byte requests and replies (redis-like); ns per request, for
  the two rounds a request costs (request in, reply out).

Every workload checks its bytes end to end (SHA-256) and that C kept the flow (no
hand-back): a number from a run that fell back to Python would be meaningless.
Medians over ``--repeat`` runs; JSON with every run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from joyride.dataplane.membed import Bed, read_all

Workload = Callable[[int], dict[str, float]]


def _checked(got: bytes, want: bytes, what: str) -> None:
    if hashlib.sha256(got).digest() != hashlib.sha256(want).digest():
        raise RuntimeError(f"replay {what}: the bytes did not arrive intact")


def _kept_in_c(bed: Bed, what: str) -> None:
    if bed.reasons:
        raise RuntimeError(f"replay {what}: C handed the flow back ({bed.reasons})")


def _per(bed: Bed, before: dict[str, int], after: dict[str, int], segments: int
         ) -> dict[str, float]:
    rounds = after["rounds"] - before["rounds"]
    return {"segments": segments, "rounds": rounds,
            "ns_per_segment": bed.round_ns / max(segments, 1),
            "ns_per_round": bed.round_ns / max(rounds, 1)}


def _bulk(megabytes: int, upload: bool) -> dict[str, float]:
    """``megabytes`` MiB from the peer to the application (``upload``) or back."""
    what = "receive" if upload else "send"
    bed = Bed()
    client, server = bed.connect()
    _ours, app = bed.adopt(server)
    payload = os.urandom(megabytes << 20)
    before = bed.plane.stats()
    sent, got = 0, bytearray()
    while len(got) < len(payload):
        if sent < len(payload) and upload:
            sent += client.send(payload[sent:sent + 262144])
            bed.peer.mark(client)
        elif sent < len(payload):
            with contextlib.suppress(BlockingIOError):  # its socket is full: C reads on
                sent += app.send(payload[sent:sent + 262144])
        bed.step()
        got += read_all(app) if upload else client.recv()
    after = bed.plane.stats()
    _checked(bytes(got), payload, what)
    _kept_in_c(bed, what)
    counter = "rx_fast" if upload else "tx_data_segs"
    return _per(bed, before, after, after[counter] - before[counter])


def receive(megabytes: int) -> dict[str, float]:
    return _bulk(megabytes, upload=True)


def send(megabytes: int) -> dict[str, float]:
    return _bulk(megabytes, upload=False)


def request_response(requests: int) -> dict[str, float]:
    bed = Bed()
    client, server = bed.connect()
    _ours, app = bed.adopt(server)
    request, reply = b"GET key:000000001\r\n".ljust(64, b"x"), os.urandom(64)
    before = bed.plane.stats()
    for _ in range(requests):
        client.send(request)
        bed.peer.mark(client)
        bed.peer.flush()  # the request is on the wire before the round, not after it
        bed.step()
        if read_all(app) != request:
            raise RuntimeError("replay request_response: the request did not arrive whole")
        app.sendall(reply)
        bed.step()
        if client.recv() != reply:
            raise RuntimeError("replay request_response: the reply did not arrive whole")
    _kept_in_c(bed, "request_response")
    rounds = bed.plane.stats()["rounds"] - before["rounds"]
    return {"requests": requests, "rounds": rounds,
            "ns_per_request": bed.round_ns / requests,
            "ns_per_round": bed.round_ns / max(rounds, 1)}


def run(megabytes: int, requests: int, repeat: int) -> dict[str, Any]:
    workloads: dict[str, tuple[Workload, int, str]] = {
        "receive": (receive, megabytes, "ns_per_segment"),
        "send": (send, megabytes, "ns_per_segment"),
        "request_response": (request_response, requests, "ns_per_request"),
    }
    out: dict[str, Any] = {}
    for name, (workload, size, metric) in workloads.items():
        runs = [workload(size) for _ in range(repeat)]
        out[name] = {"runs": runs, "metric": metric,
                     "median": statistics.median(r[metric] for r in runs)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m joyride.bench.replay",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=16,
                        help="bytes per bulk workload, MiB (default 16)")
    parser.add_argument("--requests", type=int, default=5000,
                        help="requests of the request/response workload (default 5000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per workload (median)")
    parser.add_argument("--json", type=Path, default=Path("results/replay.json"),
                        help="where to write every run (default results/replay.json)")
    args = parser.parse_args(argv)
    results = run(args.megabytes, args.requests, args.repeat)
    for name, r in results.items():
        per_round = statistics.median(run["ns_per_round"] for run in r["runs"])
        print(f"{name:18} {r['median']:9.0f} {r['metric'].replace('_', ' ')}"
              f"   ({per_round:.0f} ns per round)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(
        {"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=2,
        sort_keys=True) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
