"""Parsers of the clients' output: real output, truncated output, garbage."""

from __future__ import annotations

import json
import sys

import pytest

from joyride.bench import tools

SOCKPERF = (
    "sockperf: [Total Run] RunTime=3.000 sec; Warm up time=400 msec; "
    "SentMessages=178737; ReceivedMessages=178736\n"
    """\
sockperf: ========= Printing statistics for Server No: 0
sockperf: [Valid Duration] RunTime=2.550 sec; SentMessages=158434; ReceivedMessages=158434
sockperf: \x1b[2;35m====> avg-latency=8.039 (std-dev=9.412)\x1b[0m
sockperf: \x1b[2;35mTotal 158434 observations\x1b[0m; each percentile contains 1584.34 observations
sockperf: ---> <MAX> observation = 1958.982
sockperf: ---> percentile 99.999 = 1020.765
sockperf: ---> percentile 99.990 =  174.970
sockperf: ---> percentile 99.900 =   39.924
sockperf: ---> percentile 99.000 =   29.353
sockperf: ---> percentile 90.000 =    6.679
sockperf: ---> percentile 50.000 =    6.274
sockperf: ---> <MIN> observation =    6.074
""")

WRK = """\
Running 1s test @ http://198.18.77.1:9103/body
  2 threads and 100 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.71ms    2.10ms  30.12ms   88.50%
    Req/Sec    18.12k     1.20k   20.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    3.10ms
     90%    4.50ms
     99%   14.55ms
  36050 requests in 1.00s, 43.21MB read
  Socket errors: connect 0, read 12, write 0, timeout 3
  Non-2xx or 3xx responses: 5
Requests/sec:  36050.00
Transfer/sec:     43.21MB
"""


def test_sockperf() -> None:
    got = tools.parse_sockperf(SOCKPERF)
    assert got == {"p50_us": 6.274, "p99_us": 29.353, "p999_us": 39.924,
                   "round_trips": 158434.0, "total_round_trips": 178736.0}


def test_sockperf_without_percentiles_is_none() -> None:
    assert tools.parse_sockperf("sockperf: ERROR: Can`t connect socket (errno=111)") is None
    cut = SOCKPERF.split("percentile 99.900")[0]
    assert tools.parse_sockperf(cut) is None


def test_wrk() -> None:
    got = tools.parse_wrk(WRK)
    assert got is not None
    assert got["rps"] == 36050.0 and got["requests"] == 36050.0 and got["seconds"] == 1.0
    assert got["errors"] == 12 + 3 + 5
    assert got["p50_us"] == pytest.approx(812.0)
    assert got["p99_us"] == pytest.approx(14550.0)
    assert "p75_us" not in got


def test_wrk_garbage() -> None:
    assert tools.parse_wrk("") is None
    assert tools.parse_wrk("unable to connect to 198.18.0.1:80 Connection refused") is None


def test_iperf3() -> None:
    doc = {"end": {"sum_received": {"bytes": 1_250_000_000, "seconds": 2.0,
                                    "bits_per_second": 5e9}}}
    assert tools.parse_iperf3(json.dumps(doc)) == {"bytes": 1.25e9, "seconds": 2.0,
                                                   "gbps": 5.0}
    assert tools.parse_iperf3('{"error": "unable to connect"}') is None
    assert tools.parse_iperf3("not json") is None
    assert tools.parse_iperf3('{"end": {"sum_received": {"bytes": "x"}}}') is None


def test_json_line_takes_the_last_object() -> None:
    text = 'noise\n{"bytes": 1}\n{"bytes": 10, "seconds": 2, "gbps": 0.5}\n'
    assert tools.parse_json_line(text) == {"bytes": 10.0, "seconds": 2.0, "gbps": 0.5}
    assert tools.parse_json_line("") is None
    assert tools.parse_json_line('{"bytes": "many"}') is None
    assert tools.parse_json_line("{broken") is None


def test_command_lines() -> None:
    assert tools.wrk_client("http://x/", 2.4, 100) == [
        "wrk", "-t2", "-c100", "-d2s", "--latency", "http://x/"]
    assert "Connection: close" in tools.wrk_client("http://x/", 1, 20, close=True)
    assert tools.iperf3_client("1.2.3.4", 5201, 0.2, 4)[-5:] == ["1", "-P", "4", "-J", "-4"]
    assert tools.sockperf_pingpong("1.2.3.4", 11111, 3)[-4:] == ["-m", "64", "-t", "3"]


def test_run_client_measures_child_cpu_and_output() -> None:
    code = ("import time\nend = time.process_time() + 0.15\n"
            "while time.process_time() < end: pass\nprint('done')")
    res = tools.run_client([sys.executable, "-c", code], timeout=30)
    assert res.ok and res.stdout.strip() == "done"
    assert 0.1 <= res.cpu_seconds < 5.0
    failed = tools.run_client([sys.executable, "-c", "import sys; sys.exit('bad')"], 30)
    assert not failed.ok and "bad" in failed.tail()


def test_run_client_timeout_kills() -> None:
    res = tools.run_client([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert not res.ok and "timed out" in res.stderr
    assert res.wall_seconds < 10
