"""Argument validation of Socket and the XDP loader: refused before any syscall.

None of these needs privileges: validation runs before the AF_XDP socket is created.
The privilege test drops every capability in a child process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from xsk import (
    ConfigError,
    InterfaceNotFound,
    QueueOutOfRange,
    RingSizeError,
    Socket,
    Umem,
    ZeroCopyUnsupported,
    attach_redirect_all,
)

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("ring", ["rx_size", "tx_size", "fill_size", "comp_size"])
@pytest.mark.parametrize("size", [0, 3, 1000, 2049, -8, 1 << 21])
def test_ring_sizes_must_be_powers_of_two(ring: str, size: int) -> None:
    kwargs: dict[str, Any] = {ring: size}
    with pytest.raises(RingSizeError, match=ring):
        Socket("lo", 0, **kwargs)


def test_ring_size_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Socket("lo", 0, rx_size=100)


@pytest.mark.parametrize(("kwargs", "exc"), [
    ({"mode": "turbo"}, ConfigError),
    ({"zerocopy": "yes"}, ConfigError),
    ({"mode": "skb", "zerocopy": True}, ZeroCopyUnsupported),
])
def test_bad_modes(kwargs: dict[str, Any], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        Socket("lo", 0, **kwargs)


@pytest.mark.parametrize("queue", [-1, 1.5, "0"])
def test_bad_queue(queue: Any) -> None:
    with pytest.raises(QueueOutOfRange):
        Socket("lo", queue)


@pytest.mark.parametrize("ifname", ["jr-no-such0", "", 987654, "x" * 40])
def test_unknown_interface(ifname: str | int) -> None:
    with pytest.raises(InterfaceNotFound):
        Socket(ifname, 0)
    with pytest.raises(InterfaceNotFound):
        attach_redirect_all(ifname)


def test_bad_attach_arguments() -> None:
    with pytest.raises(ValueError, match="mode"):
        attach_redirect_all("lo", "hw")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_queues"):
        attach_redirect_all("lo", max_queues=0)


def test_shared_with_other_umem_is_refused() -> None:
    class FakeSocket:
        closed = False
        umem = Umem(frame_count=4)

    with pytest.raises(ConfigError, match="different Umem"):
        Socket("lo", 0, Umem(frame_count=4), shared_with=FakeSocket())  # type: ignore[arg-type]
    FakeSocket.umem.close()


def test_umem_is_not_touched_by_refused_arguments() -> None:
    with Umem(frame_count=16) as umem:
        with pytest.raises(RingSizeError):
            Socket("lo", 0, umem, rx_size=3)
        assert umem.free_frames == 16
        assert umem.sockets == ()


CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from xsk import Socket, XskPermissionError, attach_redirect_all
for make in (lambda: Socket("lo", 0), lambda: attach_redirect_all("lo")):
    try:
        make()
    except XskPermissionError as exc:
        assert exc.errno in (1, 13), exc.errno
        print("refused:", exc)
    else:
        raise SystemExit("no PermissionError without capabilities")
"""


def test_missing_privilege_is_a_permission_error() -> None:
    cmd = [sys.executable, "-c", CHILD, str(ROOT)]
    if os.geteuid() == 0:
        # Root keeps file access (it owns the interpreter's directories) but loses
        # every capability: AF_XDP and bpf() then answer EPERM.
        cmd = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert proc.stdout.count("refused:") == 2
    assert "CAP_NET_RAW" in proc.stdout and "CAP_BPF" in proc.stdout
