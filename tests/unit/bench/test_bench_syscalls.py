"""``joyride.bench.syscalls``: reading ``perf trace -s``'s per-thread summary."""

from __future__ import annotations

from joyride.bench.syscalls import parse_summary, table

SUMMARY = """
 Summary of events:

 redis-server (4242), 6008 events, 61.0%

   syscall            calls  errors  total       min       avg       max       stddev
                                     (msec)    (msec)    (msec)    (msec)        (%)
   --------------- --------  ------ -------- --------- --------- ---------     ------
   read                1500      2     9.062     0.001     0.006     0.062      1.00%
   write               1500      0     8.100     0.001     0.005     0.040      1.10%
   epoll_wait             4      0     0.900     0.010     0.225     0.500     40.00%


 python (4300), 10 events, 1.0%

   syscall            calls  errors  total       min       avg       max       stddev
                                     (msec)    (msec)    (msec)    (msec)        (%)
   --------------- --------  ------ -------- --------- --------- ---------     ------
   epoll_wait             5      0     1.000     0.100     0.200     0.300      5.00%
"""


def test_calls_by_thread_and_name() -> None:
    got = parse_summary(SUMMARY)
    assert got[4242] == {"read": 1500, "write": 1500, "epoll_wait": 4}
    assert got[4300] == {"epoll_wait": 5}
    assert parse_summary("") == {}


def test_the_table_shows_totals_and_the_busiest_calls() -> None:
    rows = {"redis_get": {
        "kernel": {"application": {"read": 1.0, "write": 1.0}, "application_total": 2.0},
        "joyride": {"application": {"read": 1.0}, "application_total": 1.0,
                    "service": {"sendmsg": 1.0, "readv": 1.0}, "service_total": 2.0}}}
    text = table(rows)
    assert "| redis_get | **2.00** (read 1.00, write 1.00) | **1.00** (read 1.00) |" in text
    assert "**2.00** (sendmsg 1.00, readv 1.00) |" in text
