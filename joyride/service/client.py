"""What the CLI does to services: find them, ask them, stop them, clean up after them.

Every function acts on the network namespace of the caller and raises ``JoyrideError``
subclasses with one-line messages.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from joyride.claim.cleanup import cleanup_stale
from joyride.claim.statedir import ServiceState, StateDir
from joyride.errors import JoyrideError, PrivilegeError
from joyride.processes import pid_alive
from joyride.service import control, orphans
from joyride.steer import xdp
from joyride.steer.program import PROG_NAME

STOP_TIMEOUT: Final = 15.0
T = TypeVar("T")


class NotAttached(JoyrideError):
    """No service (live or crashed) for that interface in this namespace."""

    exit_code = 3


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise PrivilegeError(f"{what} needs root: run it as root")


def _not_attached(ifname: str) -> NotAttached:
    return NotAttached(f"{ifname} is not attached in this network namespace "
                       f"(attach with `joyride attach {ifname} --ports ...`)")


def running(ifname: str) -> StateDir:
    """The state directory of a live service for ``ifname``, or NotAttached."""
    state_dir = StateDir(ifname)
    if state_dir.service_alive():
        return state_dir
    if state_dir.load() is not None:
        raise NotAttached(f"the Joyride service for {ifname} is not running (it died); "
                          f"`joyride detach {ifname}` cleans up, `joyride attach` restarts")
    _check_interface(ifname)
    raise _not_attached(ifname)


def _check_interface(ifname: str) -> None:
    xdp.ifindex(ifname)  # InterfaceNotFound says it better than "not attached"


def ask(ifname: str, message: dict[str, Any], *,
        max_reply: int = control.MAX_LINE) -> dict[str, Any]:
    """One control request. Root first checks the service's liveness lock (for a better
    message about a dead one); any user may ask, and the service authorizes the request
    (``control.READ_ONLY``)."""
    return _asking(ifname, lambda path: control.request(path, message, max_reply=max_reply))


def open_stream(ifname: str, message: dict[str, Any]) -> tuple[socket.socket, bytes]:
    """A request answered by a stream (``control.open_stream``), found and refused as
    ``ask``'s are."""
    return _asking(ifname, lambda path: control.open_stream(path, message))


def _asking(ifname: str, call: Callable[[Path], T]) -> T:
    root = os.geteuid() == 0
    state_dir = running(ifname) if root else StateDir(ifname)
    try:
        return call(state_dir.control_path)
    except control.ServiceNotRunning as exc:
        if not root:  # it cannot read the liveness lock: no service is all it knows
            raise _not_attached(ifname) from exc
        raise NotAttached(f"the Joyride service for {ifname} does not answer: {exc}") from exc
    except PermissionError as exc:
        raise PrivilegeError(f"the Joyride service for {ifname} admits only root and its "
                             "group (joyride attach --group)") from exc


def detach(ifname: str, *, timeout: float = STOP_TIMEOUT) -> list[str]:
    """Stop the service (or clean up after a dead one); return what was done."""
    require_root("detaching")
    orphans.sweep()  # state left by namespaces that are gone
    state_dir = StateDir(ifname)
    # The supervisor first, or it would restart the service we stop; SIGTERM makes it
    # stop its service cleanly (the service undoes everything) and exit.
    from joyride.service import supervisor

    supervisor_pid = supervisor.stop(state_dir, timeout)
    if supervisor_pid is not None and not state_dir.service_alive() \
            and state_dir.load() is None:
        return [f"detached {ifname} (supervisor pid {supervisor_pid} and its service "
                "stopped)"]
    if state_dir.service_alive():
        state = state_dir.load()
        # ServiceNotRunning: it died between our check and now; the cleanup below runs.
        with contextlib.suppress(control.ServiceNotRunning):
            control.request(state_dir.control_path, {"op": "shutdown"})
        _wait_stopped(state_dir, state, timeout)
        if state_dir.load() is None:
            return [f"detached {ifname}" + (f" (service pid {state.pid} stopped)" if state
                                            else "")]
    with state_dir.held() as got:
        if not got:
            raise JoyrideError(f"a Joyride service for {ifname} is starting right now: "
                               "retry in a moment")
        has_state = state_dir.load() is not None
        if not has_state and not _joyride_program_on(ifname):
            state_dir.remove()
            _check_interface(ifname)
            raise _not_attached(ifname)
        notices = cleanup_stale(state_dir, ifname, keep_lock=True, detach_program=True)
        state_dir.remove()
    return [*notices, f"detached {ifname}"]


def _joyride_program_on(ifname: str) -> bool:
    try:
        current = xdp.query(xdp.ifindex(ifname))
    except xdp.InterfaceNotFound:
        return False
    return current is not None and current.name == PROG_NAME


def _wait_stopped(state_dir: StateDir, state: ServiceState | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while state_dir.service_alive() or (state is not None and pid_alive(state.pid)):
        if time.monotonic() > deadline:
            raise JoyrideError(f"the service for {state_dir.ifname} did not stop within "
                               f"{timeout:g} s" + (f" (pid {state.pid})" if state else ""))
        time.sleep(0.02)


@dataclass
class InterfaceStatus:
    ifname: str
    state: str  # running | dead | stale-program | not-attached
    service: dict[str, Any] = field(default_factory=dict)
    program: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ifname": self.ifname, "state": self.state, "service": self.service,
                "program": self.program}


def status(ifname: str | None = None) -> list[InterfaceStatus]:
    """Status of one interface, or of every interface with state in this namespace."""
    orphans.sweep()  # state left by namespaces that are gone (a no-op without root)
    names = [ifname] if ifname else [d.ifname for d in StateDir.all_in_netns()]
    out = []
    for name in names:
        state_dir = StateDir(name)
        program = _program(name)
        if state_dir.service_alive():
            try:
                reply = control.request(state_dir.control_path, {"op": "status"})
                service = dict(reply["state"])
            except control.ControlError:
                service = (state_dir.load() or ServiceState(name, 0, 0, 0)).to_json()
            out.append(InterfaceStatus(name, "running", service, program))
            continue
        stale = state_dir.load()
        if stale is not None:
            out.append(InterfaceStatus(name, "dead", stale.to_json(), program))
        elif program is not None and program["name"] == PROG_NAME:
            out.append(InterfaceStatus(name, "stale-program", {}, program))
        else:
            if ifname:
                _check_interface(name)
            out.append(InterfaceStatus(name, "not-attached", {}, program))
    return out


def _program(ifname: str) -> dict[str, Any] | None:
    try:
        current = xdp.query(xdp.ifindex(ifname))
    except xdp.InterfaceNotFound:
        return None
    except PrivilegeError:
        return None
    if current is None:
        return None
    return {"id": current.prog_id, "name": current.name, "mode": current.mode,
            "map_ids": list(current.map_ids)}
