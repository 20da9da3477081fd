"""CPU time and memory as the kernel accounts them, read from ``/proc``.

Two views of the CPU a run costs, both reported:

* **processes**: user + system time of every process taking part (servers and their
  children, the network service, the client, read before/after from
  ``/proc/<pid>/stat``; the client's from ``wait4`` rusage) plus the ``ksoftirqd``
  threads. On veth the receive softirq runs in the context of the process that
  transmits (``veth_xmit`` raises it and it runs at ``local_bh_enable``) or in
  ``ksoftirqd``; this kernel has no ``CONFIG_IRQ_TIME_ACCOUNTING``, so softirq time
  that ticks inside a process is charged to that process's system time. Together this
  counts the softirq work once, and nothing from unrelated processes.
* **system**: busy time of every CPU from ``/proc/stat`` (user, nice, system, irq,
  softirq, steal). Complete by definition, but it includes whatever else the machine
  runs at the same time, so it is only a cross-check on a shared machine.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@dataclass(frozen=True)
class PidStat:
    pid: int
    comm: str
    ppid: int
    ticks: int  # utime + stime, in clock ticks
    cpu: int = -1  # the CPU it last ran on (field 39, "processor")


def parse_pid_stat(text: str) -> PidStat | None:
    """One ``/proc/<pid>/stat`` line (proc(5)); None when it is not parseable.

    ``comm`` is in parentheses and may itself contain spaces and parentheses, so the
    fields after it are found from the *last* closing parenthesis.
    """
    open_at, close_at = text.find("("), text.rfind(")")
    if open_at < 0 or close_at < open_at:
        return None
    try:
        pid = int(text[:open_at])
        rest = text[close_at + 1:].split()
        # rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15, processor 39.
        ppid, utime, stime = int(rest[1]), int(rest[11]), int(rest[12])
        cpu = int(rest[36]) if len(rest) > 36 else -1
    except (ValueError, IndexError):
        return None
    return PidStat(pid, text[open_at + 1:close_at], ppid, utime + stime, cpu)


def read_pid_stat(pid: int) -> PidStat | None:
    try:
        return parse_pid_stat((PROC / str(pid) / "stat").read_text())
    except OSError:  # the process is gone
        return None


def all_pids() -> list[int]:
    return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]


def snapshot() -> dict[int, PidStat]:
    """Every process's stat line now (processes that vanish mid-scan are skipped)."""
    out = {}
    for pid in all_pids():
        st = read_pid_stat(pid)
        if st is not None:
            out[pid] = st
    return out


def descendants(roots: Iterable[int], table: Mapping[int, PidStat]) -> set[int]:
    """``roots`` (those alive in ``table``) and every process below them."""
    children: dict[int, list[int]] = {}
    for st in table.values():
        children.setdefault(st.ppid, []).append(st.pid)
    found: set[int] = set()
    stack = [r for r in roots if r in table]
    while stack:
        pid = stack.pop()
        if pid in found:
            continue
        found.add(pid)
        stack.extend(children.get(pid, ()))
    return found


def softirq_threads(table: Mapping[int, PidStat]) -> set[int]:
    return {pid for pid, st in table.items() if st.comm.startswith("ksoftirqd/")}


@dataclass(frozen=True)
class SystemCpu:
    busy: int  # ticks, all CPUs
    total: int
    softirq: int

    @classmethod
    def parse(cls, text: str) -> SystemCpu:
        """The aggregate ``cpu`` line of ``/proc/stat``."""
        for line in text.splitlines():
            fields = line.split()
            if fields and fields[0] == "cpu":
                vals = [int(v) for v in fields[1:]]
                vals += [0] * (8 - len(vals))
                user, nice, system, idle, iowait, irq, softirq, steal = vals[:8]
                # guest time is already inside user/nice (proc(5)), so it is not added.
                busy = user + nice + system + irq + softirq + steal
                return cls(busy, busy + idle + iowait, softirq)
        raise ValueError("no aggregate cpu line in /proc/stat")

    @classmethod
    def read(cls) -> SystemCpu:
        return cls.parse((PROC / "stat").read_text())


@dataclass
class CpuUsage:
    """CPU seconds one measured run cost."""

    processes: float  # participants + ksoftirqd, see the module docstring
    system: float  # /proc/stat busy time, all CPUs (includes unrelated load)
    softirq_system: float  # /proc/stat softirq part of ``system``

    def to_json(self) -> dict[str, float]:
        return {"processes": round(self.processes, 4), "system": round(self.system, 4),
                "softirq_system": round(self.softirq_system, 4)}


class CpuMeter:
    """Measures the CPU of the process trees under ``roots`` plus ksoftirqd over a run.

    Call ``start()`` before the client starts and ``stop(extra_seconds)`` after it
    ended, passing the client's own rusage time (a process that has exited has no
    ``/proc`` entry left to read).
    """

    def __init__(self, roots: Iterable[int]) -> None:
        self.roots = list(roots)
        self._before: dict[int, int] = {}
        self._sys_before: SystemCpu | None = None

    def _tracked(self) -> dict[int, int]:
        table = snapshot()
        pids = descendants(self.roots, table) | softirq_threads(table)
        return {pid: table[pid].ticks for pid in pids}

    def start(self) -> None:
        self._before = self._tracked()
        self._sys_before = SystemCpu.read()

    def stop(self, extra_seconds: float = 0.0) -> CpuUsage:
        sys_after = SystemCpu.read()
        after = self._tracked()
        assert self._sys_before is not None, "stop() before start()"
        ticks = sum(max(0, t - self._before.get(pid, 0)) for pid, t in after.items())
        return CpuUsage(
            processes=ticks / CLK_TCK + extra_seconds,
            system=(sys_after.busy - self._sys_before.busy) / CLK_TCK,
            softirq_system=(sys_after.softirq - self._sys_before.softirq) / CLK_TCK)


def parse_status_kb(text: str, key: str) -> int | None:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmHWM``: peak resident set)."""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            with contextlib.suppress(ValueError, IndexError):
                return int(value.split()[0])
    return None


def peak_rss_kb(pids: Iterable[int]) -> int | None:
    """Sum of the peak resident sets (``VmHWM``) of ``pids`` that are alive."""
    total, seen = 0, False
    for pid in pids:
        try:
            text = (PROC / str(pid) / "status").read_text()
        except OSError:
            continue
        kb = parse_status_kb(text, "VmHWM")
        if kb is not None:
            total += kb
            seen = True
    return total if seen else None
