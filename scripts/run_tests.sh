#!/usr/bin/env bash
# Set up the environment and run the test suite (the slow end-to-end tests are excluded unless
# RUN_SLOW=1; one two-process training run stays in the default suite).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
MARKERS=("-m" "not slow")
if [ "${RUN_SLOW:-0}" = "1" ]; then MARKERS=(); fi
exec "$ROOT/.venv/bin/python" -m pytest "${MARKERS[@]}" "$@"
