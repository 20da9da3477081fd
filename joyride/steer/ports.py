"""Sets of ports, written as the kernel writes them: ``8080,9000-9010``.

One syntax serves the CLI (``--ports``), the state file and the kernel's
``net.ipv4.ip_local_reserved_ports`` sysctl (Documentation/networking/ip-sysctl.rst:
"comma separated list of ranges"), so one parser and one formatter serve all three.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

from joyride.errors import JoyrideError

PORT_MIN: Final = 1
PORT_MAX: Final = 65535


class PortSpecError(JoyrideError):
    """A port list the user wrote cannot be understood."""

    exit_code = 2  # the argparse convention for bad command-line arguments


class PortSet:
    """An immutable set of TCP/UDP port numbers (1..65535) with range syntax."""

    __slots__ = ("_ports",)

    def __init__(self, ports: Iterable[int] = ()) -> None:
        frozen = frozenset(ports)
        for port in frozen:
            if not PORT_MIN <= port <= PORT_MAX:
                raise PortSpecError(f"port {port} out of range {PORT_MIN}..{PORT_MAX}")
        self._ports = frozen

    @classmethod
    def parse(cls, spec: str, *, allow_empty: bool = False) -> PortSet:
        """Parse ``"8080,9000-9010"``; whitespace around items is ignored.

        Port 0 is refused: it means "any port" to bind(2) and is never a local port a
        peer can address.
        """
        ports: set[int] = set()
        items = [item.strip() for item in spec.split(",")]
        if items == [""]:
            if allow_empty:
                return cls()
            raise PortSpecError("empty port list: give ports like 8080,9000-9010")
        for item in items:
            if not item:
                raise PortSpecError(f"empty item in port list {spec!r}")
            lo_text, dash, hi_text = item.partition("-")
            lo = _parse_port(lo_text, spec)
            hi = _parse_port(hi_text, spec) if dash else lo
            if hi < lo:
                raise PortSpecError(f"range {item!r} in {spec!r} runs backwards")
            ports.update(range(lo, hi + 1))
        return cls(ports)

    def ranges(self) -> Iterator[tuple[int, int]]:
        """Maximal runs of consecutive ports, ascending."""
        start = prev = -2
        for port in sorted(self._ports):
            if port != prev + 1:
                if start >= 0:
                    yield start, prev
                start = port
            prev = port
        if start >= 0:
            yield start, prev

    def __str__(self) -> str:
        return ",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in self.ranges())

    def __repr__(self) -> str:
        return f"PortSet({str(self)!r})"

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._ports))

    def __len__(self) -> int:
        return len(self._ports)

    def __contains__(self, port: object) -> bool:
        return port in self._ports

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PortSet) and self._ports == other._ports

    def __hash__(self) -> int:
        return hash(self._ports)

    def __or__(self, other: PortSet) -> PortSet:
        return PortSet(self._ports | other._ports)

    def __and__(self, other: PortSet) -> PortSet:
        return PortSet(self._ports & other._ports)

    def __sub__(self, other: PortSet) -> PortSet:
        return PortSet(self._ports - other._ports)

    def isdisjoint(self, other: PortSet) -> bool:
        return self._ports.isdisjoint(other._ports)


def _parse_port(text: str, spec: str) -> int:
    text = text.strip()
    # isascii: "²".isdigit() is True; digits only: "-5" and "5-" are errors, not ranges.
    if not (text.isascii() and text.isdigit()):
        raise PortSpecError(f"not a port number: {text!r} in {spec!r}")
    port = int(text)
    if port == 0:
        raise PortSpecError(f"port 0 in {spec!r}: 0 is not a port a peer can reach")
    if port > PORT_MAX:
        raise PortSpecError(f"port {port} in {spec!r} is beyond {PORT_MAX}")
    return port
