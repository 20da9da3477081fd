"""Unmodified servers under ``joyride run``: nginx (2 workers: fork + epoll across
processes), redis-server, iperf3; kernel clients from the peer namespace."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from service_helpers import JOYRIDE, stats, wait_listening, wait_port

from joyride.bench import servers
from joyride.testbed import Node, Testbed

pytestmark = pytest.mark.integration

BODY = b"0123456789abcdef" * 4096  # 64 KiB, checked byte for byte by wrk's Lua hook

WRK_CHECK = """
expected = string.rep("0123456789abcdef", 4096)
bad = 0
threads = {}
function setup(thread) table.insert(threads, thread) end
function response(status, headers, body)
  if status ~= 200 or body ~= expected then bad = bad + 1 end
end
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("bad") end
  io.write(string.format("JOYRIDE_BAD %d\\n", total))
end
"""


def nginx_conf(tmp: Path, port: int) -> Path:
    """Two workers sharing one listener (fork + epoll across processes), BODY served."""
    conf = servers.nginx_conf(tmp, port, workers=2, reuseport=False)
    (tmp / "www" / "file.bin").write_bytes(BODY)
    return conf


def wrk(node: Node, url: str, script: Path, *, connections: int = 100,
        seconds: int = 3) -> tuple[float, int, str]:
    out = node.run("wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url,
                   timeout=seconds + 60).stdout.decode()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    bad = int(re.search(r"JOYRIDE_BAD (\d+)", out)[1])  # type: ignore[index]
    return rps, bad, out


def test_nginx_two_workers_wrk_100_connections(service_bed: Testbed, tmp_path: Path) -> None:
    bed = service_bed
    script = tmp_path / "check.lua"
    script.write_text(WRK_CHECK)
    joy_dir, kernel_dir = tmp_path / "joy", tmp_path / "kernel"
    joy_dir.mkdir()
    kernel_dir.mkdir()
    before = stats(bed.joy)["datapath"]["service"].get("delivered", 0)
    bed.joy.popen(JOYRIDE, "run", "--", "nginx", "-c", str(nginx_conf(joy_dir, 8093)),
                  "-e", str(joy_dir / "error.log"), stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)
    # The same nginx on the kernel, side by side (port 8100 is not accelerated).
    bed.joy.popen("nginx", "-c", str(nginx_conf(kernel_dir, 8100)), "-e",
                  str(kernel_dir / "error.log"), stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)
    wait_port(bed.peer, bed.joy.ip, 8093)
    wait_port(bed.peer, bed.joy.ip, 8100)
    rps, bad, out = wrk(bed.peer, f"http://{bed.joy.ip}:8093/file.bin", script)
    assert bad == 0 and "Socket errors" not in out and "Non-2xx" not in out, out
    assert rps > 50, out
    delivered = stats(bed.joy)["datapath"]["service"]["delivered"] - before
    assert delivered >= 100  # every wrk connection came through Joyride
    kernel_rps, kernel_bad, kout = wrk(bed.peer, f"http://{bed.joy.ip}:8100/file.bin", script)
    assert kernel_bad == 0, kout
    # Both workers served: the accept queue is shared across processes.
    print(json.dumps({"nginx_wrk_rps": {"joyride": rps, "kernel": kernel_rps,
                                        "ratio": round(rps / kernel_rps, 3)}}))


def test_redis_benchmark(service_bed: Testbed) -> None:
    bed = service_bed
    bed.joy.popen(JOYRIDE, "run", "--", "redis-server", "--port", "6379", "--bind", "0.0.0.0",
                  "--protected-mode", "no", "--save", "", "--appendonly", "no",
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(bed.peer, bed.joy.ip, 6379)
    before = stats(bed.joy)["datapath"]["service"].get("delivered", 0)
    results = {}
    for label, extra in (("plain", []), ("pipelined", ["-P", "16"])):
        out = bed.peer.run("redis-benchmark", "-h", bed.joy.ip, "-p", "6379", "-t", "set,get",
                           "-n", "20000", "-c", "20", "--csv", *extra,
                           timeout=120).stdout.decode()
        rows = {line.split(",")[0].strip('"'): float(line.split(",")[1].strip('"'))
                for line in out.splitlines()[1:] if line.count(",") >= 1}
        assert set(rows) >= {"SET", "GET"}, out
        assert all(v > 0 for v in rows.values()), out
        results[label] = rows
    assert stats(bed.joy)["datapath"]["service"]["delivered"] - before >= 40
    # Values round-trip exactly.
    cli = ["redis-cli", "-h", bed.joy.ip, "-p", "6379"]
    bed.peer.run(*cli, "SET", "joyride", "x" * 100000)
    got = bed.peer.run(*cli, "GET", "joyride").stdout.decode().strip()
    assert got == "x" * 100000
    print(json.dumps({"redis_rps": results}))


# One iperf3 server per direction: a server still finishing one test refuses the next
# client as busy, and closes with its cookie unread, which resets the connection (as
# Linux does: test_close_unread.py).
IPERF_PORTS = {False: 5201, True: 8092}  # by reverse


@pytest.fixture(scope="module")
def iperf3_server(service_bed: Testbed) -> Testbed:
    for port in IPERF_PORTS.values():
        service_bed.joy.popen(JOYRIDE, "run", "--", "iperf3", "-s", "-4", "-p", str(port),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # No probe: iperf3 counts a connection that closes at once as a failed test and
    # builds its listener again; a client in that window is refused or reset.
    for port in IPERF_PORTS.values():
        wait_listening(service_bed.joy, port)
    return service_bed


@pytest.mark.parametrize("reverse", [False, True], ids=["peer-sends", "joyride-sends"])
def test_iperf3_both_directions(iperf3_server: Testbed, reverse: bool) -> None:
    bed = iperf3_server
    before = stats(bed.joy)["datapath"]["service"].get("delivered", 0)
    proc = bed.peer.run("iperf3", "-c", bed.joy.ip, "-p", str(IPERF_PORTS[reverse]), "-t",
                        "2", "-J", *(["-R"] if reverse else []), timeout=60)
    report = json.loads(proc.stdout)
    received = report["end"]["sum_received"]
    assert received["bytes"] > 1 << 20
    # Control and data connections both came through Joyride.
    assert stats(bed.joy)["datapath"]["service"]["delivered"] - before >= 2
    print(json.dumps({"iperf3_mbps": {"reverse": reverse,
                                      "mbps": round(received["bits_per_second"] / 1e6, 1)}}))


def sockperf_latency(node: Node, ip: str, port: int) -> tuple[float, str]:
    out = node.run("sockperf", "pp", "--tcp", "-i", ip, "-p", str(port), "-t", "2", "-m", "64",
                   timeout=60).stdout.decode()
    match = re.search(r"avg-latency=([\d.]+)", out) or re.search(r"avg-lat=\s*([\d.]+)", out)
    assert match is not None, out
    return float(match[1]), out


def test_sockperf_ping_pong(service_bed: Testbed) -> None:
    """sockperf's server answers with sendto() to the address recvfrom() reported (none,
    from TCP): the shim must let the send through (it crashed before)."""
    bed = service_bed
    server = bed.joy.popen(JOYRIDE, "run", "--", "sockperf", "sr", "--tcp", "-p", "8094",
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kernel = bed.joy.popen("sockperf", "sr", "--tcp", "-p", "8101",
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(bed.peer, bed.joy.ip, 8094)
    wait_port(bed.peer, bed.joy.ip, 8101)
    before = stats(bed.joy)["datapath"]["service"].get("delivered", 0)
    joy_us, out = sockperf_latency(bed.peer, bed.joy.ip, 8094)
    assert server.poll() is None, server.stderr.read() if server.stderr else b""
    assert "ERROR" not in out and joy_us > 0, out
    assert stats(bed.joy)["datapath"]["service"]["delivered"] - before >= 1
    kernel_us, _ = sockperf_latency(bed.peer, bed.joy.ip, 8101)
    assert kernel.poll() is None
    print(json.dumps({"sockperf_tcp_pp_us": {"joyride": joy_us, "kernel": kernel_us,
                                             "ratio": round(joy_us / kernel_us, 2)}}))
