#!/usr/bin/env bash
# One-command setup for Joyride on Debian 12 (idempotent; needs root).
#
#   sudo bash scripts/setup.sh          # apt packages, kernel headers, .venv, self-check
#
# Environment: PYTHON (interpreter for the venv, default python3),
#              JOYRIDE_SKIP_SELFCHECK=1 (skip the final self-check).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"

say()  { printf 'setup: %s\n' "$*"; }
fail() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || fail "needs root (apt packages, kernel headers, BPF): run 'sudo bash scripts/setup.sh'"
command -v apt-get >/dev/null || fail "needs a Debian-family system with apt-get (Debian 12 is the reference)"

# Packages: the data path (BCC, bpftool, iproute2, ethtool, headers fallback), the test
# bed (nftables, iptables, ping), libpcap (joyride capture compiles its filters with
# it), and the real peers used by tests and benchmarks.
APT_PACKAGES=(
  python3-bpfcc bpftool iproute2 ethtool linux-headers-amd64 libpcap0.8
  iperf3 wrk curl nginx-light redis-server sockperf tcpdump nftables iptables
  iputils-ping python3-venv python3-dev gcc make libc6-dev
  postgresql postgresql-client memcached libmemcached-tools nodejs
  openssh-server openssh-client openbsd-inetd apache2
)
read -r -a EXTRA <<< "${JOYRIDE_EXTRA_APT:-}"
APT_PACKAGES+=("${EXTRA[@]}")

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  say "installing ${#missing[@]} apt package(s): ${missing[*]}"
  apt-get update -qq || fail "apt-get update failed (network or apt sources?)"
  for pkg in "${missing[@]}"; do
    candidate="$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')"
    [[ -n "$candidate" && "$candidate" != "(none)" ]] ||
      fail "apt package '$pkg' is not available from this system's apt sources"
  done
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    fail "apt-get install failed for: ${missing[*]}"
  # The packaged servers are peers for tests, not services of this machine (ssh is
  # left alone: stopping it could cut off remote access to the machine).
  for svc in nginx redis-server apache2 postgresql memcached openbsd-inetd; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
      systemctl stop "$svc" || true
    fi
  done
else
  say "apt packages: all ${#APT_PACKAGES[@]} present"
fi

# Python environment: a venv with the project (cffi modules compiled at install time).
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating venv at $VENV with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv "$VENV" || fail "could not create a venv with $PYTHON (python3-venv missing?)"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1
fi
say "installing joyride into the venv (editable, with test, dev and bench extras)"
# The venv's own setuptools must read pyproject.toml as the isolated build does (the cffi
# build scripts can also be run in place during development).
"$VENV/bin/python" -m pip install -q --upgrade "setuptools>=77" wheel cffi >/dev/null 2>&1 ||
  fail "could not install setuptools/wheel/cffi into $VENV"
PIP_LOG="$(mktemp /tmp/joyride-pip.XXXXXX)"
if ! "$VENV/bin/python" -m pip install -q -e "$ROOT[test,dev,bench]" >"$PIP_LOG" 2>&1; then
  tail -n 40 "$PIP_LOG" >&2
  fail "pip install failed (full log: $PIP_LOG)"
fi
rm -f "$PIP_LOG"
"$VENV/bin/python" -c "import joyride" 2>/dev/null || fail "the project did not install into $VENV"

# BCC (Debian's python3-bpfcc) linked into the venv, and kernel headers for it.
"$VENV/bin/python" - <<'PY' || exit 1
import sys
from joyride import bccenv
from joyride.errors import JoyrideError
try:
    print("setup:", bccenv.link_into_venv())
    print("setup: kernel headers:", bccenv.ensure_kernel_headers())
except JoyrideError as exc:
    print(f"setup: error: {exc}", file=sys.stderr)
    sys.exit(1)
PY

# The unprivileged user the network service drops to after setup (joyride attach
# --user; joyride/claim/privdrop.py): a system user and group with no login and no home.
if ! getent passwd joyride >/dev/null; then
  say "creating the system user 'joyride' (the network service runs as it after setup)"
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin --comment "Joyride network service" joyride ||
    fail "could not create the system user 'joyride'"
fi

if [[ "${JOYRIDE_SKIP_SELFCHECK:-0}" != 1 ]]; then
  say "self-check:"
  "$VENV/bin/joyride" selfcheck || fail "self-check failed (see the lines above)"
fi
say "done"
