"""The ports map's flags (SERVING, KERNEL_CONNS) as ``Steering`` writes them, without a
kernel: the map is a recording fake and the kernel's TCP table is patched."""

from __future__ import annotations

import ctypes

import pytest

from joyride.steer import kernel_sockets
from joyride.steer.program import (
    EPHEMERAL,
    KERNEL_CONNS,
    LISTEN,
    SERVING,
    SERVING6,
    Steering,
)


class Table(dict[int, int]):
    def __setitem__(self, key: ctypes.c_int, value: ctypes.c_uint8) -> None:  # type: ignore[override]
        super().__setitem__(key.value, value.value)


class Kernel:
    """Ports the kernel has connections on, and the port sets it was asked about."""

    def __init__(self) -> None:
        self.conns: set[int] = set()
        self.asked: list[set[int]] = []

    def connected_ports(self, ports: set[int]) -> set[int]:
        self.asked.append(set(ports))
        return set(ports) & self.conns


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Kernel:
    fake = Kernel()
    monkeypatch.setattr(kernel_sockets, "connected_ports", fake.connected_ports)
    return fake


def steering() -> tuple[Steering, Table]:
    steer = object.__new__(Steering)
    table = Table()
    steer._ports = {"tcp": {}, "udp": {}}
    steer._serving = {"tcp": {}, "udp": {}}
    steer._kernel_conns = set()
    steer._tables = {"tcp_ports": table, "udp_ports": Table()}
    return steer, table


def test_a_served_port_keeps_the_lookup_while_kernel_connections_remain(
        kernel: Kernel) -> None:
    steer, table = steering()
    steer.add_ports([8080])
    assert table[8080] == LISTEN
    kernel.conns.add(8080)  # the kernel's listener took a connection before Joyride listened
    steer.set_serving(8080, {4})
    assert table[8080] == LISTEN | SERVING | KERNEL_CONNS
    steer.refresh_kernel_connections()
    assert table[8080] == LISTEN | SERVING | KERNEL_CONNS
    kernel.conns.discard(8080)
    steer.refresh_kernel_connections()
    assert table[8080] == LISTEN | SERVING


def test_no_kernel_connection_no_flag(kernel: Kernel) -> None:
    steer, table = steering()
    steer.add_ports([8080])
    steer.set_serving(8080, {4})
    assert table[8080] == LISTEN | SERVING
    steer.set_serving(8080, ())
    assert table[8080] == LISTEN


def test_serving_is_per_family(kernel: Kernel) -> None:
    """SERVING for IPv4 listeners, SERVING6 for IPv6 ones (a dual-stack one: both)."""
    steer, table = steering()
    steer.add_ports([8080])
    steer.set_serving(8080, {6})
    assert table[8080] == LISTEN | SERVING6
    steer.set_serving(8080, {4, 6})
    assert table[8080] == LISTEN | SERVING | SERVING6
    steer.set_serving(8080, ())
    assert table[8080] == LISTEN


def test_ephemeral_ports_with_old_kernel_connections_are_flagged(kernel: Kernel) -> None:
    kernel.conns.add(60_005)
    steer, table = steering()
    steer.add_ports(range(60_000, 60_010), "tcp", EPHEMERAL)
    assert table[60_005] == EPHEMERAL | KERNEL_CONNS
    assert table[60_004] == EPHEMERAL


def test_ports_always_looked_up_are_not_watched(kernel: Kernel) -> None:
    """A steered port nobody in Joyride serves is looked up on every frame anyway: a
    busy kernel server there must not keep the table being read every second."""
    kernel.conns.add(9000)
    steer, table = steering()
    steer.add_ports([9000])
    assert table[9000] == LISTEN | KERNEL_CONNS
    kernel.asked.clear()
    steer.refresh_kernel_connections()
    assert table[9000] == LISTEN
    steer.refresh_kernel_connections()
    assert kernel.asked == [set()]
