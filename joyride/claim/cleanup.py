"""Undoing what a dead service left behind (SIGKILL, OOM, power to the process cut).

A dead service leaves its steering program attached (the kernel holds XDP attachments,
not the process) with an empty XSKMAP, so every frame already reaches the kernel;
what remains to undo is the program itself, the reserved ephemeral ports and the
state files. The caller holds the state directory's lock, so no live service can be
affected.
"""

from __future__ import annotations

import logging

from joyride.claim.statedir import StateDir
from joyride.steer import reservation, xdp
from joyride.steer.ports import PortSet
from joyride.steer.program import PROG_NAME

log = logging.getLogger(__name__)


def detach_joyride_program(ifname: str) -> xdp.AttachedProgram | None:
    """Remove a Joyride steering program from ``ifname``; return it, or None if absent."""
    try:
        index = xdp.ifindex(ifname)
    except xdp.InterfaceNotFound:
        return None
    current = xdp.query(index)
    if current is None or current.name != PROG_NAME:
        return None
    xdp.detach(index, current)
    return current


def cleanup_stale(state_dir: StateDir, ifname: str, *, keep_lock: bool,
                  detach_program: bool = False) -> list[str]:
    """Clean up after a dead service; return notices describing what was done."""
    notices: list[str] = []
    state = state_dir.load()
    if state is not None:
        notices.append(f"cleaned up after a Joyride service that died (pid {state.pid})")
        if state.reserved:
            restored = reservation.release(
                PortSet.parse(state.ephemeral, allow_empty=True),
                PortSet.parse(state.reserved_original, allow_empty=True))
            if not restored:
                notices.append("its reserved ports were already released; left the "
                               "sysctl as found")
    if detach_program:
        gone = detach_joyride_program(ifname)
        if gone is not None:
            notices.append(f"removed stale steering program id {gone.prog_id} from {ifname}")
    if not keep_lock:
        state_dir.remove()
    else:
        for path in (state_dir.state_file, state_dir.control_path):
            path.unlink(missing_ok=True)
    for notice in notices:
        log.warning("%s", notice)
    return notices
