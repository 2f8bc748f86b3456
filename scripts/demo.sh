#!/usr/bin/env bash
# The README's first command: install, build the local example Git repo, refresh, materialize
# every example asset into local DuckDB, and print the tables with their row counts. Offline.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
export DAGSTER_HOME="${DAGSTER_HOME:-$ROOT/.elt_state/dagster_home}"
mkdir -p "$DAGSTER_HOME"
cp "$ROOT/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
exec "$ROOT/.venv/bin/python" "$ROOT/scripts/demo.py"
