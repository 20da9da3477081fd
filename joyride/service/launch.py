"""Starting the service: in the foreground, or as a background process that says "ready".

``joyride attach`` returns once the service is serving. In the background the service
runs under its supervisor (``joyride.service.supervisor``), which restarts it after a
crash. The supervisor is a new session (``setsid``: it survives the terminal and the
CLI) whose stderr (and its service's) goes to ``service.log`` in the state directory;
the service reports the outcome of ``start`` as one JSON
line on a pipe inherited from the CLI: ``{"ok": true, "state": ...}`` or the error.
An EOF with no line means it died while starting; the log tail then says why.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import select
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from joyride.claim import privdrop
from joyride.claim.statedir import ServiceState, StateDir
from joyride.errors import JoyrideError, PrivilegeError
from joyride.service import control, orphans
from joyride.service.service import (
    AlreadyAttached,
    Service,
    ServiceConfig,
    install_signal_handlers,
)
from joyride.steer import xdp
from joyride.steer.ports import PortSet

log = logging.getLogger(__name__)
READY_TIMEOUT: Final = 90.0  # BCC compiles take seconds; a loaded machine takes longer
PROFILE_ENV: Final = "JOYRIDE_PROFILE"  # debugging: profile the service loop into this file


class ServiceStartFailed(JoyrideError):
    """The background service died while starting."""


@dataclass
class Started:
    state: ServiceState
    pid: int


def config_to_json(cfg: ServiceConfig) -> str:
    return json.dumps({
        "ifname": cfg.ifname, "ports": str(cfg.ports), "udp_ports": str(cfg.udp_ports),
        "ephemeral": str(cfg.ephemeral), "mode": cfg.mode, "force": cfg.force,
        "vlan": cfg.vlan, "group": cfg.group, "engine": cfg.engine, "user": cfg.user,
        "workers": cfg.workers,
    })


def config_from_json(text: str) -> ServiceConfig:
    raw = json.loads(text)
    return ServiceConfig(
        ifname=raw["ifname"],
        ports=PortSet.parse(raw["ports"], allow_empty=True),
        udp_ports=PortSet.parse(raw["udp_ports"], allow_empty=True),
        ephemeral=PortSet.parse(raw["ephemeral"], allow_empty=True),
        mode=raw["mode"], force=bool(raw["force"]), vlan=int(raw["vlan"]),
        group=str(raw.get("group", "")), engine=bool(raw.get("engine", True)),
        user=str(raw.get("user", "")), workers=int(raw.get("workers", 0)),
    )


def precheck(cfg: ServiceConfig) -> StateDir:
    """Fast refusals before anything is spawned or compiled."""
    if os.geteuid() != 0:
        raise PrivilegeError("attaching needs root (XDP, BPF maps, AF_XDP): run it as root")
    orphans.sweep()  # state left by namespaces that are gone
    xdp.ifindex(cfg.ifname)  # raises InterfaceNotFound with the actionable message
    state_dir = StateDir(cfg.ifname)
    if state_dir.service_alive():
        raise AlreadyAttached(
            f"{cfg.ifname} is already attached in this network namespace "
            f"(see `joyride status {cfg.ifname}`; `joyride detach {cfg.ifname}` first)")
    return state_dir


def start_background(cfg: ServiceConfig, *, timeout: float = READY_TIMEOUT) -> Started:
    state_dir = precheck(cfg)
    state_dir.path.mkdir(parents=True, exist_ok=True, mode=0o700)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    with open(state_dir.log_path, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "joyride.service.supervisor", "--config",
             config_to_json(cfg), "--ready-fd", str(write_fd)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_file,
            pass_fds=(write_fd,), start_new_session=True, close_fds=True)
    os.close(write_fd)
    try:
        line = _read_line(read_fd, proc, timeout)
    finally:
        os.close(read_fd)
    if not line:
        code = proc.poll()
        tail = _log_tail(state_dir)
        raise ServiceStartFailed(
            f"the service for {cfg.ifname} exited while starting (status {code}): {tail}")
    reply = control.decode(line)
    if not reply.get("ok"):
        err = JoyrideError(str(reply.get("error")))
        err.exit_code = int(reply.get("exit_code") or 1)
        raise err
    state = ServiceState.from_json(reply["state"])
    return Started(state, state.pid)


def _read_line(fd: int, proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            proc.terminate()
            raise ServiceStartFailed(f"the service did not report ready within {timeout:g} s")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _log_tail(state_dir: StateDir, lines: int = 3) -> str:
    try:
        text = state_dir.log_path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return " | ".join(text[-lines:]) or "empty log"


def run_service(cfg: ServiceConfig, *, ready_fd: int | None = None,
                on_ready: Callable[[ServiceState], None] | None = None,
                helper_fd: int | None = None) -> int:
    """Run a service in this process until stopped; report readiness on ``ready_fd``.

    With ``cfg.user`` the service drops to that user after setup (``privdrop``); that
    needs the supervisor's helper on ``helper_fd``, which also undoes setup after the
    service exits."""
    _raise_fd_limit()
    profiler = _profiler()
    service = Service(cfg)
    install_signal_handlers(service)
    try:
        user = _service_user(cfg, helper_fd)
        state = service.start()
        if user is not None and helper_fd is not None:
            try:
                service.drop_privileges(user, helper_fd)
            except BaseException:
                service.stop()
                raise
    except JoyrideError as exc:
        _report(ready_fd, control.error_reply(exc))
        raise
    except Exception as exc:
        _report(ready_fd, {"ok": False, "error": f"internal error: {exc!r}", "exit_code": 70})
        raise
    try:
        _report(ready_fd, {"ok": True, "state": state.to_json()})
        if on_ready is not None:
            on_ready(state)
        reason = _serve(service, profiler)
        log.info("stopping: %s", reason)
    finally:
        service.stop()
    return 0


def run_supervised(cfg: ServiceConfig, *,
                   on_ready: Callable[[ServiceState], None] | None = None) -> int:
    """Run the supervisor in this process (not daemonized) until the service stops: what
    ``joyride attach --foreground --user U`` does, and systemd's unit with it
    (``packaging/joyride@.service``). The service runs as its child and drops to
    ``cfg.user``; this process stays the privileged helper and undoes setup after."""
    import threading

    from joyride.service import supervisor

    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)

    def watch() -> None:
        with os.fdopen(read_fd, "rb") as pipe:
            line = pipe.readline()
        if not line:
            return
        reply = control.decode(line)
        if reply.get("ok"):
            if on_ready is not None:
                on_ready(ServiceState.from_json(reply["state"]))
        else:
            log.error("the service did not start: %s", reply.get("error"))

    watcher = threading.Thread(target=watch, name="joyride-ready", daemon=True)
    watcher.start()
    try:
        return supervisor.supervise(config_to_json(cfg), write_fd)  # closes write_fd
    finally:
        watcher.join(5.0)


def _service_user(cfg: ServiceConfig, helper_fd: int | None) -> privdrop.ServiceUser | None:
    if not cfg.user:
        return None
    if helper_fd is None:
        raise JoyrideError(f"--user {cfg.user}: dropping privileges needs the supervisor "
                           "(run attach without --foreground)")
    try:
        return privdrop.resolve_user(cfg.user)
    except (KeyError, ValueError) as exc:
        raise JoyrideError(f"--user {cfg.user}: no such unprivileged user ({exc}); "
                           "scripts/setup.sh creates the system user "
                           f"{privdrop.DEFAULT_USER!r}") from exc


def _profiler() -> tuple[Any, str] | None:
    """Under ``$JOYRIDE_PROFILE`` (a path), a cProfile profiler and that path. Made
    before the service drops privileges: after it, the interpreter's own library may
    not be readable by the service's user (a Python installed under /root), and the
    import failed there, killing every service started with the variable."""
    target = os.environ.get(PROFILE_ENV)
    if not target:
        return None
    import cProfile

    return cProfile.Profile(), target


def _serve(service: Service, profiler: tuple[Any, str] | None) -> str:
    """The service loop; with a profiler also a cProfile of it, written to its path
    when the service stops (for finding the loop's per-byte costs)."""
    if profiler is None:
        return service.serve()
    profile, target = profiler
    try:
        return str(profile.runcall(service.serve))
    finally:
        profile.dump_stats(target)


def _raise_fd_limit() -> None:
    """Every application connection holds one descriptor in the service: take the
    hard limit (the soft default of 1024 would cap it at about a thousand)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _report(fd: int | None, message: dict[str, Any]) -> None:
    if fd is None:
        return
    try:
        os.write(fd, control.encode(message))
    except OSError:
        pass  # the CLI went away; the service keeps its own log
    finally:
        os.close(fd)
