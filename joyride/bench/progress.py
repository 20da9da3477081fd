"""A progress line for long-running commands (demo, bench).

On a terminal one line is rewritten in place (step count, bar, elapsed time and an
estimate of what is left from the average step so far); elsewhere (CI logs, pipes)
every step is one plain line, so the log still shows where a run stopped.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def fmt_seconds(seconds: float) -> str:
    whole = max(0, round(seconds))
    return f"{whole // 60:d}:{whole % 60:02d}"


def bar(fraction: float, width: int = 24) -> str:
    fraction = min(1.0, max(0.0, fraction))
    full = int(fraction * width)
    return "#" * full + "-" * (width - full)


class Progress:
    def __init__(self, total: int, *, stream: TextIO | None = None,
                 tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = max(1, total)
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._clock = clock
        self.t0 = self._clock()
        self._open_line = False

    def line(self, label: str) -> str:
        elapsed = self._clock() - self.t0
        left = ""
        if 0 < self.done < self.total:
            left = f", ~{fmt_seconds(elapsed / self.done * (self.total - self.done))} left"
        return (f"[{bar(self.done / self.total)}] {self.done}/{self.total} "
                f"{fmt_seconds(elapsed)}{left}  {label}")

    def step(self, label: str) -> None:
        """Announce the step about to run (counted as done by ``advance``)."""
        text = self.line(label)
        if self.tty:
            self.stream.write("\r\x1b[2K" + text[:160])
            self._open_line = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def tick(self, label: str) -> None:
        """Refresh the line while a step runs (terminals only: logs get one line a step)."""
        if self.tty:
            self.step(label)

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)

    def note(self, message: str) -> None:
        """A message on its own line, above the progress line."""
        if self._open_line:
            self.stream.write("\r\x1b[2K")
            self._open_line = False
        self.stream.write(message + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False
        self.stream.flush()
