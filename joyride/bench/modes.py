"""Which Joyride modes this installation can benchmark, and why not when it cannot.

A mode that is missing is reported as such ("service mode: not available: ...") in
the results and the table, never replaced by a number from something else.
"""

from __future__ import annotations

import importlib


def service_mode() -> str | None:
    """None when ``joyride run`` (preload shim + network service) is usable, else why."""
    try:
        run = importlib.import_module("joyride.cli.run")
        run.preload_library()
        importlib.import_module("joyride.service.service")
    except ImportError as exc:
        return f"not available yet ({exc})"
    except Exception as exc:  # EnvironmentProblem: the shim is not built
        return f"not available ({exc})"
    return None


def embedded_mode() -> str | None:
    """None when ``joyride.embed`` and ``joyride.asyncio`` are importable, else why."""
    try:
        importlib.import_module("joyride.embed")
        importlib.import_module("joyride.asyncio")
    except ImportError as exc:
        return f"not available yet ({exc})"
    return None


def unavailable() -> dict[str, str]:
    """Mode -> reason, for the modes that cannot run here."""
    out = {}
    for mode, check in (("service", service_mode), ("embedded", embedded_mode)):
        reason = check()
        if reason is not None:
            out[mode] = reason
    return out
