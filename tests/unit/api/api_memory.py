"""Two in-process stacks joined by an in-memory wire (no privileges, real TCP core)."""

from __future__ import annotations

from joyride.embed.stack import Stack
from joyride.engine import Engine, MemoryNic, StaticNetwork

IP_A, IP_B = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
PORT = 8080


def stack_pair() -> tuple[Stack, Stack]:
    """Server stack A (owns PORT) and client stack B, on one wire."""
    nic_a, nic_b = MemoryNic.pair()
    net_a = StaticNetwork("a0", MAC_A, frozenset({IP_A}), {IP_B: MAC_B})
    net_b = StaticNetwork("b0", MAC_B, frozenset({IP_B}), {IP_A: MAC_A})
    return (Stack(Engine(nic_a, net_a), ports=frozenset({PORT})),
            Stack(Engine(nic_b, net_b)))


