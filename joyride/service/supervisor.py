"""``python -m joyride.service.supervisor --config JSON [--ready-fd N]``: keep a service up.

``joyride attach`` starts this (in a new session) instead of the service itself; it
runs the service as its child and restarts it when it dies abnormally (a signal, a
non-zero exit), with exponential backoff and a bound on restarts per minute so a
service that cannot start does not spin. A clean exit (``joyride detach`` asks the
service to shut down, status 0) ends the supervisor too; SIGTERM/SIGINT/SIGHUP are
forwarded to the service, which stops cleanly, and then the supervisor exits.

A crash loses the TCP connections of that service (the applications read EOF or
ECONNRESET, never hang: the kernel closes the service's socket ends); while no
service runs the steering program's XSKMAP is empty, so every frame reaches the
kernel (fail-open). Applications' listeners survive: the restarted service re-adopts
them (``Datapath.adopt_listeners``). A production host can use systemd instead
(``packaging/joyride@.service``), which provides the same restart policy.

A service that drops its privileges (``joyride attach --user``, ``privdrop``) keeps no
capability, so the supervisor, which stays root, is its privileged helper
(``NeighbourHelper``): over a socket pair it adds the managed neighbour entries the
service asks for (one validated IPv4 address per datagram, on the service's own
interface, bounded in number; it parses no packets) and removes them when the service
exits; and after a clean stop it undoes what only root can (``undo_setup``: the
steering program, the reserved ports, the state files).

Liveness: the supervisor holds ``supervisor.lock`` (flock) in the state directory for
its life and writes its pid to ``supervisor.pid``; ``joyride detach`` stops it first.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any, Final

from joyride.claim import privdrop
from joyride.claim.statedir import StateDir
from joyride.service.launch import config_from_json

log = logging.getLogger("joyride.supervisor")

BACKOFF_FIRST: Final = 0.2  # seconds before the first restart
BACKOFF_MAX: Final = 5.0
MAX_RESTARTS: Final = 10  # within RESTART_WINDOW; more means it cannot run: give up
RESTART_WINDOW: Final = 60.0
READY_TIMEOUT: Final = 120.0
MAX_MANAGED_NEIGHBOURS: Final = 4096  # entries the helper adds for one service, at most
NTF_EXT_MANAGED: Final = 0x01  # as joyride.engine.network
NUD_NONE: Final = 0x00


def valid_neighbour(message: bytes) -> str | None:
    """The address (dotted IPv4, or IPv6 as RFC 5952 writes it) of a well-formed
    neighbour request that may get a managed entry (a unicast host address), else
    None."""
    if not message.startswith(privdrop.NEIGH_REQUEST) or len(message) > 64:
        return None
    try:
        addr = ipaddress.ip_address(message[len(privdrop.NEIGH_REQUEST):].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    if (addr.is_multicast or addr.is_unspecified or addr.is_loopback or addr.is_reserved
            or addr == ipaddress.IPv4Address("255.255.255.255")):
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return None  # a socket-API notation, never a neighbour (RFC 4291 §2.5.5.2)
    return str(addr)


class NeighbourHelper:
    """The supervisor's side of one service's helper socket (module doc): a thread
    that serves requests until the service's end closes, then removes its entries."""

    def __init__(self, ifname: str, sock: socket.socket) -> None:
        self.ifname = ifname
        self.sock = sock
        self.added: set[str] = set()
        self.refused = 0
        self._thread = threading.Thread(target=self._run, name="joyride-helper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ipr: Any = None
        try:
            while True:
                try:
                    message = self.sock.recv(128)
                except OSError:
                    break
                if not message:
                    break  # the service exited
                ip = valid_neighbour(message)
                if ip is None or (ip not in self.added
                                  and len(self.added) >= MAX_MANAGED_NEIGHBOURS):
                    self.refused += 1
                    log.warning("helper: refused request %r", message[:32])
                    continue
                if ipr is None:
                    from pyroute2 import IPRoute

                    ipr = IPRoute()
                try:
                    ipr.neigh("replace", dst=ip, ifindex=socket.if_nametoindex(self.ifname),
                              state=NUD_NONE, NDA_FLAGS_EXT=NTF_EXT_MANAGED)
                    self.added.add(ip)
                except Exception as exc:  # NetlinkError; OSError: the interface is gone
                    log.warning("helper: managed neighbour %s on %s: %s", ip, self.ifname,
                                exc)
        finally:
            if ipr is not None:
                for ip in self.added:
                    with contextlib.suppress(Exception):
                        ipr.neigh("del", dst=ip, ifindex=socket.if_nametoindex(self.ifname))
                ipr.close()
            self.sock.close()

    def join(self, timeout: float | None) -> None:
        self._thread.join(timeout)


def undo_setup(state_dir: StateDir, ifname: str) -> list[str]:
    """What a service that dropped its privileges could not undo itself (it leaves its
    state file for this): the steering program, the reserved ports, the state files.
    Only while no service holds the lock."""
    from joyride.claim.cleanup import detach_joyride_program
    from joyride.steer import reservation
    from joyride.steer.ports import PortSet

    done: list[str] = []
    with state_dir.held() as got:
        state = state_dir.load() if got else None
        if state is None:
            return done
        if state.reserved:
            reservation.release(PortSet.parse(state.ephemeral, allow_empty=True),
                                PortSet.parse(state.reserved_original, allow_empty=True))
            done.append("released the reserved ports")
        gone = detach_joyride_program(ifname)
        if gone is not None:
            done.append(f"detached steering program id {gone.prog_id}")
        for path in (state_dir.state_file, state_dir.control_path, state_dir.app_path):
            path.unlink(missing_ok=True)
    return done


class Supervisor:
    def __init__(self, config_json: str, ready_fd: int | None) -> None:
        self.config_json = config_json
        self.ready_fd = ready_fd
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.gave_up = False
        self.restarts: deque[float] = deque()
        self.ifname = config_from_json(config_json).ifname
        self.helper: NeighbourHelper | None = None

    def _signal(self, signum: int, _frame: object) -> None:
        self.stopping = True
        child = self.child
        if child is not None and child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)

    def _spawn(self) -> tuple[subprocess.Popen[bytes], bytes]:
        """Start the service; return it and its readiness line (b"" if it died)."""
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        ours, theirs = socket.socketpair(socket.AF_UNIX,
                                         socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            child = subprocess.Popen(
                [sys.executable, "-m", "joyride.service", "--config", self.config_json,
                 "--ready-fd", str(write_fd), "--helper-fd", str(theirs.fileno())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                pass_fds=(write_fd, theirs.fileno()), close_fds=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.child = child
        self.helper = NeighbourHelper(self.ifname, ours)
        os.close(write_fd)
        line = bytearray()
        deadline = time.monotonic() + READY_TIMEOUT
        try:
            while not line.endswith(b"\n") and time.monotonic() < deadline:
                ready, _, _ = select.select([read_fd], [], [], 1.0)
                if not ready:
                    if child.poll() is not None:
                        break
                    continue
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    break
                line += chunk
        finally:
            os.close(read_fd)
        return child, bytes(line)

    def _report(self, line: bytes) -> None:
        if self.ready_fd is None:
            return
        with contextlib.suppress(OSError):
            if line:
                os.write(self.ready_fd, line)
        with contextlib.suppress(OSError):
            os.close(self.ready_fd)
        self.ready_fd = None

    def run(self) -> int:
        first = True
        backoff = BACKOFF_FIRST
        while True:
            started = time.monotonic()
            child, line = self._spawn()
            if first:
                self._report(line)  # the CLI reads the service's own verdict
                first = False
                if not line or b'"ok":true' not in line.replace(b" ", b""):
                    return child.wait()  # it never served: nothing to keep up
            code = child.wait()
            self.child = None
            if self.helper is not None:
                self.helper.join(5.0)  # it removes the service's neighbour entries
            if self.stopping or code == 0:
                return 0
            how = (f"signal {signal.Signals(-code).name}" if code < 0
                   else f"exit status {code}")
            now = time.monotonic()
            if now - started > RESTART_WINDOW:
                backoff = BACKOFF_FIRST  # it ran a good while: start the backoff over
            self.restarts.append(now)
            while self.restarts and now - self.restarts[0] > RESTART_WINDOW:
                self.restarts.popleft()
            if len(self.restarts) > MAX_RESTARTS:
                log.error("the service died (%s) %d times within %g s: giving up", how,
                          len(self.restarts), RESTART_WINDOW)
                self.gave_up = True
                return 1
            log.warning("the service died (%s); restarting in %.1f s", how, backoff)
            deadline = time.monotonic() + backoff
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.stopping:
                return 0
            backoff = min(backoff * 2, BACKOFF_MAX)


def alive(state_dir: StateDir) -> int | None:
    """The pid of a live supervisor for this state directory, else None."""
    if not state_dir.supervisor_alive():
        return None
    try:
        return int(state_dir.supervisor_pid_path.read_text())
    except (OSError, ValueError):
        return None


def stop(state_dir: StateDir, timeout: float) -> int | None:
    """SIGTERM a live supervisor (its service stops cleanly) and wait; its pid or None."""
    pid = alive(state_dir)
    if pid is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(state_dir) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    return pid


HELPER_LOCK_WAIT: Final = 30.0  # seconds the embedding process may take to let go


def helper_only(ifname: str, fd: int) -> int:
    """The privileged helper of an embedding process that dropped its privileges
    (``joyride.embed(..., drop_to=U)``): serve its neighbour requests on ``fd`` until
    its end closes (``close`` or exit), remove those entries, then undo its setup as
    after a service (``undo_setup``) once it has let go of the interface's lock."""
    for sig in (signal.SIGINT, signal.SIGHUP):  # a terminal's Ctrl-C is for the program
        signal.signal(sig, signal.SIG_IGN)
    helper = NeighbourHelper(ifname, socket.socket(fileno=fd))
    helper.join(None)
    state_dir = StateDir(ifname)
    deadline = time.monotonic() + HELPER_LOCK_WAIT
    while state_dir.service_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    for line in undo_setup(state_dir, ifname):
        log.info("%s", line)
    if not state_dir.service_alive() and state_dir.load() is None:
        state_dir.remove()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m joyride.service.supervisor")
    parser.add_argument("--config")
    parser.add_argument("--ready-fd", type=int, default=None)
    parser.add_argument("--helper-for", metavar="IFACE",
                        help="only the privileged helper of an embedding process")
    parser.add_argument("--helper-fd", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s joyride-supervisor[%(process)d] %(levelname)s "
                               "%(message)s")
    if args.helper_for:
        if args.helper_fd is None:
            parser.error("--helper-for needs --helper-fd")
        return helper_only(args.helper_for, args.helper_fd)
    if not args.config:
        parser.error("--config is required")
    return supervise(args.config, args.ready_fd)


def supervise(config_json: str, ready_fd: int | None = None) -> int:
    """Keep the service of ``config_json`` up from this process until it stops (module
    doc): in the background under ``joyride attach``, or in the foreground under
    ``joyride attach --foreground --user U`` (systemd's unit); the service's readiness
    line goes to ``ready_fd``."""
    cfg = config_from_json(config_json)
    state_dir = StateDir(cfg.ifname)
    state_dir.path.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock_fd = os.open(state_dir.supervisor_lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                      0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        if ready_fd is not None:
            os.close(ready_fd)
        log.error("another supervisor runs for %s", cfg.ifname)
        return 1
    state_dir.supervisor_pid_path.write_text(f"{os.getpid()}\n")
    supervisor = Supervisor(config_json, ready_fd)
    previous = {sig: signal.signal(sig, supervisor._signal)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        return supervisor.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if cfg.user and not supervisor.gave_up and not state_dir.service_alive():
            # The service ran unprivileged: the root-only part of its stop is ours.
            with contextlib.suppress(Exception):
                for line in undo_setup(state_dir, cfg.ifname):
                    log.info("%s", line)
        for path in (state_dir.supervisor_pid_path, state_dir.supervisor_lock_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        os.close(lock_fd)
        if not state_dir.service_alive() and state_dir.load() is None:
            state_dir.remove()


if __name__ == "__main__":
    sys.exit(main())
