"""Joyride: a hybrid kernel-bypass TCP/IP stack for Linux.

XDP steers the flows of selected local ports into AF_XDP sockets; a user-space TCP/IP
stack (typed Python compiled with mypyc on the per-request path, with cffi C for the
rings, frame parsing/building and header prediction) serves them; every other packet
falls through to the kernel untouched.
"""

from joyride._compiled import warn_if_stale

__version__ = "0.1.0"

warn_if_stale()
