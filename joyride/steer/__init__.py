"""XDP steering: which frames go to Joyride's AF_XDP sockets, which to the kernel.

``Steering`` loads ``bpf/steer.c`` through BCC and attaches it to one interface;
``PortSet`` is the port-list syntax shared with the CLI and the kernel's sysctls;
``reserve``/``release`` keep the kernel off Joyride's ephemeral ports.
"""

from joyride.steer.counters import SteerCounters, counter_names
from joyride.steer.ports import PortSet, PortSpecError
from joyride.steer.program import (
    EPHEMERAL,
    LISTEN,
    PROG_NAME,
    ForeignProgram,
    PortConflict,
    Steering,
)
from joyride.steer.reservation import release, reserve
from joyride.steer.xdp import AttachedProgram, InterfaceNotFound, XdpError

__all__ = [
    "EPHEMERAL",
    "LISTEN",
    "PROG_NAME",
    "AttachedProgram",
    "ForeignProgram",
    "InterfaceNotFound",
    "PortConflict",
    "PortSet",
    "PortSpecError",
    "SteerCounters",
    "Steering",
    "XdpError",
    "counter_names",
    "release",
    "reserve",
]
