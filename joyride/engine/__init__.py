"""The engine: NIC ↔ wire ↔ TCP, demultiplexing, neighbours, timers. The only clock reader."""

from joyride.engine.engine import Activity, Engine, EngineError
from joyride.engine.network import KernelNetwork, NetworkView, StaticNetwork
from joyride.engine.nic import MemoryNic, Nic

__all__ = ["Activity", "Engine", "EngineError", "KernelNetwork", "MemoryNic", "NetworkView",
           "Nic", "StaticNetwork"]
