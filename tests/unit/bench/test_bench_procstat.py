"""Reading CPU time and memory from /proc text."""

from __future__ import annotations

import os
import time

from joyride.bench import procstat

STAT = ("1234 (nginx: worker (1)) S 1200 1234 1234 0 -1 4194560 500 0 0 0 "
        "170 30 0 0 20 0 1 0 100 1000000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 "
        "0 0 17 1 0 0 0 0 0")


def test_pid_stat_with_parentheses_and_spaces_in_comm() -> None:
    st = procstat.parse_pid_stat(STAT)
    assert st is not None
    assert st.pid == 1234 and st.ppid == 1200
    assert st.comm == "nginx: worker (1)"
    assert st.ticks == 200  # utime 170 + stime 30
    assert st.cpu == 1  # field 39, after exit_signal 17


def test_pid_stat_garbage_is_none() -> None:
    assert procstat.parse_pid_stat("") is None
    assert procstat.parse_pid_stat("12 (x") is None
    assert procstat.parse_pid_stat("x (y) S 1") is None
    assert procstat.parse_pid_stat("12 (y) S") is None


def test_descendants_follow_ppid_links() -> None:
    table = {
        1: procstat.PidStat(1, "init", 0, 0),
        10: procstat.PidStat(10, "master", 1, 5),
        11: procstat.PidStat(11, "worker", 10, 7),
        12: procstat.PidStat(12, "helper", 11, 1),
        20: procstat.PidStat(20, "other", 1, 9),
    }
    assert procstat.descendants([10], table) == {10, 11, 12}
    assert procstat.descendants([99], table) == set()  # gone: nothing to count


def test_system_cpu_counts_softirq_as_busy() -> None:
    text = "cpu  100 5 50 1000 20 3 7 2 0 0\ncpu0 50 2 25 500 10 1 3 1 0 0\n"
    cpu = procstat.SystemCpu.parse(text)
    assert cpu.busy == 100 + 5 + 50 + 3 + 7 + 2
    assert cpu.total == cpu.busy + 1000 + 20
    assert cpu.softirq == 7


def test_status_kb() -> None:
    text = "Name:\tpython3\nVmHWM:\t  123456 kB\nVmRSS:\t 1000 kB\n"
    assert procstat.parse_status_kb(text, "VmHWM") == 123456
    assert procstat.parse_status_kb(text, "VmSwap") is None
    assert procstat.parse_status_kb("VmHWM:\tlots\n", "VmHWM") is None


def test_meter_sees_own_cpu_time() -> None:
    """Burn ~0.2 s of CPU in this process: the meter rooted here must see it."""
    meter = procstat.CpuMeter([os.getpid()])
    meter.start()
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    usage = meter.stop(extra_seconds=1.0)
    assert 1.1 <= usage.processes <= 1.0 + 2.0
    assert usage.system >= 0.1
    assert procstat.peak_rss_kb([os.getpid()]) is not None
    assert procstat.peak_rss_kb([2 ** 22 + 1]) is None  # no such process
