"""The steering program's counters: names from the C source, values summed over CPUs.

``bpf/steer.c`` defines the counter layout once, as ``enum jr_counter``; this module
reads the names from that enum so the two sides cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Final

SOURCE_NAME: Final = "steer.c"
_ENUM = re.compile(r"enum\s+jr_counter\s*\{(?P<body>.*?)\};", re.S)
_ITEM = re.compile(r"^\s*JR_C_(?P<name>[A-Z0-9_]+)\s*,?", re.M)

# How each reason is grouped in summaries (the prefix of its name says it).
GROUPS: Final = ("steered", "redirect_miss", "pass", "err")


def program_source() -> str:
    return resources.files("joyride.bpf").joinpath(SOURCE_NAME).read_text()


def counter_names(source: str | None = None) -> tuple[str, ...]:
    """Counter names in index order, lower-cased without the ``JR_C_`` prefix."""
    text = program_source() if source is None else source
    match = _ENUM.search(text)
    if match is None:
        raise ValueError("enum jr_counter not found in the steering program source")
    body = re.sub(r"/\*.*?\*/", "", match.group("body"), flags=re.S)
    names = [m.group("name").lower() for m in _ITEM.finditer(body)]
    if not names or names[-1] != "nr":
        raise ValueError("enum jr_counter must end with JR_C_NR")
    names.pop()
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate counter names in enum jr_counter: {names}")
    return tuple(names)


def group_of(name: str) -> str:
    for group in GROUPS:
        if name == group or name.startswith(group + "_"):
            return group
    raise ValueError(f"counter {name!r} belongs to no group {GROUPS}")


@dataclass(frozen=True)
class SteerCounters:
    """A snapshot of every reason counter, summed over CPUs."""

    values: Mapping[str, int]

    @classmethod
    def from_per_cpu(cls, names: Iterable[str], per_cpu: Iterable[Iterable[int]]) -> SteerCounters:
        return cls({name: sum(cpus) for name, cpus in zip(names, per_cpu, strict=True)})

    def __getitem__(self, name: str) -> int:
        return self.values[name]

    def totals(self) -> dict[str, int]:
        """Sums per group: steered, redirect_miss, pass, err (parse errors)."""
        out = dict.fromkeys(GROUPS, 0)
        for name, value in self.values.items():
            out[group_of(name)] += value
        return out

    def __sub__(self, earlier: SteerCounters) -> SteerCounters:
        return SteerCounters({k: v - earlier.values.get(k, 0) for k, v in self.values.items()})

    def nonzero(self) -> dict[str, int]:
        return {k: v for k, v in self.values.items() if v}
