"""Errors meant for the user: each carries a one-line, actionable message."""

from __future__ import annotations


class JoyrideError(Exception):
    """Base class: the CLI prints ``joyride: <message>`` and exits with ``exit_code``."""

    exit_code: int = 1


class PrivilegeError(JoyrideError):
    """The operation needs root (or CAP_NET_ADMIN/CAP_BPF) and the caller lacks it."""

    exit_code = 77


class EnvironmentProblem(JoyrideError):
    """The machine cannot do what was asked (no BPF/XDP support, BCC unusable, ...)."""

    exit_code = 69
