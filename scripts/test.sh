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
echo "test: pytest"
# pytest exits 5 when it collects nothing, and set -e turns that into a failure too.
exec .venv/bin/python -m pytest "$@"
