"""Can this machine run Joyride? One line per capability, checked for real.

Each check does the thing it reports on (loads a BPF program, attaches XDP to a
throwaway veth pair inside a namespace, opens an AF_XDP socket) rather than reading a
configuration file, and turns failure into a one-line reason.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from joyride import bccenv
from joyride.errors import JoyrideError

AF_XDP: Final = 44
XDP_FLAGS_DRV_MODE: Final = 1 << 2
XDP_FLAGS_SKB_MODE: Final = 1 << 1
TOOLS: Final = ("ip", "ethtool", "tc", "nft", "bpftool", "tcpdump", "curl", "iperf3")


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"[{'ok' if self.ok else 'FAIL'}] {self.name}: {self.detail}"


def check_root() -> str:
    if os.geteuid() != 0:
        raise JoyrideError("not root: BPF, XDP and namespaces need root (run as root)")
    return "running as root"


def check_headers() -> str:
    return bccenv.ensure_kernel_headers()


def check_bpf_load() -> str:
    return bccenv.check_compile()


def check_tools() -> str:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise JoyrideError(f"missing tools: {', '.join(missing)} (run scripts/setup.sh)")
    return ", ".join(TOOLS)


def check_xdp_attach() -> str:
    """Attach a trivial XDP program natively to a veth inside a throwaway test bed."""
    from joyride.testbed import Testbed

    bcc = bccenv.load_bcc()
    with Testbed() as bed:
        prog = bcc.BPF(text=bccenv.TRIVIAL_XDP)
        try:
            fn = prog.load_func(bccenv.PROBE_NAME, bcc.BPF.XDP)
            with bed.joy.inside():
                try:
                    bcc.BPF.attach_xdp(bed.joy.ifname.encode(), fn, XDP_FLAGS_DRV_MODE)
                except Exception as exc:
                    raise JoyrideError(f"native XDP attach on veth refused: {exc}") from exc
                bcc.BPF.remove_xdp(bed.joy.ifname.encode(), XDP_FLAGS_DRV_MODE)
        finally:
            prog.cleanup()
    return "native XDP program attached to and detached from a veth in a namespace"


def check_af_xdp() -> str:
    try:
        sock = socket.socket(AF_XDP, socket.SOCK_RAW, 0)
    except OSError as exc:
        raise JoyrideError(f"cannot create an AF_XDP socket ({exc.strerror}): "
                           "kernel built without CONFIG_XDP_SOCKETS?") from exc
    sock.close()
    return "AF_XDP socket created"


CHECKS: Final[tuple[tuple[str, Callable[[], str]], ...]] = (
    ("privilege", check_root),
    ("tools", check_tools),
    ("kernel headers", check_headers),
    ("BPF load", check_bpf_load),
    ("XDP attach", check_xdp_attach),
    ("AF_XDP socket", check_af_xdp),
)


def run_checks() -> list[CheckResult]:
    results: list[CheckResult] = []
    for name, check in CHECKS:
        try:
            results.append(CheckResult(name, True, check()))
        except (JoyrideError, OSError) as exc:
            results.append(CheckResult(name, False, str(exc)))
        if name == "privilege" and not results[-1].ok:
            break  # every later check needs root; one clear line is better than five
    return results
