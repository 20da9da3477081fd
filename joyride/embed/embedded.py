"""Embedded mode: this process runs the engine on its own AF_XDP socket(s).

``embed("veth0", ports=[8080])`` claims the interface as ``joyride attach`` does for
the network service, in the calling process and its network namespace, through the
same routine (``joyride.claim.interface``): take the interface's state-directory lock,
clean up after a dead predecessor, attach the steering program, reserve the ephemeral
range, steer the ports, open one AF_XDP socket per rx queue and register each. It builds
the same ``Engine`` the service runs over those sockets, wrapped in a ``Stack`` that
``joyride.asyncio`` and ``joyride.socket`` use.

Refusals (``EmbedError``, one clear line each):

* the network service (or another embedding process) holds the interface: both take
  the same ``flock``, so two owners can never fight over one steering program;
* a second ``embed`` in the same process: one engine per process owns the steering.

``close`` (also on ``with`` exit, at interpreter exit, and on a failed setup) undoes
everything backwards: connections are reset so peers learn at once, the kernel's
managed neighbour entries are removed, sockets closed, the program detached, the
ephemeral reservation released, the state directory removed.

What it needs: root (or ``CAP_SYS_ADMIN``, ``CAP_NET_ADMIN``, ``CAP_NET_RAW`` and the
file access to ``/run/joyride``) for that setup, in the interface's network namespace.
Once set up, serving needs no privilege: the AF_XDP rings work on the descriptors and
mappings the process holds, and map updates (address changes) use its map descriptors.
``drop_privileges(user)`` (or ``embed(..., drop_to=user)``) then makes the process
``user`` with no capabilities and no_new_privs (``joyride.claim.privdrop.drop``, as
the network service drops; no seccomp filter: the embedding program's own system calls
are not Joyride's to list). What still needs root goes to a small privileged helper
started before the drop (``python -m joyride.service.supervisor --helper-for``, the
supervisor's helper): managed neighbour entries for outgoing connections, and, once
this process closes the engine or exits, undoing the setup (steering program, reserved
ports, state files).

Two data planes (``JOYRIDE_DATAPLANE``, ``joyride.dataplane.plane.wanted``):

* **C** (the default when built): the process runs the network service's own data
  path in one of its threads: ``joyride.service.Service`` with ``embedded=True``, whose
  C data plane (docs/dataplane.md) owns the AF_XDP queues and runs established
  connections, and opens the ports' connections itself, without the GIL. The
  application's ``joyride.socket`` and ``joyride.asyncio`` endpoints are then the
  service's real descriptors (``joyride.socket_backends.service``,
  ``joyride.aio.service``), reported as ``joyride_mode == "embedded"``; ``joyride
  status``, ``stats`` and ``ss`` see the instance through its control socket. The hop
  between the data plane and the application is a unix socket inside the process (the
  shared-memory channel of the next step replaces it in both modes). ``close`` lets
  connections deliver what was written for up to ``_LINGER`` seconds; a data path
  stopped from outside (``joyride detach``, the interface gone) undoes the claim at
  once, so the ports fall back to the kernel as when a service dies.
* **Python** (``JOYRIDE_DATAPLANE=python``, or no C build): the process's ``Engine``
  in a ``Stack`` polled by a driver (``joyride.embed.drivers``) in the application's
  own thread or a background one; endpoints are ``TcpConnection`` objects.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from joyride.claim import privdrop
from joyride.claim.interface import Request, claim, follow_engine
from joyride.claim.statedir import StateDir
from joyride.dataplane import plane as dataplane
from joyride.dataplane.hub import Hub
from joyride.dataplane.hub import wanted as channels_wanted
from joyride.embed.drivers import DEFAULT_SPIN
from joyride.embed.stack import Stack
from joyride.engine import DEFAULT_EPHEMERAL, Engine, KernelNetwork
from joyride.engine.nic import MultiNic
from joyride.engine.xsknic import XskNic
from joyride.errors import JoyrideError
from joyride.service import control
from joyride.service.service import AlreadyAttached, Service, ServiceConfig
from joyride.steer.ports import PortSet
from joyride.steer.program import Mode
from joyride.tcp.config import TcpConfig

log = logging.getLogger(__name__)


_CLOSE = "embedded close"  # the stop reason Embedded.close gives its service thread
_JOIN_TIMEOUT = 10.0  # seconds close waits for the service thread (after the linger)
_LINGER = 3.0  # seconds close lets connections deliver what was written (Service.request_stop)
MAX_SPIN = 1.0  # seconds: embed()'s spin, as JOYRIDE_DATAPLANE_SPIN_US's bound


class EmbedError(JoyrideError):
    """Embedded mode cannot start (interface owned, already embedded, bad ports)."""


_active_lock = threading.Lock()
_active: Embedded | None = None


def current() -> Embedded | None:
    """The live embedded instance of this process, if any."""
    return _active


class Embedded:
    """The engine of this process on ``ifname`` (build it with ``embed``)."""

    def __init__(self, ifname: str, ports: Iterable[int], *, mode: Mode = "auto",
                 ephemeral: range = DEFAULT_EPHEMERAL, config: TcpConfig | None = None,
                 spin: float = DEFAULT_SPIN, tx_thread: bool = True) -> None:
        self.ifname = ifname
        self.tx_thread = tx_thread
        self.ports = PortSet(ports)
        self.ephemeral = ephemeral
        self.spin = spin
        self.mode = ""
        self.closed = False
        self.dropped = ""  # the user this process dropped to (drop_privileges)
        self._helper: subprocess.Popen[bytes] | None = None
        self._helper_sock: socket.socket | None = None  # our end: EOF tells it to undo
        self._stack = contextlib.ExitStack()
        # Exactly one of the two (module doc): the C data plane's in-process service and
        # the thread serving it, or the Python data plane's stack.
        self.service: Service | None = None
        self._serving: threading.Thread | None = None
        self.hub: Hub | None = None  # the channels of joyride.asyncio's servers
        self.stack: Stack | None = None
        self.sockets: list[Any] = []
        self._routes: dict[bytes, bool] = {}
        if not self.ports:
            raise EmbedError("embed needs at least one port to accelerate")
        if not 0.0 <= spin <= MAX_SPIN:
            raise EmbedError(f"spin={spin!r}: expected 0 to {MAX_SPIN:g} seconds")
        clash = self.ports & PortSet(ephemeral)
        if clash:
            raise EmbedError(f"port(s) {clash} lie in the ephemeral range "
                             f"{ephemeral.start}-{ephemeral.stop - 1}: choose other ports")
        try:
            if dataplane.wanted():
                self._serve(mode, config)
            else:
                self._setup(mode, config)
        except BaseException:
            self._stack.close()
            raise

    def _setup(self, mode: Mode, config: TcpConfig | None) -> None:
        self.dir = StateDir(self.ifname)
        claimed = claim(
            Request(self.ifname, self.ports, PortSet(self.ephemeral), mode,
                    notices=["embedded mode (no control socket)"]),
            self.dir, self._stack, open_socket=_open_xsk, held=self._held,
            dropped=lambda: bool(self.dropped), release_steering_when_dropped=True)
        self.steering = steering = claimed.steering
        self.mode = claimed.state.mode
        self.sockets = claimed.sockets
        self.network = KernelNetwork(self.ifname)
        self._stack.callback(self.network.close)
        nics = [XskNic(s, self.network.mtu, tx_thread=self.tx_thread) for s in self.sockets]
        engine = Engine(MultiNic(nics), self.network, config, ephemeral_ports=self.ephemeral)
        follow_engine(steering, engine)  # its callbacks run under the stack's lock
        self.stack = Stack(engine, ports=frozenset(self.ports))
        self._stack.callback(self.stack.close)  # first to run: resets go out on open sockets

    def _serve(self, mode: Mode, config: TcpConfig | None) -> None:
        """The C data plane: the network service's data path in a thread (module doc)."""
        service = Service(ServiceConfig(self.ifname, self.ports,
                                        ephemeral=PortSet(self.ephemeral), mode=mode,
                                        embedded=True, spin=self.spin),
                          state_dir=StateDir(self.ifname), tcp=config)
        try:
            state = service.start()  # undoes itself on failure
        except AlreadyAttached as exc:
            raise self._held(service.dir) from exc
        self._stack.callback(service.stop)
        assert service.network is not None and service.steering is not None
        self.service, self.dir, self.mode = service, service.dir, state.mode
        self.network, self.steering = service.network, service.steering
        self.sockets = list(service.sockets)
        # Embedded mode runs one plane (ServiceConfig.embedded: no workers).
        plane = service.datapath.chan_plane if service.datapath is not None else None
        if plane is not None and channels_wanted():
            # joyride.asyncio's servers here move bytes through rings (joyride.aio.rings)
            hub = self.hub = Hub()
            plane.set_bell(hub)
            self._stack.callback(self._close_hub, hub)
        thread = threading.Thread(target=self._run_service, args=(service,),
                                  name=f"joyride-embed-{self.ifname}", daemon=True)
        thread.start()
        self._serving = thread
        self._stack.callback(self._stop_service, service, thread)

    def _close_hub(self, hub: Hub) -> None:
        """After the data path's thread stopped: no ring is written any more."""
        if self._serving is not None and self._serving.is_alive():
            return  # it may still ring the bell: keep the memory until the process ends
        hub.close()  # its loop stops watching it first (Hub.on_close)

    def _run_service(self, service: Service) -> None:
        try:
            reason = service.serve()
        except Exception:
            log.exception("embedded: the data path of %s failed", self.ifname)
            reason = "failed"
        if reason == _CLOSE:
            return  # close undoes the rest
        # Stopped from outside (joyride detach, the interface vanished) or failed: undo
        # the claim now, so the ports fall back to the kernel at once (the steering
        # program goes, as when a service dies) and new sockets are the kernel's; the
        # instance stays to be closed.
        log.warning("embedded: the data path of %s stopped (%s); its ports are the "
                    "kernel's again", self.ifname, reason)
        try:
            service.stop()
        except Exception:
            log.exception("embedded: undoing the claim of %s failed", self.ifname)

    @staticmethod
    def _stop_service(service: Service, thread: threading.Thread) -> None:
        # What the application wrote before closing still reaches its peers (briefly:
        # the stack ends with this process, the kernel's would go on alone).
        service.request_stop(_CLOSE, linger=_LINGER)
        thread.join(_LINGER + _JOIN_TIMEOUT)
        if thread.is_alive():
            log.warning("embedded: the data path thread did not stop in %.0f s",
                        _JOIN_TIMEOUT)

    def serving(self) -> bool:
        """The instance accelerates its ports now (open, and its data path running)."""
        if self.closed:
            return False
        return self._serving is None or self._serving.is_alive()

    def local_addresses(self) -> frozenset[bytes] | set[bytes]:
        """The interface's addresses the instance serves (packed: IPv4's 4 bytes, and
        IPv6's 16 on the C data plane)."""
        if self.service is not None and self.service.datapath is not None:
            return self.service.datapath.engine.local_addresses
        assert self.stack is not None
        return self.stack.engine.local_addresses

    def _held(self, state_dir: StateDir) -> EmbedError:
        held = state_dir.load()
        who = f" (pid {held.pid}, ports {held.ports})" if held is not None else ""
        return EmbedError(
            f"{self.ifname} is already served by Joyride{who}: the network service or "
            "another embedded process owns its steering. Use service mode (no embed) "
            f"or `joyride detach {self.ifname}` first")

    # -- least privilege -------------------------------------------------------------------

    def drop_privileges(self, user: str) -> list[str]:
        """Become ``user`` (name or uid, not root) for the rest of this process's life:
        start the privileged helper (module doc), then ``privdrop.drop`` without a
        seccomp filter. Returns what was done; raises ``EmbedError`` (nothing dropped)
        or ``PrivilegeDropError`` (the process must not go on serving)."""

        if self.closed or self.dropped:
            raise EmbedError("drop_privileges: already " + ("closed" if self.closed
                                                            else f"dropped to {self.dropped}"))
        try:
            target = privdrop.resolve_user(user)
        except (KeyError, ValueError) as exc:
            raise EmbedError(f"drop_privileges({user!r}): no such unprivileged user "
                             f"({exc})") from exc
        ours, theirs = socket.socketpair(socket.AF_UNIX,
                                         socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        with theirs:
            self._helper = subprocess.Popen(
                [sys.executable, "-m", "joyride.service.supervisor", "--helper-for",
                 self.ifname, "--helper-fd", str(theirs.fileno())],
                stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), close_fds=True,
                start_new_session=True)
        neighbours = privdrop.NeighbourRequests(ours.detach())  # managed entries: the helper's
        self._helper_sock = neighbours.sock
        self.network.request_neighbour = neighbours.request
        self.dropped = target.name
        if self.service is not None:
            # As the service's own drop: stop leaves the root-only undo to the helper,
            # and the unix names become the user's, so its listeners accept what the
            # data path (now that user) delivers (appclient.service_uids).
            self.service.dropped = True
            privdrop.hand_over([self.dir.app_path, self.dir.control_path,
                                self.dir.state_file], target)
        done = privdrop.drop(target, seccomp=False)
        log.info("embedded: dropped privileges: %s", ", ".join(done))
        return done

    def _end_helper(self) -> None:
        """After ``close`` let go of everything: the helper undoes the setup; wait for it
        so that a closed engine is an undone one."""
        if self._helper_sock is not None:
            self._helper_sock.close()
            self._helper_sock = None
        if self._helper is not None:
            try:
                self._helper.wait(60)
            except subprocess.TimeoutExpired:
                log.warning("embedded: the privileged helper (pid %d) is still undoing",
                            self._helper.pid)
            self._helper = None

    # -- routing ---------------------------------------------------------------------------

    def routes_to(self, ip: bytes) -> bool:
        """True if the kernel sends traffic for ``ip`` out of this interface (then an
        outgoing connection to it can use the embedded engine)."""
        known = self._routes.get(ip)
        if known is None:
            known = self.network.route_oif(ip) == self.network.ifindex
            if len(self._routes) > 4096:
                self._routes.clear()
            self._routes[ip] = known
        return known

    # -- introspection ---------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        if self.service is not None:
            # Asked of the serving thread over the control socket, as `joyride stats`
            # does: its state changes under it otherwise.
            stats = control.request(self.dir.control_path, {"op": "stats"})["datapath"]
            # The live connections' TCP counters summed, then the engine's and the
            # service's, and the C data plane's under a prefix.
            out = {**stats["tcp"], **stats["engine"], **stats["service"],
                   "connections": stats["connections"]}
            out.update({f"dataplane_{k}": v for k, v in (stats["dataplane"] or {}).items()
                        if isinstance(v, int)})
            return out
        assert self.stack is not None
        with self.stack.lock:
            out = dict(self.stack.engine.counters)
            out.update({f"stack_{k}": v for k, v in self.stack.counters.items()})
            out["connections"] = len(self.stack.engine.connections)
        return out

    # -- teardown --------------------------------------------------------------------------

    def close(self) -> None:
        global _active
        if self.closed:
            return
        self.closed = True
        try:
            self._stack.close()
        finally:
            if self._helper is not None:
                self._end_helper()
            with _active_lock:
                if _active is self:
                    _active = None

    def __enter__(self) -> Embedded:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.mode}, {len(self.sockets)} queue(s)"
        return f"<Embedded {self.ifname} ports {self.ports} ({state})>"


def _open_xsk(ifname: str, queue: int, mode: str) -> Any:
    """The AF_XDP socket of one rx queue, in the XDP mode the program was attached in."""
    import xsk

    return xsk.Socket(ifname, queue, mode="skb" if mode == "skb" else "native")


def embed(ifname: str, ports: Iterable[int], *, mode: Mode = "auto",
          ephemeral: range = DEFAULT_EPHEMERAL, config: TcpConfig | None = None,
          spin: float = DEFAULT_SPIN, tx_thread: bool = True,
          drop_to: str | None = None) -> Embedded:
    """Accelerate ``ports`` of ``ifname`` in this process (see module doc).

    ``spin``: seconds the data path may keep polling after traffic before it sleeps, so
    that the application's answer (or the next request) is taken without a wake-up. The
    C data plane's loop takes it as a cap: it spins only on a free CPU, yields it at
    each empty poll, and spins only as long as recent idle periods lasted
    (docs/dataplane.md, "Spinning"); measured on 2
    vCPUs, a Python server's request/response latency went from 1.1-1.3x the kernel's
    to about 0.65x, and its requests/s under load stayed within a few per cent (a spin
    without those rules cost up to 7% of them).
    ``$JOYRIDE_DATAPLANE_SPIN_US`` overrides it for the C data plane; 0 turns it off.
    ``tx_thread`` gives each AF_XDP socket a native transmit thread (see ``XskNic``);
    ``False`` keeps every kernel wake-up in the engine's thread. The C data plane takes
    the service's setting for that (``JOYRIDE_TX_THREAD``).
    ``drop_to``: after setup, this process becomes that unprivileged user for good
    (``Embedded.drop_privileges``); bind what else needs root first.

    Run it in the interface's network namespace, as root. Use the result as a context
    manager, or call ``close``; it is closed at interpreter exit otherwise.
    """
    global _active
    with _active_lock:
        if _active is not None:
            raise EmbedError(f"this process already embeds Joyride ({_active.ifname}, ports "
                             f"{_active.ports}): one embedded engine per process; close it "
                             "first")
        instance = Embedded(ifname, ports, mode=mode, ephemeral=ephemeral, config=config,
                            spin=spin, tx_thread=tx_thread)
        if drop_to is not None:
            try:
                instance.drop_privileges(drop_to)
            except BaseException:
                instance.close()
                raise
        _active = instance
    atexit.register(instance.close)
    return instance
