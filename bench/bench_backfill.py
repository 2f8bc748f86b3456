#!/usr/bin/env python
"""A backfill of the daily dlt example as one run, against one run per day.

    .venv/bin/python bench/bench_backfill.py [--days 30] [--repeats 3]

Cases, interleaved: one day's run (the baseline), `--days` days as one single-run backfill
(the default BackfillPolicy of time partitions), and the same days as one run each. Every run
is a real `materialize` of `github_issues` into DuckDB through a Dagster instance in a temp
DAGSTER_HOME. Then it re-runs one day and prints the row counts before and after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))
from _timing import measure, report  # noqa: E402
from dagster import AssetsDefinition, DagsterInstance, materialize  # noqa: E402

from elt_repo.cli.demo import QUIET, RANGE_END, RANGE_START, table_counts  # noqa: E402
from elt_repo.defs.build import build_definitions  # noqa: E402
from elt_repo.defs.resources import build_resources  # noqa: E402
from elt_repo.git.example_repo import ensure_example_repo  # noqa: E402
from elt_repo.refresh import refresh  # noqa: E402
from elt_repo.settings import load_settings  # noqa: E402
from elt_repo.tool_env import configure_process  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    days = [(date(2024, 1, 1) + timedelta(d)).isoformat() for d in range(args.days)]
    with tempfile.TemporaryDirectory() as tmp:
        origin = Path(tmp) / "origin"
        ensure_example_repo(origin)
        env = {
            **os.environ,
            "ELT_REPO_URL": f"file://{origin}",
            "ELT_STATE_DIR": f"{tmp}/state",
            "ELT_WAREHOUSE": f"{tmp}/warehouse.duckdb",
        }
        settings = load_settings(env, project_dir=ROOT)
        configure_process(settings)
        defs = build_definitions(refresh(settings).manifest, settings)
        (github,) = [
            a
            for a in defs.assets
            if isinstance(a, AssetsDefinition) and a.op.name == "github_issues__dlt"
        ]
        resources = build_resources(settings)
        home = Path(tmp) / "dagster_home"
        home.mkdir()
        shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
        with DagsterInstance.from_config(str(home)) as instance:

            def run(**kwargs: object) -> None:
                result = materialize(
                    [github], instance=instance, resources=resources, run_config=QUIET, **kwargs
                )
                assert result.success

            def backfill() -> None:
                run(tags={RANGE_START: days[0], RANGE_END: days[-1]})

            def one_run_per_day() -> None:
                for day in days:
                    run(partition_key=day)

            medians = measure(
                {
                    "one day, one run": lambda: run(partition_key=days[0]),
                    f"{len(days)} days, one single-run backfill": backfill,
                    f"{len(days)} days, one run per day": one_run_per_day,
                },
                args.repeats,
            )
            report(f"github_issues: {len(days)} daily partitions", medians, "one day, one run")

            def counts() -> dict[str, int]:
                return {
                    f"{s}.{t}": n
                    for s, t, n in table_counts(str(settings.warehouse))
                    if s == "github"
                }

            before = counts()
            run(partition_key=days[len(days) // 2])
            after = counts()
            print(f"\nrow counts after the {len(days)}-day loads: {before}")
            print(f"row counts after re-running {days[len(days) // 2]}: {after}")
            assert before == after, "a re-run changed the row counts"


if __name__ == "__main__":
    main()
