"""CLI checks of ``joyride bench``/``joyride demo`` and mode detection (no test bed)."""

from __future__ import annotations

import importlib

import pytest

from joyride.bench import modes
from joyride.cli import build_parser, main
from joyride.errors import JoyrideError, PrivilegeError


def test_both_subcommands_registered() -> None:
    parser = build_parser()
    args = parser.parse_args(["bench", "--quick", "--json", "x.json"])
    assert args.quick and str(args.json) == "x.json"
    assert parser.parse_args(["demo", "--quick"]).quick


def test_non_root_refused_with_one_line(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    for cmd in ("bench", "demo"):
        rc = main([cmd, "--quick"])
        err = capsys.readouterr().err
        assert rc == PrivilegeError("x").exit_code and "root" in err and err.count("\n") == 1


def test_bench_rejects_unknown_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    from joyride.cli import bench

    monkeypatch.setattr("os.geteuid", lambda: 0)  # the check comes before any bed
    args = build_parser().parse_args(["bench", "--modes", "service,turbo"])
    with pytest.raises(JoyrideError, match="turbo"):
        bench.run(args)


def test_missing_mode_is_reported_not_faked(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def fake(name: str, package: str | None = None) -> object:
        if name in ("joyride.embed", "joyride.cli.run"):
            raise ImportError(f"No module named {name!r}")
        return real(name, package)

    monkeypatch.setattr(modes.importlib, "import_module", fake)
    gone = modes.unavailable()
    assert gone["embedded"].startswith("not available yet")
    assert gone["service"].startswith("not available yet")


def test_modes_available_in_this_tree() -> None:
    assert modes.embedded_mode() is None
