"""Every user error of attach/detach/status/stats/ports: one actionable line, nonzero exit.

The CLI runs as a user would run it, inside the bed's namespace via ``ip netns exec``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from steer_cli import JOYRIDE, cli, one_line_error, run_text

from joyride import bccenv
from joyride.steer import xdp
from joyride.testbed import Testbed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bed() -> Iterator[Testbed]:
    with Testbed() as tb:
        yield tb


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("attach", "nosuchif0", "--ports", "80"), 2, "no interface 'nosuchif0'"),
        (("detach", "nosuchif0"), 2, "no interface 'nosuchif0'"),
        (("stats", "nosuchif0"), 2, "no interface 'nosuchif0'"),
        (("status", "nosuchif0"), 2, "no interface 'nosuchif0'"),
        (("ports", "nosuchif0", "add", "80"), 2, "no interface 'nosuchif0'"),
    ],
)
def test_unknown_interface(bed: Testbed, args: tuple[str, ...], code: int,
                           message: str) -> None:
    out = cli(bed.joy, *args, check=False)
    assert message in one_line_error(out)
    assert out.returncode == code


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("80,abc", "not a port number: 'abc'"),
        ("0", "port 0"),
        ("65536", "beyond 65535"),
        ("8000-70000", "beyond 65535"),
        ("90-80", "runs backwards"),
        ("", "empty port list"),
        ("80,,81", "empty item"),
    ],
)
def test_malformed_port_specs(bed: Testbed, spec: str, message: str) -> None:
    out = cli(bed.joy, "attach", bed.joy.ifname, "--ports", spec, check=False)
    assert message in one_line_error(out)
    assert out.returncode == 2


def test_listen_port_inside_the_ephemeral_range_is_refused(bed: Testbed) -> None:
    out = cli(bed.joy, "attach", bed.joy.ifname, "--ports", "60005", check=False)
    assert "ephemeral range" in one_line_error(out)
    assert out.returncode == 2


@pytest.mark.parametrize("args", [("detach",), ("stats",), ("ports", "add", "80"),
                                  ("ports", "list")])
def test_not_attached(bed: Testbed, args: tuple[str, ...]) -> None:
    out = cli(bed.joy, args[0], bed.joy.ifname, *args[1:], check=False)
    assert f"{bed.joy.ifname} is not attached" in one_line_error(out)
    assert out.returncode == 3


def test_status_of_an_unattached_interface(bed: Testbed) -> None:
    out = cli(bed.joy, "status", bed.joy.ifname, check=False)
    assert out.returncode == 3 and "not attached" in out.stdout and not out.stderr


@pytest.mark.parametrize("args", [("attach", "IF", "--ports", "80"), ("detach", "IF"),
                                  ("status",), ("ports", "IF", "add", "80")])
def test_missing_root(bed: Testbed, args: tuple[str, ...]) -> None:
    setpriv = shutil.which("setpriv")
    assert setpriv
    argv = [a.replace("IF", bed.joy.ifname) for a in args]
    out = run_text(bed.joy, setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                   JOYRIDE, *argv)
    assert "root" in one_line_error(out)
    assert out.returncode == 77


def test_stats_are_any_users(bed: Testbed) -> None:
    """Reading counters needs no root (the service authorizes each request): an ordinary
    user is told the interface is not attached, as root is."""
    setpriv = shutil.which("setpriv")
    assert setpriv
    out = run_text(bed.joy, setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                   JOYRIDE, "stats", bed.joy.ifname)
    assert f"{bed.joy.ifname} is not attached" in one_line_error(out)
    assert out.returncode == 3


def test_bcc_unusable(bed: Testbed, tmp_path: Path) -> None:
    fake = tmp_path / "bcc"
    fake.mkdir()
    (fake / "__init__.py").write_text('raise ImportError("simulated: no libbcc")\n')
    out = run_text(bed.joy, "env", f"PYTHONPATH={tmp_path}", JOYRIDE, "attach",
                   bed.joy.ifname, "--ports", "80")
    line = one_line_error(out)
    assert "BCC is not importable" in line and "simulated: no libbcc" in line
    assert out.returncode == 69
    with bed.joy.inside():
        assert xdp.query(xdp.ifindex(bed.joy.ifname)) is None


def test_foreign_program_refused_unless_forced_then_already_attached(bed: Testbed) -> None:
    joy = bed.joy
    bcc = bccenv.load_bcc()
    foreign = bcc.BPF(text=b"int other_xdp(struct xdp_md *ctx) { return XDP_PASS; }")
    try:
        fn = foreign.load_func(b"other_xdp", bcc.BPF.XDP)
        with joy.inside():
            xdp.attach(xdp.ifindex(joy.ifname), fn.fd, "native", replace=None)
        out = cli(joy, "attach", joy.ifname, "--ports", "80", check=False)
        line = one_line_error(out)
        assert "'other_xdp'" in line and "did not attach" in line and "--force" in line
        with joy.inside():
            still = xdp.query(xdp.ifindex(joy.ifname))
        assert still is not None and still.name == "other_xdp"

        cli(joy, "attach", joy.ifname, "--ports", "80", "--force")
        try:
            again = cli(joy, "attach", joy.ifname, "--ports", "81", check=False)
            assert "already attached" in one_line_error(again)
            dup = cli(joy, "ports", joy.ifname, "del", "81", check=False)
            assert "not accelerated" in one_line_error(dup)
            clash = cli(joy, "ports", joy.ifname, "add", "60001", check=False)
            assert "ephemeral range" in one_line_error(clash)
            bad = cli(joy, "ports", joy.ifname, "add", "0", check=False)
            assert "port 0" in one_line_error(bad)
        finally:
            cli(joy, "detach", joy.ifname)
        with joy.inside():
            assert xdp.query(xdp.ifindex(joy.ifname)) is None
    finally:
        foreign.cleanup()
