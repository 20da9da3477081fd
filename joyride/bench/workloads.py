"""What is measured: each workload's client, servers and metrics.

A workload names the client (sockperf, iperf3, wrk, or the project's Python sender for
the Python sink), which servers it runs against, and how one client run becomes
metrics. CPU figures divide the run's CPU (``procstat``: every participating process
plus ksoftirqd) by the work done, so they stay meaningful on a busy shared machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from joyride.bench import tools
from joyride.bench.procstat import CpuUsage
from joyride.bench.servers import PY, Endpoint


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    better: str  # "lower" or "higher"


P50 = Metric("p50_us", "p50", "µs", "lower")
P99 = Metric("p99_us", "p99", "µs", "lower")
P999 = Metric("p999_us", "p99.9", "µs", "lower")
CPU_RT = Metric("cpu_us_per_rt", "CPU per round trip", "µs", "lower")
GBPS = Metric("gbps", "throughput", "Gbit/s", "higher")
CPU_GB = Metric("cpu_s_per_gb", "CPU per GB", "s", "lower")
RPS = Metric("rps", "requests/s", "req/s", "higher")
CPU_REQ = Metric("cpu_us_per_req", "CPU per request", "µs", "lower")
CPS = Metric("conn_per_s", "connections/s", "conn/s", "higher")
CPU_CONN = Metric("cpu_us_per_conn", "CPU per connection", "µs", "lower")

# A run whose client saw more errors than this fraction of its requests is a failure.
MAX_ERROR_FRACTION: Final = 0.01


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    kind: str  # "rr", "throughput", "wrk", "connrate"
    servers: tuple[str, ...]
    metrics: tuple[Metric, ...]
    mtu: int = 1500
    flows: int = 1
    connections: int = 1
    ipv6: bool = False  # the client reaches the server over IPv6

    @property
    def twin(self) -> str | None:
        """An IPv6 workload's IPv4 counterpart (its key without ``IPV6_PREFIX``)."""
        return self.key.removeprefix(IPV6_PREFIX) if self.ipv6 else None


IPV6_PREFIX: Final = "ipv6_"


def standard(mtus: tuple[int, ...] = (1500, 3498), flows: tuple[int, ...] = (1, 4),
             wrk_connections: int = 100, connrate_connections: int = 20,
             ipv6: bool = True) -> list[Workload]:
    """The workloads; with ``ipv6``, IPv6 twins of an RR, the one-flow and the wrk row
    (issue 18: served by the native servers under ``joyride run``; the embedded Python
    server's sockets are IPv4). sockperf (3.7) speaks IPv4 only: the RR twins are HTTP
    request-response over one connection (wrk -c1 to nginx), in both families."""
    out = [Workload("rr_64B", "RR 64 B, 1 connection (sockperf)",
                    "rr", ("sockperf", "python"), (P50, P99, P999, CPU_RT))]
    for mtu in mtus:
        for n in flows:
            out.append(Workload(f"throughput_{n}flow_mtu{mtu}",
                                f"throughput, {n} flow{'s' if n > 1 else ''}, MTU {mtu}",
                                "throughput", ("iperf3", "python"), (GBPS, CPU_GB),
                                mtu=mtu, flows=n, connections=n))
    out.append(Workload(f"wrk_{wrk_connections}conn",
                        f"wrk, {wrk_connections} connections, 1 KiB",
                        "wrk", ("nginx", "python"), (RPS, P50, P99, CPU_REQ),
                        connections=wrk_connections))
    out.append(Workload("new_connections", f"new connections (wrk -c{connrate_connections}, "
                        "Connection: close)", "connrate", ("nginx", "python"),
                        (CPS, CPU_CONN), connections=connrate_connections))
    if ipv6:
        mtu = mtus[0]
        rr_http = Workload("rr_http_1conn", "RR HTTP 1 KiB, 1 connection (wrk -c1)", "wrk",
                           ("nginx",), (P50, P99, RPS, CPU_REQ))
        out.append(rr_http)
        twins = [rr_http,
                 Workload(f"throughput_1flow_mtu{mtu}", f"throughput, 1 flow, MTU {mtu}",
                          "throughput", ("iperf3",), (GBPS, CPU_GB), mtu=mtu),
                 Workload(f"wrk_{wrk_connections}conn",
                          f"wrk, {wrk_connections} connections, 1 KiB", "wrk", ("nginx",),
                          (RPS, P50, P99, CPU_REQ), connections=wrk_connections)]
        out += [replace(w, key=IPV6_PREFIX + w.key, title=f"IPv6 {w.title}", ipv6=True)
                for w in twins]
    return out


Parser = Callable[[str], "dict[str, float] | None"]


def client(w: Workload, ep: Endpoint, ip: str, seconds: float) -> tuple[list[str], Parser]:
    """The client's argv (to run in the peer namespace) and the parser of its output."""
    if w.kind == "rr":
        port = ep.ports.get("sockperf", ep.ports.get("rr", 0))
        return tools.sockperf_pingpong(ip, port, seconds), tools.parse_sockperf
    if w.kind == "throughput":
        if ep.name == "iperf3":
            return tools.iperf3_client(ip, ep.ports["iperf3"], seconds, w.flows,
                                       ipv6=w.ipv6), tools.parse_iperf3
        return [PY, "-m", "joyride.bench.pysend", ip, str(ep.ports["sink"]), "--seconds",
                str(seconds), "--flows", str(w.flows)], tools.parse_json_line
    port = ep.ports.get("nginx", ep.ports.get("http", 0))
    url = f"http://[{ip}]:{port}/body" if w.ipv6 else f"http://{ip}:{port}/body"
    return tools.wrk_client(url, seconds, w.connections, close=w.kind == "connrate"), \
        tools.parse_wrk


def metrics_of(w: Workload, parsed: dict[str, float], cpu: CpuUsage) -> dict[str, float]:
    """The workload's metrics from the client's parsed output and the run's CPU."""
    if w.kind == "rr":
        trips = parsed.get("total_round_trips") or parsed["round_trips"]
        return {P50.key: parsed["p50_us"], P99.key: parsed["p99_us"],
                P999.key: parsed["p999_us"], CPU_RT.key: cpu.processes / trips * 1e6}
    if w.kind == "throughput":
        return {GBPS.key: parsed["gbps"], CPU_GB.key: cpu.processes / (parsed["bytes"] / 1e9)}
    if parsed["errors"] > MAX_ERROR_FRACTION * parsed["requests"]:
        raise ValueError(f"{parsed['errors']:.0f} errors in {parsed['requests']:.0f} requests")
    per = cpu.processes / parsed["requests"] * 1e6
    if w.kind == "wrk":
        return {RPS.key: parsed["rps"], P50.key: parsed.get("p50_us", float("nan")),
                P99.key: parsed.get("p99_us", float("nan")), CPU_REQ.key: per}
    return {CPS.key: parsed["rps"], CPU_CONN.key: per}
