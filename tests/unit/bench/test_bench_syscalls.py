"""``joyride.bench.syscalls``: reading ``perf stat``'s counts of the system-call
tracepoints."""

from __future__ import annotations

from joyride.bench.syscalls import counted_names, parse_stat, table

STAT = """# started on Sun Dec  6 07:30:00 2026

3010,,raw_syscalls:sys_enter,2000000000,100.00,,
1500,,syscalls:sys_enter_read,2000000000,100.00,,
1500,,syscalls:sys_enter_write,2000000000,100.00,,
0,,syscalls:sys_enter_sendmsg,2000000000,100.00,,
4,,syscalls:sys_enter_epoll_wait,2000000000,100.00,,
<not counted>,,syscalls:sys_enter_futex,0,0.00,,
"""


def test_calls_by_name_and_the_rest_as_other() -> None:
    got = parse_stat(STAT)
    assert got == {"read": 1500, "write": 1500, "epoll_wait": 4, "other": 6}
    assert parse_stat("") == {}


def test_only_names_the_kernel_has_a_tracepoint_for() -> None:
    names = counted_names()
    assert "read" in names or names == []  # [] where tracefs is not mounted
    assert all(not n.startswith("sys_") for n in names)


def test_the_table_shows_totals_and_the_busiest_calls() -> None:
    rows = {"redis_get": {
        "kernel": {"application": {"read": 1.0, "write": 1.0}, "application_total": 2.0},
        "joyride": {"application": {"read": 1.0}, "application_total": 1.0,
                    "service": {"sendmsg": 1.0, "readv": 1.0}, "service_total": 2.0}}}
    text = table(rows)
    assert "| redis_get | **2.00** (read 1.00, write 1.00) | **1.00** (read 1.00) |" in text
    assert "**2.00** (sendmsg 1.00, readv 1.00) |" in text
