"""Claim an interface for Joyride: the one sequence the service and embedded mode run.

In the order that keeps the kernel consistent at every step:

1. take the state directory's lock (one owner per namespace and interface: the network
   service or an embedding process, never both);
2. undo what a dead predecessor left (reserved ports; its program is replaced);
3. load and attach the steering program, write the state file, reserve the ephemeral
   range and fill the ports maps: from here on steered frames hit an empty XSKMAP and
   fall through to the kernel (XDP_PASS), so nothing is lost while the sockets come up;
4. open one AF_XDP socket per rx queue and register each in the XSKMAP.

Every step pushes its undo on the caller's ``ExitStack``, so closing it (on a failed
setup, or at the end) undoes the claim backwards. Undo steps that need root are skipped
once the owner has dropped its privileges (``dropped()``): its privileged helper (the
supervisor) undoes them after the owner has let go.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from joyride.claim.cleanup import cleanup_stale
from joyride.claim.queues import active_rx_queues
from joyride.claim.statedir import ServiceState, StateDir, netns_inode
from joyride.steer import reservation
from joyride.steer.ports import PortSet
from joyride.steer.program import EPHEMERAL, LISTEN, Mode, PortConflict, Steering

if TYPE_CHECKING:
    from joyride.engine.engine import Engine


class QueueSocket(Protocol):
    """What the claim needs of an AF_XDP socket: its descriptor, and closing it."""

    def fileno(self) -> int: ...
    def close(self) -> None: ...


S = TypeVar("S", bound=QueueSocket)


@dataclass
class Claim(Generic[S]):
    """What was claimed: the steering program, the state written to the state
    directory, and the AF_XDP sockets (``sockets[q]`` serves rx queue ``q``)."""

    steering: Steering
    state: ServiceState
    sockets: list[S]


@dataclass(frozen=True)
class Request:
    """What to claim ``ifname`` for.

    ``ports``/``udp_ports`` are steered to Joyride, ``ephemeral`` is reserved for its
    outgoing connections; ``mode`` is the XDP mode (``force`` replaces a foreign
    program); ``notices`` are added to the state file's."""

    ifname: str
    ports: PortSet
    ephemeral: PortSet
    mode: Mode = "auto"
    force: bool = False
    udp_ports: PortSet = field(default_factory=PortSet)
    vlan: int = 0
    notices: Sequence[str] = ()


def claim(request: Request, state_dir: StateDir, undo: contextlib.ExitStack, *,
          open_socket: Callable[[str, int, str], S],
          held: Callable[[StateDir], BaseException],
          dropped: Callable[[], bool],
          release_steering_when_dropped: bool) -> Claim[S]:
    """Claim ``request.ifname`` (module doc), pushing each undo on ``undo``.

    ``open_socket(ifname, queue, mode)`` opens the AF_XDP socket of one rx queue for
    the XDP mode attached ("native" or "skb"); ``held(state_dir)`` is the error to raise
    when another owner holds the interface. Once ``dropped()``, the root-only undo
    steps are left to the helper; the steering program's descriptors are still released
    (without detaching it) if ``release_steering_when_dropped`` (an embedding process
    goes on living; the service exits, and its system-call filter would not allow it).
    """

    def privileged(step: Callable[..., object], *args: object) -> None:
        if not dropped():
            step(*args)

    if not state_dir.acquire():
        raise held(state_dir)
    undo.callback(state_dir.release)
    undo.callback(privileged, state_dir.remove)
    notices = cleanup_stale(state_dir, request.ifname, keep_lock=True)
    clash = request.ports & request.ephemeral
    if clash:
        raise PortConflict(f"port(s) {clash} lie in the ephemeral range "
                           f"{request.ephemeral}: choose other ports or --ephemeral")
    steering = Steering(request.ifname)
    if release_steering_when_dropped:
        undo.callback(lambda: steering.close(detach=not dropped()))
    else:
        undo.callback(privileged, steering.close)
    mode = steering.attach(request.mode, force=request.force)
    state = ServiceState(
        ifname=request.ifname, ifindex=steering.ifindex, netns_inode=netns_inode(),
        pid=os.getpid(), mode=mode, ports=str(request.ports),
        udp_ports=str(request.udp_ports), ephemeral=str(request.ephemeral),
        vlan=request.vlan, prog_id=steering.prog_id, map_ids=list(steering.map_ids),
        started_at=time.time(), notices=[*notices, *steering.notices, *request.notices])
    state_dir.save(state)
    original = reservation.reserve(request.ephemeral)
    state.reserved_original, state.reserved = str(original), True
    state_dir.save(state)  # a crash from here on is cleaned up by the next owner
    undo.callback(privileged, reservation.release, request.ephemeral, original)
    steering.set_vlan(request.vlan)
    steering.add_ports(request.ephemeral, "tcp", EPHEMERAL)
    steering.add_ports(request.ports, "tcp", LISTEN)
    steering.add_ports(request.udp_ports, "udp", LISTEN)
    sockets: list[S] = []
    for queue in range(min(active_rx_queues(request.ifname), steering.max_queues)):
        sock = open_socket(request.ifname, queue, mode)
        undo.callback(sock.close)
        sockets.append(sock)
        steering.register_socket(queue, sock.fileno())
        undo.callback(steering.unregister_socket, queue)
    state.queues = list(range(len(sockets)))
    state_dir.save(state)
    return Claim(steering, state, sockets)


def follow_engine(steering: Steering, engine: Engine) -> None:
    """Keep the claimed interface's steering program in step with the engine that
    serves it: steer only what is addressed to this host (and follow address changes),
    give a port's SYNs to Joyride while one of its applications listens there
    (``SERVING``), and drop ``KERNEL_CONNS`` once the kernel's own connections on such a
    port are gone (checked once a second). Service and embedded mode alike."""
    steering.set_addresses(engine.local_addresses)
    engine.address_listeners.append(steering.set_addresses)
    engine.serving_listeners.append(steering.set_serving)
    engine.housekeeping.append(steering.refresh_kernel_connections)
