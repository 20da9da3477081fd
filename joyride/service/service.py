"""The network service of one interface: steering, AF_XDP sockets, control socket.

Lifecycle (``start`` then ``serve`` then ``stop``), in the order that keeps the kernel
consistent at every step:

1. claim the interface as embedded mode does (``joyride.claim.interface``): the state
   directory's lock (one owner per namespace and interface), cleanup after a crashed
   predecessor, the steering program, the state file, the reserved ephemeral range,
   the ports maps, one AF_XDP socket per rx queue registered in the XSKMAP;
2. start the data path (``Datapath``: the engine over every queue, the application
   socket ``app.sock``, re-adopting listeners that applications kept from a previous
   service), listen on the control socket and report ready.

``stop`` undoes it backwards. If the process dies instead, the kernel closes the
sockets, which empties the XSKMAP (fail-open), and drops the lock; the next ``attach``
or ``detach`` finds the stale state and cleans up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from joyride.claim import privdrop
from joyride.claim.interface import Request, claim, follow_engine
from joyride.claim.statedir import ServiceState, StateDir
from joyride.dataplane import plane as dataplane
from joyride.dataplane.workers import Workers
from joyride.errors import JoyrideError
from joyride.service import apps, capture, control, pathmtu, sockettable
from joyride.service.datapath import Datapath
from joyride.service.sockets import FrameSink, QueueSocket, SocketFactory
from joyride.steer.ports import PortSet
from joyride.steer.program import LISTEN, Mode, PortConflict, Proto, Steering
from joyride.tcp.config import TcpConfig

if TYPE_CHECKING:
    from joyride.engine.network import KernelNetwork

log = logging.getLogger(__name__)

# Joyride's default ephemeral range: the top of Linux's default ip_local_port_range
# (32768-60999), so the kernel's own allocations keep the other 27 000 ports.
DEFAULT_EPHEMERAL: Final = PortSet(range(60000, 61000))
WATCHDOG_PERIOD: Final = 1.0  # seconds between checks that the interface still exists
LINGER_POLL: Final = 0.005  # seconds between checks while a stop lingers
# The cap of the service's spin: a ping-pong's answer is taken without a wake-up, and
# with more than two flows busy the loop does not spin at all (redis and nginx with many
# connections unchanged; docs/dataplane.md, "Spinning"). The spin's window adapts below
# the cap to how soon answers come on this machine: nginx's answer to one connection
# took longer than the earlier fixed 50 us on the 2026-12-07 machine (p50 1.37x the
# kernel's; 0.68x with 200 us).
SERVICE_SPIN: Final = 200e-6


class AlreadyAttached(JoyrideError):
    """A live service already serves this interface in this namespace."""


@dataclass
class ServiceConfig:
    ifname: str
    ports: PortSet
    udp_ports: PortSet = field(default_factory=PortSet)
    ephemeral: PortSet = DEFAULT_EPHEMERAL
    mode: Mode = "auto"
    force: bool = False
    vlan: int = 0
    group: str = ""  # group (name or gid) allowed on the application socket besides root
    engine: bool = True  # run the TCP engine (False: frames are only counted)
    user: str = ""  # drop to this user after setup ("": keep root; see privdrop)
    # Served by a thread of the embedding process (joyride.embed on the C data plane):
    # that process goes on living after a privilege drop, so its steering descriptors
    # are released on stop even then (claim's release_steering_when_dropped).
    embedded: bool = False
    # Seconds the C data plane's loop polls after activity before it sleeps (yielding
    # the CPU to any task that can run meanwhile, and only while one or two flows are
    # busy: docs/dataplane.md, "Spinning"); $JOYRIDE_DATAPLANE_SPIN_US overrides (0: off).
    # Embedded mode passes embed()'s ``spin``.
    spin: float = SERVICE_SPIN
    # Data-plane workers, each a thread with its queues' flows (joyride.dataplane.workers;
    # 1: the service loop's thread runs the one plane of every queue); 0: auto_workers.
    workers: int = 0


class Service:
    """One interface's network service (run it in the interface's namespace)."""

    def __init__(self, config: ServiceConfig, *, state_dir: StateDir | None = None,
                 socket_factory: SocketFactory = QueueSocket,
                 sink: FrameSink | None = None, tcp: TcpConfig | None = None) -> None:
        self.config = config
        self.tcp = tcp  # the connections' TCP configuration (None: the data path's default)
        self.dir = state_dir or StateDir(config.ifname)
        self.socket_factory = socket_factory
        self.sink = sink
        self.datapath: Datapath | None = None
        self.steering: Steering | None = None
        self.sockets: list[QueueSocket] = []
        self.state: ServiceState | None = None
        self.stop_reason = ""
        self._stack = contextlib.ExitStack()
        self._listener: socket.socket | None = None
        self._stopping = False
        self._linger_until = 0.0
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.network: KernelNetwork | None = None
        self.dropped = False  # privileges dropped: the supervisor undoes setup (stop)
        self._trigger: privdrop.ForbiddenCallTrigger | None = None
        self.capture: capture.CaptureSession | None = None  # joyride capture, one at a time
        self._sel: selectors.BaseSelector | None = None

    # -- start / stop ------------------------------------------------------------------------

    def start(self) -> ServiceState:
        """Set everything up; on any failure undo what was done and re-raise."""
        cfg = self.config
        try:
            claimed = claim(
                Request(cfg.ifname, cfg.ports, cfg.ephemeral, cfg.mode, force=cfg.force,
                        udp_ports=cfg.udp_ports, vlan=cfg.vlan,
                        notices=["embedded mode (served by a thread of the embedding "
                                 "process)"] if cfg.embedded else []),
                self.dir, self._stack, open_socket=self.socket_factory,
                held=self._already_attached, dropped=lambda: self.dropped,
                release_steering_when_dropped=cfg.embedded)
            steering, state = claimed.steering, claimed.state
            self.steering, self.state, self.sockets = steering, state, claimed.sockets
            if cfg.engine:
                self.datapath = self._start_datapath()
                self._stack.callback(self._stop_datapath)
                # No listener yet: applications' (adopted ones too) register in serve().
                follow_engine(steering, self.datapath.engine)
                # The service serves both families (its listeners say which per port),
                # embedded on the C data plane too; the Python data plane's embedded
                # stacks (joyride.embed's _setup) leave IPv6 to the kernel.
                steering.set_ipv6(True)
            self._listener = control.listen(self.dir.control_path)
            self._stack.callback(self._listener.close)
            self.dir.save(state)
        except BaseException:
            self._stack.close()
            raise
        log.info("serving %s: mode %s, ports %s, ephemeral %s, queues %s", cfg.ifname,
                 state.mode, state.ports, state.ephemeral, state.queues)
        return state

    def _already_attached(self, state_dir: StateDir) -> AlreadyAttached:
        ifname = state_dir.ifname
        return AlreadyAttached(
            f"{ifname} is already attached in this network namespace "
            f"(see `joyride status {ifname}`; `joyride detach {ifname}` first)")

    def _start_datapath(self) -> Datapath:
        from joyride.engine.network import KernelNetwork

        cfg = self.config
        try:
            gid = apps.group_id(cfg.group)
        except ValueError as exc:
            raise JoyrideError(f"--group {cfg.group}: {exc}") from exc
        network = KernelNetwork(cfg.ifname)
        self.network = network
        try:
            for sock in self.sockets:
                sock.mtu = network.mtu
            app_socket = apps.listen_app_socket(self.dir.app_path, gid)
        except BaseException:
            network.close()
            raise
        plane: dataplane.DataPlane | Workers | None = None
        if dataplane.wanted():
            # The C data plane owns the queues (docs/dataplane.md); JOYRIDE_DATAPLANE=python
            # keeps every connection in Python.
            plane = self._planes(network.mtu)
        try:
            return Datapath(self.sockets, network, ports=cfg.ports, ephemeral=cfg.ephemeral,
                            app_socket=app_socket, group=gid, plane=plane, config=self.tcp,
                            icmp=pathmtu.open_report_sockets(cfg.ifname))
        except BaseException:
            if isinstance(plane, Workers):
                plane.close()  # their threads end with the failed start
            raise

    def _worker_count(self) -> int:
        """How many data-plane workers serve the queues (``ServiceConfig.workers``)."""
        if self.config.embedded or len(self.sockets) < 2:
            return 1
        wanted = self.config.workers or auto_workers(len(os.sched_getaffinity(0)))
        return max(1, min(wanted, len(self.sockets)))

    def _planes(self, mtu: int) -> dataplane.DataPlane | Workers:
        """The C data plane: one for every queue, or one per worker (its queues in turn,
        each queue one worker's)."""
        spin = dataplane.spin_from_env(self.config.spin)
        count = self._worker_count()
        planes = [dataplane.DataPlane(mtu=mtu, spin=spin) for _ in range(count)]
        for index, sock in enumerate(self.sockets):
            planes[index % count].add_xsk_port(sock.xsk_socket())
        if dataplane.gso_wanted():
            for plane in planes:
                plane.use_gso(self.config.ifname)
        return planes[0] if count == 1 else Workers(planes)

    def drop_privileges(self, user: privdrop.ServiceUser, helper_fd: int) -> list[str]:
        """After ``start``: become ``user`` with no capabilities, no_new_privs and the
        seccomp allow-list (``joyride.claim.privdrop``); managed neighbour entries
        are then asked of the supervisor on ``helper_fd``. Raises if any step fails."""
        state = self._state()
        self.dropped = True  # from here on stop leaves the root-only undo to the supervisor
        helper = privdrop.NeighbourRequests(helper_fd)
        if self.network is not None:
            self.network.request_neighbour = helper.request
        # The directory stays root's: the service could otherwise plant names in it
        # (a symlink as service.log) that root opens later.
        privdrop.hand_over([self.dir.app_path, self.dir.control_path, self.dir.state_file],
                           user)
        self._trigger = privdrop.ForbiddenCallTrigger()
        gid = apps.group_id(self.config.group)  # --group: its directory is 0710 to it
        done = privdrop.drop(user, groups=[] if gid is None else [gid])
        state.user = user.name
        self.dir.save(state, in_place=True)
        log.info("dropped privileges: %s", ", ".join(done))
        return done

    def _stop_datapath(self) -> None:
        if self.datapath is not None:
            self.datapath.close()
            self.datapath.app_socket.close()
            self.datapath = None

    def stop(self) -> None:
        """Undo ``start`` in reverse (sockets, ports, reservation, program, state, lock)."""
        if self.capture is not None:
            self.capture.close()
            self.capture = None
        self._stack.close()
        self.sockets.clear()
        self.steering = None
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def request_stop(self, reason: str = "requested", *, linger: float = 0.0) -> None:
        """Ask ``serve`` to return (safe from signal handlers and other threads).

        ``linger``: seconds ``serve`` goes on first while some connection still has work
        (``Datapath.unsettled``: bytes the application wrote and the peer has not
        acknowledged, a FIN in flight): an embedding process that closes its stack right
        after its last write still delivers it, as the kernel would after close()."""
        self._linger_until = time.monotonic() + linger
        self._stopping = True
        self.stop_reason = self.stop_reason or reason
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    # -- the loop ------------------------------------------------------------------------------

    def serve(self, *, on_tick: Callable[[], None] | None = None) -> str:
        """Run until a stop request, a shutdown op or the interface vanishing."""
        assert self._listener is not None and self.steering is not None
        sel = selectors.DefaultSelector()
        self._sel = sel
        sel.register(self._listener, selectors.EVENT_READ, "accept")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        datapath = self.datapath
        if datapath is not None:
            datapath.register(sel)
        else:
            for sock in self.sockets:
                sel.register(sock.fileno(), selectors.EVENT_READ, sock)
        next_check = time.monotonic() + WATCHDOG_PERIOD
        try:
            while not (self._stopping and not self._lingering()):
                timeout = (WATCHDOG_PERIOD if datapath is None
                           else datapath.timeout(WATCHDOG_PERIOD))
                if self._stopping:
                    timeout = min(timeout, LINGER_POLL)
                if self.capture is not None:
                    timeout = min(timeout, capture.POLL)  # drain its ring often
                events = (sel.select(timeout=timeout) if datapath is None
                          else datapath.wait(sel, timeout))
                for key, mask in events:
                    data = key.data
                    if isinstance(data, QueueSocket):
                        data.drain(self.sink)
                    elif data == "accept":
                        self._accept()
                    elif data == "wake":
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_r, 512)
                    elif callable(data):
                        data(mask)
                if datapath is not None:
                    datapath.step()
                if self.capture is not None:
                    self.capture.pump()
                    if self.capture.closed:
                        self.capture = None
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + WATCHDOG_PERIOD
                    self._watchdog()
                    if self._trigger is not None:
                        self._trigger.check()
                    if on_tick is not None:
                        on_tick()
        finally:
            if self.capture is not None:
                self.capture.close()
                self.capture = None
            self._sel = None
            sel.close()
        return self.stop_reason

    def _lingering(self) -> bool:
        """A requested stop waits: its linger has not run out and work is unsettled."""
        datapath = self.datapath
        if datapath is None or time.monotonic() >= self._linger_until:
            return False
        return datapath.unsettled()

    def _watchdog(self) -> None:
        try:
            index = socket.if_nametoindex(self.config.ifname)
        except OSError:
            index = 0
        if self.state is not None and index != self.state.ifindex:
            self.request_stop(f"interface {self.config.ifname} disappeared")

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except BlockingIOError:
            return
        # Requests are tiny and local: serve each connection to completion, with a
        # short timeout so a stuck client cannot stall the data path for long. A
        # capture keeps its connection (joyride.service.capture).
        kept = False
        try:
            conn.settimeout(2.0)
            line = bytearray()
            while not line.endswith(b"\n") and len(line) <= control.MAX_LINE:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                line += chunk
            kept = self._start_capture(bytes(line), conn)
            if not kept:
                conn.sendall(control.encode(self.handle_line(bytes(line), conn)))
        except OSError as exc:
            log.warning("control connection failed: %s", exc)
        finally:
            if not kept:
                conn.close()

    def _start_capture(self, line: bytes, conn: socket.socket) -> bool:
        """A ``capture`` request: answer it, and on success keep ``conn`` for the
        capture's stream (True). Any other request: False, nothing done."""
        try:
            request = control.decode(line)
        except control.ControlError:
            return False
        if request.get("op") != "capture" or not control.peer_allowed(conn, "capture"):
            return False  # handle_line answers (a refusal, for an unprivileged peer)
        error = ""
        if self.capture is not None:
            error = "a capture is already running on this interface (one at a time)"
        elif self.datapath is None or self._sel is None:
            error = "this service runs no TCP engine: it has no frames to capture"
        if not error:
            try:
                plane = self.datapath.plane if self.datapath is not None else None
                tap = capture.tap_for(  # a tap per worker: a tap's ring has one producer
                    request, len(plane.planes) if isinstance(plane, Workers) else 1)
            except (TypeError, ValueError) as exc:
                error = f"bad capture request: {exc}"
        if error:
            with conn:
                conn.sendall(control.encode({"ok": False, "error": error, "exit_code": 2}))
            return True  # answered and closed
        assert self.datapath is not None and self._sel is not None
        conn.sendall(control.encode({"ok": True, "snaplen": tap.snaplen, "linktype": 1}))
        self.capture = capture.CaptureSession(conn, tap, self._tap_point(self.datapath),
                                              self._sel)
        log.info("capture started (snaplen %d)", tap.snaplen)
        return True

    # -- control operations ----------------------------------------------------------------------

    def handle_line(self, line: bytes, peer: socket.socket | None = None) -> dict[str, Any]:
        """Answer one request line from ``peer`` (None: trusted, in-process); never
        raises (bad requests get an error reply)."""
        try:
            request = control.decode(line)
            if peer is not None and not control.peer_allowed(peer, request.get("op")):
                return {"ok": False, "exit_code": 77, "error": (
                    f"permission denied: {request.get('op')!r} changes the service; "
                    "it needs root")}
            return self.handle(request)
        except JoyrideError as exc:
            return control.error_reply(exc)
        except (TypeError, ValueError, KeyError) as exc:
            return {"ok": False, "error": f"bad request: {exc}", "exit_code": 2}

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "status":
            return {"ok": True, "state": self._state().to_json()}
        if op == "stats":
            return {"ok": True, **self.stats()}
        if op == "sockets":
            if self.datapath is None:
                return {"ok": True, "sockets": [], "omitted": 0}
            return {"ok": True, **sockettable.table(self.datapath,
                                                    info=bool(request.get("info")))}
        if op == "ports":
            return {"ok": True, **self.change_ports(
                str(request["action"]), str(request["ports"]), str(request.get("proto", "tcp")))}
        if op == "shutdown":
            self.request_stop("shutdown requested over the control socket")
            return {"ok": True}
        raise control.ControlError(f"unknown control operation {op!r}")

    def _tap_point(self, datapath: Datapath) -> capture.Attach:
        """Where a capture taps the frames: the C data plane, which carries every frame
        (Python's too), or else each queue's socket, under the Python engine."""
        plane = datapath.plane
        if plane is not None:
            return plane.capture
        sockets = list(self.sockets)

        def attach(tap: object) -> None:
            for sock in sockets:
                sock.tap = tap

        return attach

    def _state(self) -> ServiceState:
        if self.state is None:
            raise control.ControlError("the service is not started")
        return self.state

    def _queue_stats(self) -> dict[str, dict[str, int]]:
        """Per rx queue; what the C data plane's loop received counts there too."""
        plane = self.datapath.plane if self.datapath is not None else None
        out: dict[str, dict[str, int]] = {}
        for index, sock in enumerate(self.sockets):
            stats = sock.statistics()
            if plane is not None:
                for key, value in plane.port_counters(index).items():
                    stats[key] += value
            out[str(sock.queue)] = stats
        return out

    def stats(self) -> dict[str, Any]:
        assert self.steering is not None
        counters = self.steering.counters()
        return {
            "ifname": self.config.ifname,
            "mode": self._state().mode,
            "uptime": time.time() - self._state().started_at,
            "steer": dict(counters.values),
            "totals": counters.totals(),
            "queues": self._queue_stats(),
            "datapath": self.datapath.stats() if self.datapath is not None else None,
            "memory": _memory(),
            "cpu": _cpu(),
            "capture": self.capture.stats() if self.capture is not None else None,
        }

    def change_ports(self, action: str, spec: str, proto: str) -> dict[str, Any]:
        """Add or delete accelerated ports while running (no reload, no reattach)."""
        assert self.steering is not None
        p = _proto(proto)
        ports = PortSet.parse(spec)
        state = self._state()
        if action == "add":
            if p == "tcp":
                clash = ports & self.config.ephemeral
                if clash:
                    raise PortConflict(f"port(s) {clash} lie in the ephemeral range "
                                       f"{self.config.ephemeral}")
            self.steering.add_ports(ports, p, LISTEN)
        elif action == "del":
            missing = ports - self.steering.ports(p, LISTEN)
            if missing:
                raise PortConflict(f"{proto} port(s) {missing} are not accelerated on "
                                   f"{self.config.ifname}")
            self.steering.remove_ports(ports, p)
        else:
            raise control.ControlError(f"unknown ports action {action!r} (add or del)")
        if self.datapath is not None:
            # What applications may listen on follows the steering: a port added here
            # is served at once, a port deleted takes no new listeners.
            self.datapath.ports = self.steering.ports("tcp", LISTEN)
        state.ports = str(self.steering.ports("tcp", LISTEN))
        state.udp_ports = str(self.steering.ports("udp", LISTEN))
        self.dir.save(state, in_place=self.dropped)
        return {"ports": state.ports, "udp_ports": state.udp_ports}


def auto_workers(cpus: int) -> int:
    """``--workers auto``: one worker per queue, up to half the CPUs. A worker pays off
    only with a CPU of its own, and the applications it serves need CPUs too: on the
    2-vCPU test machine two workers for two queues took 1.5x the service's CPU per
    request (each wakes for half the batch: 1.20 loop rounds per nginx request against
    0.61; docs/dataplane.md, "Workers")."""
    return max(1, cpus // 2)


def _memory() -> dict[str, int]:
    """The service's own memory (kB), as the kernel accounts it."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon"):
                out[key + "_kB"] = int(value.split()[0])
    return out


def _cpu() -> dict[str, float]:
    """The service's CPU time (seconds, every thread), from /proc: no system call the
    seccomp allow-list would have to grow for (privdrop)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        raw = Path("/proc/self/stat").read_text()
        fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) "
        tick = os.sysconf("SC_CLK_TCK")
        return {"user": int(fields[11]) / tick, "system": int(fields[12]) / tick}
    return {}


def _proto(name: str) -> Proto:
    if name == "tcp":
        return "tcp"
    if name == "udp":
        return "udp"
    raise control.ControlError(f"unknown protocol {name!r} (tcp or udp)")


def install_signal_handlers(service: Service) -> None:
    """SIGTERM/SIGINT/SIGHUP stop the service cleanly (serve returns, stop runs)."""

    def handler(signum: int, _frame: object) -> None:
        service.request_stop(f"signal {signal.Signals(signum).name}")

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, handler)
