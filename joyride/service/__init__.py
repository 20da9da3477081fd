"""The network service: one process per (network namespace, interface).

It attaches the steering program, opens one AF_XDP socket per rx queue, runs the TCP
engine over them (``datapath``), serves applications on ``app.sock`` (``protocol``)
and answers a control socket (status, stats, ports, shutdown).

The heavy parts (BCC, pyroute2) load only when the service itself is used, so an
application's client (``joyride.service.appclient``, ``protocol``) imports nothing
more than the standard library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from joyride.claim.statedir import ServiceState, StateDir
    from joyride.service.service import AlreadyAttached, Service, ServiceConfig

__all__ = ["AlreadyAttached", "Service", "ServiceConfig", "ServiceState", "StateDir"]


def __getattr__(name: str) -> Any:
    if name in ("AlreadyAttached", "Service", "ServiceConfig"):
        from joyride.service import service

        return getattr(service, name)
    if name in ("ServiceState", "StateDir"):
        from joyride.claim import statedir

        return getattr(statedir, name)
    raise AttributeError(f"module 'joyride.service' has no attribute {name!r}")
