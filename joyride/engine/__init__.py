"""The engine: NIC ↔ wire ↔ TCP, demultiplexing, neighbours, timers. The only clock reader."""

from joyride.engine.engine import DEFAULT_EPHEMERAL, Activity, Engine, EngineError
from joyride.engine.network import KernelNetwork, NetworkView, StaticNetwork
from joyride.engine.nic import MemoryNic, Nic

__all__ = ["DEFAULT_EPHEMERAL", "Activity", "Engine", "EngineError", "KernelNetwork",
           "MemoryNic", "NetworkView", "Nic", "StaticNetwork"]
