#!/usr/bin/env python
"""Refresh from the configured repo (the bundled examples by default) and materialize everything."""

from __future__ import annotations

import logging
import os
import sys
import time

from elt_repo.cli.summary import render, summarize
from elt_repo.refresh import refresh
from elt_repo.settings import load_settings


def main() -> int:
    started = time.monotonic()
    settings = load_settings()
    result = refresh(settings)
    print(render(summarize(result.manifest)), "\n")
    if result.error:
        return 3

    # dagster-sling warns about run-config stream subsetting whenever a run has run config,
    # which the demo adds only to quiet the console; the outcome of every run is printed below.
    logging.getLogger("dagster.builtin").setLevel(logging.ERROR)
    # Imported after refresh so the code location loads the manifest just written.
    from dagster import DagsterInstance

    import elt_repo.definitions as location
    from elt_repo.cli.demo import materialize_all, table_counts

    with DagsterInstance.get() as instance:
        outcomes = materialize_all(location.defs, location.manifest, instance)
    for o in outcomes:
        print(
            f"{'ok    ' if o.success else 'FAILED'} {o.op}"
            + (f" [{o.partition}]" if o.partition else "")
        )

    print(f"\nTables in {settings.warehouse}:")
    rows = table_counts(settings.warehouse)
    width = max(len(f"{s}.{t}") for s, t, _ in rows)
    for schema, table, count in rows:
        print(f"  {f'{schema}.{table}':<{width}}  {count:>7,}")
    print(f"\nDone in {time.monotonic() - started:.1f}s.")
    print(
        f"Open the UI: DAGSTER_HOME={os.environ['DAGSTER_HOME']} "
        "ELT_WEBSERVER_URL=http://127.0.0.1:3000 .venv/bin/dagster dev -w workspace.yaml"
    )
    print("then visit http://127.0.0.1:3000 (the same assets, each materializable from there).")
    return 0 if all(o.success for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
