#!/usr/bin/env python3
"""The same asyncio echo server on kernel sockets, Joyride service mode and embedded
mode, side by side on one veth test bed (root; builds and removes its own bed).

For every round and every mode (alternating, so drift hits all alike) the server is
started in the Joyride namespace and a kernel-socket Python client in the peer
namespace measures:

* latency: one connection, 64-byte request/response, ``--rtts`` round trips after a
  warm-up: p50 / p99 / p99.9 in microseconds;
* transactions/s: ``--conns`` connections each keeping one 64-byte request in flight
  for ``--seconds``;
* CPU per request: CPU seconds of the server process (user + system, from
  ``/proc/PID/stat``), in service mode plus the network service's, plus the machine's
  softirq time (``/proc/stat``: the kernel's packet work on veth runs there, for both
  stacks), over the transactions/s phase, divided by the transactions; also the same
  per round trip of the latency phase.

``--profile FILE`` runs the embedded server under cProfile and dumps its statistics
there on exit (the numbers of that run are then not comparable).

The server is ``joyride.asyncio.start_server`` in every mode: without ``embed`` and
without a service it is the kernel's asyncio server, unchanged. Prints a table, then
one JSON object as the last line (medians over rounds, and embedded/kernel ratios).

    sudo .venv/bin/python scripts/bench_embedded.py [--rounds 3] [--modes kernel,embedded,service]
        [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
PORT = 8080
MSG = 64


# -- server (runs in the Joyride namespace) ---------------------------------------------

async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
    except ConnectionError:
        pass
    writer.close()


def _runner(loop: str) -> asyncio.Runner:
    if loop == "uvloop":
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    return asyncio.Runner()


def serve(mode: str, ifname: str, profile: str = "", loop: str = "asyncio") -> None:
    import joyride.asyncio as jasyncio
    from joyride.embed import embed

    async def main() -> None:
        server = await jasyncio.start_server(_echo, None, PORT)
        print(f"ready {type(server).__name__}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        server.close()

    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    try:
        if mode == "embedded":
            with embed(ifname, [PORT]), _runner(loop) as runner:
                runner.run(main())
        else:
            with _runner(loop) as runner:
                runner.run(main())
    finally:
        if profile:
            prof.disable()
            prof.dump_stats(profile)


# -- client (runs in the peer namespace) -------------------------------------------------

def _recv_exact(sock: socket.socket, n: int) -> None:
    got = 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            raise ConnectionError("server closed")
        got += len(chunk)


def client_latency(ip: str, rtts: int) -> dict[str, float]:
    sock = socket.create_connection((ip, PORT), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = os.urandom(MSG)
    for _ in range(min(1000, rtts // 5)):  # warm-up: caches, cwnd, ARP
        sock.sendall(msg)
        _recv_exact(sock, MSG)
    samples = []
    clock = time.perf_counter_ns
    for _ in range(rtts):
        t0 = clock()
        sock.sendall(msg)
        _recv_exact(sock, MSG)
        samples.append(clock() - t0)
    sock.close()
    samples.sort()

    def pct(p: float) -> float:
        return samples[min(len(samples) - 1, int(p * len(samples)))] / 1000

    return {"p50_us": pct(0.5), "p99_us": pct(0.99), "p999_us": pct(0.999),
            "mean_us": statistics.fmean(samples) / 1000, "count": rtts}


def client_tps(ip: str, conns: int, seconds: float) -> dict[str, float]:
    sel = selectors.DefaultSelector()
    msg = os.urandom(MSG)
    socks = []
    for _ in range(conns):
        s = socket.create_connection((ip, PORT), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)
        sel.register(s, selectors.EVENT_READ, [0])
    done = 0
    for s in socks:
        s.send(msg)
    end = time.monotonic() + seconds
    start = time.monotonic()
    while time.monotonic() < end:
        for key, _ in sel.select(1.0):
            conn = key.fileobj
            assert isinstance(conn, socket.socket)
            try:
                data = conn.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                raise ConnectionError("server closed")
            key.data[0] += len(data)
            while key.data[0] >= MSG:
                key.data[0] -= MSG
                done += 1
                conn.send(msg)
    elapsed = time.monotonic() - start
    for s in socks:
        s.close()
    return {"tps": done / elapsed, "count": done}


# -- orchestration -------------------------------------------------------------------------

def _python() -> str:
    return sys.executable


TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its reaped children's threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _softirq_cpu() -> float:
    """CPU seconds the whole machine spent in softirq (veth packet processing)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[7]) / TICK


def run_mode(bed: Any, mode: str, args: argparse.Namespace) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(HERE.parent.parent))
    attached = False
    helpers: list[int] = []  # other processes whose CPU serves the requests
    if mode == "service":
        joyride = str(Path(_python()).parent / "joyride")
        bed.joy.run(joyride, "attach", bed.joy.ifname, "--ports", str(PORT), timeout=60)
        attached = True
        status = json.loads(bed.joy.run(joyride, "status", bed.joy.ifname, "--json").stdout)
        helpers.append(int(status[0]["service"]["pid"]))  # the network service
    server = subprocess.Popen(
        bed.joy.cmd(_python(), str(HERE), "--serve", mode, "--ifname", bed.joy.ifname,
                    "--loop", args.loop,
                    *(["--profile", args.profile] if args.profile else [])),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    try:
        line = server.stdout.readline() if server.stdout else ""
        if not line.startswith("ready"):
            raise RuntimeError(f"{mode} server did not start: {line!r}")
        out: dict[str, float] = {}
        pids = [server.pid, *helpers]
        for kind in ("lat", "tps"):
            cpu0, sirq0 = sum(_proc_cpu(p) for p in pids), _softirq_cpu()
            res = subprocess.run(
                bed.peer.cmd(_python(), str(HERE), "--client", kind, "--ip", bed.joy.ip,
                             "--rtts", str(args.rtts), "--conns", str(args.conns),
                             "--seconds", str(args.seconds)),
                capture_output=True, text=True, env=env, timeout=120 + args.seconds)
            if res.returncode != 0:
                raise RuntimeError(f"{mode} {kind} client failed: {res.stderr[-2000:]}")
            got = json.loads(res.stdout.strip().splitlines()[-1])
            cpu = sum(_proc_cpu(p) for p in pids) - cpu0 + _softirq_cpu() - sirq0
            count = got.pop("count")
            out[f"cpu_{kind}_us"] = cpu / max(1, count) * 1e6
            out.update(got)
        return out
    finally:
        if server.stdin:
            server.stdin.close()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if attached:
            bed.joy.run(str(Path(_python()).parent / "joyride"), "detach", bed.joy.ifname,
                        check=False, timeout=60)


def orchestrate(args: argparse.Namespace) -> None:
    from joyride.testbed import Testbed

    modes = [m for m in args.modes.split(",") if m]
    results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    errors: dict[str, str] = {}
    with Testbed() as bed:
        for rnd in range(args.rounds):
            for mode in modes:
                if mode in errors:
                    continue
                try:
                    res = run_mode(bed, mode, args)
                except Exception as exc:  # report, keep benchmarking the other modes
                    errors[mode] = str(exc)[-500:]
                    print(f"round {rnd} {mode}: FAILED {errors[mode]}", file=sys.stderr)
                    continue
                results[mode].append(res)
                print(f"round {rnd} {mode:9s} p50 {res['p50_us']:7.1f} us  p99 "
                      f"{res['p99_us']:7.1f}  p99.9 {res['p999_us']:7.1f}  "
                      f"tps {res['tps']:9.0f}  cpu/req {res['cpu_tps_us']:6.1f} us",
                      file=sys.stderr)
    summary: dict[str, Any] = {}
    for mode, runs in results.items():
        if runs:
            summary[mode] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"\n{'mode':10s} {'p50 us':>8s} {'p99 us':>8s} {'p99.9 us':>9s} {'tx/s':>10s} "
          f"{'cpu/req us':>10s} {'cpu/rtt us':>10s}")
    for mode, med in summary.items():
        print(f"{mode:10s} {med['p50_us']:8.1f} {med['p99_us']:8.1f} {med['p999_us']:9.1f} "
              f"{med['tps']:10.0f} {med['cpu_tps_us']:10.1f} {med['cpu_lat_us']:10.1f}")
    ratios: dict[str, float] = {}
    if "kernel" in summary:
        for mode in summary:
            if mode != "kernel":
                ratios[f"{mode}_p50_ratio"] = summary[mode]["p50_us"] / summary["kernel"]["p50_us"]
                ratios[f"{mode}_tps_ratio"] = summary[mode]["tps"] / summary["kernel"]["tps"]
                ratios[f"{mode}_cpu_per_request_ratio"] = (summary[mode]["cpu_tps_us"]
                                                           / summary["kernel"]["cpu_tps_us"])
        for key, value in ratios.items():
            print(f"{key}: {value:.2f}")
    print(json.dumps({"benchmark": "bench_embedded", "loop": args.loop,
                      "rounds": args.rounds, "msg_bytes": MSG,
                      "rtts": args.rtts, "conns": args.conns, "seconds": args.seconds,
                      "results": summary, "ratios": ratios, "errors": errors}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default="kernel,service,embedded")
    parser.add_argument("--rtts", type=int, default=5000)
    parser.add_argument("--conns", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--serve", choices=["kernel", "service", "embedded"])
    parser.add_argument("--ifname", default="")
    parser.add_argument("--client", choices=["lat", "tps"])
    parser.add_argument("--ip", default="")
    parser.add_argument("--profile", default="", help="cProfile the embedded server here")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio",
                        help="the server's event loop (the same one in every mode)")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.ifname, args.profile, args.loop)
    elif args.client == "lat":
        print(json.dumps(client_latency(args.ip, args.rtts)))
    elif args.client == "tps":
        print(json.dumps(client_tps(args.ip, args.conns, args.seconds)))
    else:
        if os.geteuid() != 0:
            sys.exit("bench_embedded: needs root (it builds a veth test bed)")
        orchestrate(args)


if __name__ == "__main__":
    main()
