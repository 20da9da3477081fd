#!/usr/bin/env bash
# The test command (README and CI run exactly this, as root):
#   bash scripts/test.sh [pytest args...]
# Sets up (idempotent), then lint, type check, and every test: unit and integration.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh

echo "test: ruff"
.venv/bin/ruff check .
echo "test: mypy"
.venv/bin/mypy
if [[ $# -eq 0 ]]; then
  # The installed build runs the mypyc-compiled modules (setup.py); the same sources
  # must work interpreted too (JOYRIDE_PURE_PYTHON=1 builds): unit tests on a copy of
  # the tree without the compiled modules (first on sys.path, so it is what imports).
  echo "test: unit tests, interpreted"
  PURE="$(mktemp -d /tmp/joyride-pure.XXXXXX)"
  tar -C "$ROOT" --exclude=./.venv --exclude=./.git --exclude=./build --exclude=__pycache__ \
    -cf - . | tar -C "$PURE" -xf -
  find "$PURE" -name "*.cpython-*.so" ! -name "libjoyride_preload*" -delete
  status=0
  (cd "$PURE" && PYTHONPATH="$PURE" "$ROOT/.venv/bin/python" -m pytest -q -p no:cacheprovider \
    tests/unit) || status=$?
  if [[ $status -eq 0 ]]; then
    # The C data plane under AddressSanitizer and UBSan: the same module rebuilt with
    # them (JOYRIDE_SANITIZE=1), its unit, differential and hostile-frame tests run
    # against it, the sanitizer runtimes preloaded into Python.
    echo "test: C data plane under ASan/UBSan"
    (cd "$PURE" && JOYRIDE_SANITIZE=1 "$ROOT/.venv/bin/python" cffi_build/dataplane_build.py \
      >/dev/null && LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
      ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      PYTHONPATH="$PURE" "$ROOT/.venv/bin/python" -m pytest -q -p no:cacheprovider \
      tests/unit/dataplane) || status=$?
  fi
  rm -rf "$PURE"
  [[ $status -eq 0 ]] || { echo "test: interpreted unit tests failed" >&2; exit "$status"; }
fi

echo "test: pytest"
# pytest exits 5 when it collects nothing, and set -e turns that into a failure too.
exec .venv/bin/python -m pytest "$@"
