"""Every example pipeline materialized at once through `dagster asset materialize`, as a user
would from a shell: for tests/defs/test_concurrency.py and bench/bench_executors.py."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
DAGSTER = str(Path(sys.executable).parent / "dagster")
# All of them write the one warehouse file. Dagster runs one partitions definition per run, so
# they go as three runs at once; each of the first two holds two pipelines, whose steps the
# multiprocess executor starts in parallel.
EXAMPLE_RUNS = [
    ["csv_orders/customers,csv_orders/orders,shop_sqlite/inventory,shop_sqlite/products"],
    ["github_issues/issues,github_issues/comments,shop_events/events", "--partition", "2024-03-15"],
    ["store_sales/stores,store_sales/daily_sales", "--partition", "us-east"],
]
EXAMPLE_STEPS = [
    "csv_orders__sling",
    "shop_sqlite__sling",
    "github_issues__dlt",
    "shop_events__sling",
    "store_sales__dlt",
]


def materialize_examples_at_once(
    env: Mapping[str, str], runs: int = len(EXAMPLE_RUNS)
) -> list[tuple[int, str]]:
    """Start the first `runs` runs together; (return code, output) of each once all ended."""
    return materialize_at_once(env, EXAMPLE_RUNS[:runs])


def materialize_at_once(
    env: Mapping[str, str], runs: Sequence[Sequence[str]]
) -> list[tuple[int, str]]:
    """Start one run per `--select` (and options) together; (return code, output) of each."""
    procs = [
        subprocess.Popen(
            [DAGSTER, "asset", "materialize", "-m", "elt_repo.definitions", "--select", *run],
            cwd=PROJECT_DIR,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for run in runs
    ]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    return [(proc.returncode, out) for proc, out in zip(procs, outputs, strict=True)]
