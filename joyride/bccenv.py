"""BCC from Debian, and the kernel headers it compiles against.

BCC comes from Debian's ``python3-bpfcc`` (PyPI's ``bcc`` is an unrelated package) and
installs into ``/usr/lib/python3/dist-packages``, which the project's venv does not see.
``scripts/setup.sh`` links just that one package into the venv (``link_into_venv``);
nothing else of Debian's dist-packages comes along.

BCC compiles XDP programs at load time against ``/lib/modules/$(uname -r)/build``. A
custom kernel without a headers package can use Debian's generic headers instead
(``linux-headers-amd64``): ``ensure_kernel_headers`` links ``build`` to the ``-amd64``
directory and ``source`` to the ``-common`` one, and says that it did.
"""

from __future__ import annotations

import os
import platform
import re
import site
import sys
from pathlib import Path
from types import ModuleType
from typing import Final

from joyride.errors import EnvironmentProblem, PrivilegeError

DEBIAN_DIST_PACKAGES: Final = Path("/usr/lib/python3/dist-packages")
HEADERS_ROOT: Final = Path("/usr/src")
# BCC takes program text and function names as bytes (str is deprecated there).
TRIVIAL_XDP: Final = b"int joyride_probe(struct xdp_md *ctx) { return XDP_PASS; }"
PROBE_NAME: Final = b"joyride_probe"


def modules_dir(release: str | None = None) -> Path:
    return Path("/lib/modules") / (release or platform.release())


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", path.name))


def debian_headers() -> tuple[Path, Path] | None:
    """The newest Debian ``(…-amd64, …-common)`` header directories, if installed."""
    arch = sorted(HEADERS_ROOT.glob("linux-headers-*-amd64"), key=_version_key)
    for build in reversed(arch):
        common = build.with_name(build.name.removesuffix("-amd64") + "-common")
        if common.is_dir():
            return build, common
    return None


def ensure_kernel_headers(release: str | None = None) -> str:
    """Make sure BCC finds headers for the running kernel; return what was found or done."""
    mdir = modules_dir(release)
    build = mdir / "build"
    if (build / "include").is_dir() or (build / "Makefile").exists():
        return f"{build} -> {os.path.realpath(build)}"
    fallback = debian_headers()
    if fallback is None:
        raise EnvironmentProblem(
            f"no kernel headers for {mdir.name} and no Debian fallback in {HEADERS_ROOT}: "
            "install linux-headers-amd64 (scripts/setup.sh does)"
        )
    if os.geteuid() != 0:
        raise PrivilegeError(f"linking kernel headers into {mdir} needs root: run scripts/setup.sh")
    arch_dir, common_dir = fallback
    mdir.mkdir(parents=True, exist_ok=True)
    for link, target in ((build, arch_dir), (mdir / "source", common_dir)):
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return (
        f"none shipped for {mdir.name}; linked {build} -> {arch_dir} and "
        f"{mdir / 'source'} -> {common_dir} (Debian's generic headers, see DESIGN.md)"
    )


def link_into_venv() -> str:
    """Expose Debian's ``bcc`` package (only it) inside the running venv's site-packages."""
    source = DEBIAN_DIST_PACKAGES / "bcc"
    if not source.is_dir():
        raise EnvironmentProblem("python3-bpfcc is not installed: apt-get install python3-bpfcc")
    if sys.prefix == sys.base_prefix:
        raise EnvironmentProblem("not running inside a venv: use .venv/bin/python")
    target = Path(site.getsitepackages()[0]) / "bcc"
    if target.is_symlink() and target.resolve() == source.resolve():
        return f"bcc: {target} -> {source} (already linked)"
    if target.exists() or target.is_symlink():
        target.unlink()
    target.symlink_to(source)
    return f"bcc: linked {target} -> {source}"


def load_bcc() -> ModuleType:
    """Import BCC, or explain in one line how to get it."""
    try:
        import bcc
    except ImportError as exc:
        raise EnvironmentProblem(
            f"BCC is not importable ({exc}): run scripts/setup.sh "
            "(installs python3-bpfcc and links it into .venv)"
        ) from exc
    return bcc


def check_compile() -> str:
    """Compile and load a trivial XDP program; return a one-line description."""
    bcc = load_bcc()
    ensure_kernel_headers()
    try:
        prog = bcc.BPF(text=TRIVIAL_XDP)
        fn = prog.load_func(PROBE_NAME, bcc.BPF.XDP)
    except Exception as exc:  # BCC raises bare Exception on compile/load failure
        raise EnvironmentProblem(f"BCC could not compile/load an XDP program: {exc}") from exc
    try:
        version = getattr(bcc, "__version__", "?")
        return f"BCC {version} compiled and loaded an XDP program (fd {fn.fd})"
    finally:
        prog.cleanup()
