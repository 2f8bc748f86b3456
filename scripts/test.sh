#!/usr/bin/env bash
# The README's second command: install everything the tests need, then run them all.
# Pass pytest arguments through, e.g. `scripts/test.sh -m "not e2e"` to skip the slow ones.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
# PostgreSQL server binaries for the throwaway test cluster (apt-get only when missing).
bash "$ROOT/scripts/install_postgres.sh"
cd "$ROOT"
"$ROOT/.venv/bin/ruff" check "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
