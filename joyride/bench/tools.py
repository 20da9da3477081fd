"""The clients: how to run them and how to read what they print.

Parsers never raise on odd output: they return None (the run is recorded as failed,
with the tool's own words), because a benchmark that dies on one bad run measures
nothing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any

# -- the client's namespace ----------------------------------------------------------------


def prepare_load_generator(node: Any) -> None:
    """Set ``node`` (the test bed's peer namespace) up as load generators are: its
    ``connect()`` may reuse a local port whose connection is in TIME-WAIT once a second
    has passed (``net.ipv4.tcp_tw_reuse=1``; timestamps keep old segments out, RFC 6191).

    Without it, a new-connections run whose client closes first leaves ~15 000 client
    ports in TIME-WAIT, and every later run's ``connect()`` spends about 1.7 ms of CPU
    searching for a free port: 15 000 connections/s fell to 1 100 in the second
    repetition, for the kernel and Joyride alike, measuring only the client."""
    node.sysctl("net.ipv4.tcp_tw_reuse", "1")


# -- running a client ---------------------------------------------------------------------


@dataclass
class ClientResult:
    returncode: int
    stdout: str
    stderr: str
    cpu_seconds: float  # user + system of the client (wait4 rusage, threads included)
    wall_seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, n: int = 300) -> str:
        text = (self.stderr.strip() or self.stdout.strip()).replace("\n", " | ")
        return text[-n:]


def run_client(argv: list[str], timeout: float) -> ClientResult:
    """Run ``argv`` to completion and return its output and its own CPU time.

    ``ip netns exec`` replaces itself with the command, so the child's rusage is the
    client's. On timeout the client is killed (by its pid) and the run fails.
    """
    cpu = ChildCpu()
    cpu.start()
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\n(timed out after {timeout:.0f} s)".encode()
    except BaseException:  # Ctrl-C: never leave the client behind
        proc.kill()
        proc.wait()
        raise
    wall = time.monotonic() - t0
    return ClientResult(proc.returncode, out.decode(errors="replace"),
                        err.decode(errors="replace"), cpu.stop(), wall)


class ChildCpu:
    """CPU of children reaped between ``start`` and ``stop`` (RUSAGE_CHILDREN delta).

    Only the benchmark's main thread reaps clients while it runs, so the delta is
    exactly the client's time (all of its threads).
    """

    def __init__(self) -> None:
        self._t0 = 0.0

    @staticmethod
    def _now() -> float:
        ru = os.times()
        return ru.children_user + ru.children_system

    def start(self) -> None:
        self._t0 = self._now()

    def stop(self) -> float:
        return max(0.0, self._now() - self._t0)


# -- sockperf ping-pong ---------------------------------------------------------------------

_SOCKPERF_PCT = re.compile(r"percentile\s+([\d.]+)\s*=\s*([\d.]+)")
_SOCKPERF_OBS = re.compile(r"Total\s+(\d+)\s+observations")
_SOCKPERF_TOTAL = re.compile(r"\[Total Run\].*?ReceivedMessages=(\d+)")


def sockperf_pingpong(ip: str, port: int, seconds: float, size: int = 64) -> list[str]:
    return ["sockperf", "ping-pong", "--tcp", "-i", ip, "-p", str(port), "-m", str(size),
            "-t", str(max(1, round(seconds)))]


def parse_sockperf(text: str) -> dict[str, float] | None:
    """p50/p99/p99.9 (µs) and the number of round trips from sockperf's summary.

    sockperf reports half the round-trip time ("latency"), measured by the client.
    """
    pct = {float(q): float(v) for q, v in _SOCKPERF_PCT.findall(text)}
    obs = _SOCKPERF_OBS.search(text)
    if not {50.0, 99.0, 99.9} <= set(pct) or obs is None:
        return None
    total = _SOCKPERF_TOTAL.search(text)
    out = {"p50_us": pct[50.0], "p99_us": pct[99.0], "p999_us": pct[99.9],
           "round_trips": float(obs.group(1))}
    if total is not None:  # warm-up included: what the CPU time was spent on
        out["total_round_trips"] = float(total.group(1))
    return out


# -- iperf3 --------------------------------------------------------------------------------


def iperf3_client(ip: str, port: int, seconds: float, flows: int,
                  ipv6: bool = False) -> list[str]:
    return ["iperf3", "-c", ip, "-p", str(port), "-t", str(max(1, round(seconds))),
            "-P", str(flows), "-J", "-6" if ipv6 else "-4"]


def parse_iperf3(text: str) -> dict[str, float] | None:
    """Received bytes and rate from ``iperf3 -J`` (the receiver's side of the test)."""
    try:
        doc: Any = json.loads(text)
        got = doc["end"]["sum_received"]
        return {"bytes": float(got["bytes"]), "seconds": float(got["seconds"]),
                "gbps": float(got["bits_per_second"]) / 1e9}
    except (ValueError, KeyError, TypeError):
        return None


# -- wrk -----------------------------------------------------------------------------------

_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_REQ = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)")
_WRK_ERR = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_PCT = re.compile(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def wrk_client(url: str, seconds: float, connections: int, threads: int = 2,
               close: bool = False) -> list[str]:
    threads = min(threads, connections)  # wrk wants a connection per thread at least
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--latency"]
    if close:
        # A new connection per request: wrk reconnects when the server closes.
        argv += ["-H", "Connection: close"]
    return [*argv, url]


def parse_wrk(text: str) -> dict[str, float] | None:
    """Requests, rate, errors and latency percentiles (µs) from ``wrk --latency``."""
    rps, req = _WRK_RPS.search(text), _WRK_REQ.search(text)
    if rps is None or req is None:
        return None
    out = {"rps": float(rps.group(1)), "requests": float(req.group(1)),
           "seconds": float(req.group(2)) * _UNIT_S[req.group(3)]}
    err = _WRK_ERR.search(text)
    non2xx = _WRK_NON2XX.search(text)
    out["errors"] = float(sum(int(g) for g in err.groups()) if err else 0) + float(
        non2xx.group(1) if non2xx else 0)
    for q, value, unit in _WRK_PCT.findall(text):
        out[f"p{q}_us"] = float(value) * _UNIT_S[unit] * 1e6
    return out


# -- the project's Python sender ---------------------------------------------------------------


def parse_json_line(text: str) -> dict[str, float] | None:
    """The last line of ``pysend`` output: one JSON object of numbers."""
    lines = [line for line in text.strip().splitlines() if line.startswith("{")]
    if not lines:
        return None
    try:
        doc = json.loads(lines[-1])
        return {str(k): float(v) for k, v in doc.items()}
    except (ValueError, TypeError, AttributeError):
        return None
