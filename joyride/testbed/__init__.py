"""Network-namespace test beds: veth pairs, impairments, guaranteed cleanup.

Used by the tests, ``joyride demo`` and the benchmarks; see ``bed.py`` for the topology.
"""

from joyride.testbed.bed import Node, Testbed, TestbedError, list_namespaces, sweep, testbed
from joyride.testbed.impair import Impairment

__all__ = ["Impairment", "Node", "Testbed", "TestbedError", "list_namespaces", "sweep", "testbed"]
