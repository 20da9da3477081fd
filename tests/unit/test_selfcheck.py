"""The self-check turns each missing capability into one clear line and a failure."""

from __future__ import annotations

import socket

import pytest

from joyride import bccenv, selfcheck
from joyride.cli import main
from joyride.errors import EnvironmentProblem


def test_not_root_stops_at_one_line(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(selfcheck.os, "geteuid", lambda: 1000)
    assert main(["selfcheck"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[FAIL] privilege: not root: BPF, XDP and namespaces need root (run as root)"
    assert len(out) == 2  # the failed line and the summary, nothing else


def test_kernel_without_af_xdp(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> socket.socket:
        raise OSError(97, "Address family not supported by protocol")

    monkeypatch.setattr(selfcheck.socket, "socket", refuse)
    with pytest.raises(selfcheck.JoyrideError, match="CONFIG_XDP_SOCKETS"):
        selfcheck.check_af_xdp()


def test_bcc_compile_failure_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    class BrokenBPF:
        XDP = 6

        def __init__(self, text: str) -> None:
            raise Exception("Failed to compile BPF module <text>")

    class FakeBcc:
        BPF = BrokenBPF

    monkeypatch.setattr(bccenv, "load_bcc", lambda: FakeBcc)
    monkeypatch.setattr(bccenv, "ensure_kernel_headers", lambda: "ok")
    with pytest.raises(EnvironmentProblem, match="could not compile/load an XDP program"):
        bccenv.check_compile()


def test_missing_headers_without_fallback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setattr(bccenv, "modules_dir", lambda release=None: tmp_path)
    monkeypatch.setattr(bccenv, "debian_headers", lambda: None)
    with pytest.raises(EnvironmentProblem, match="install linux-headers-amd64"):
        bccenv.ensure_kernel_headers()


def test_missing_bcc_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_bcc(name: str, *args: object, **kwargs: object) -> object:
        if name == "bcc":
            raise ImportError("No module named 'bcc'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_bcc)
    with pytest.raises(EnvironmentProblem, match=r"scripts/setup\.sh"):
        bccenv.load_bcc()
