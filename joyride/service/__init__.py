"""The network service: one process per (network namespace, interface).

It attaches the steering program, opens one AF_XDP socket per rx queue, registers them
in the XSKMAP, keeps its state under ``/run/joyride/`` and answers a control socket
(status, stats, ports, shutdown). The TCP engine plugs in as its ``FrameSink``.
"""

from joyride.service.service import AlreadyAttached, Service, ServiceConfig
from joyride.service.state import ServiceState, StateDir

__all__ = ["AlreadyAttached", "Service", "ServiceConfig", "ServiceState", "StateDir"]
