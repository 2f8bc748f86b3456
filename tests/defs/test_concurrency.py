"""No two steps write one DuckDB file at once: in one multiprocess run, or across runs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import PROJECT_DIR, PipelinesRepo

pytestmark = pytest.mark.slow

DAGSTER = str(Path(sys.executable).parent / "dagster")
# Every example pipeline, all writing the one warehouse file. Dagster runs one partitions
# definition per run, so they go as three runs at once: each of the first two runs two
# pipelines, whose steps the multiprocess executor would start in parallel.
RUNS = [
    ["csv_orders/customers,csv_orders/orders,shop_sqlite/inventory,shop_sqlite/products"],
    ["github_issues/issues,github_issues/comments,shop_events/events", "--partition", "2024-03-15"],
    ["store_sales/stores,store_sales/daily_sales", "--partition", "us-east"],
]
ENDS = {"STEP_SUCCESS", "STEP_FAILURE", "STEP_UP_FOR_RETRY"}


def step_intervals(instance) -> list[tuple[float, float, str]]:
    """(start, end, step) of every step attempt of every run, from the event log."""
    intervals = []
    for run in instance.get_runs():
        started: dict[str, float] = {}
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is None or entry.step_key is None:
                continue
            if event.event_type_value == "STEP_START":
                started[entry.step_key] = entry.timestamp
            elif event.event_type_value in ENDS and entry.step_key in started:
                intervals.append((started.pop(entry.step_key), entry.timestamp, entry.step_key))
    return sorted(intervals)


def test_parallel_runs_of_every_example_never_write_the_warehouse_at_once(
    tmp_path: Path, examples_repo: PipelinesRepo
) -> None:
    from dagster import DagsterInstance

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT_DIR / "dagster.yaml").read_text())
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ELT_REPO_URL": examples_repo.url,
        "ELT_STATE_DIR": str(tmp_path / "state"),
        "ELT_WAREHOUSE": str(tmp_path / "warehouse.duckdb"),
    }
    refresh = [sys.executable, "scripts/refresh.py", "--quiet", "--sync-partitions"]
    subprocess.run(refresh, cwd=PROJECT_DIR, env=env, check=True, capture_output=True)
    for attempt in range(5):
        procs = [
            subprocess.Popen(
                [DAGSTER, "asset", "materialize", "-m", "elt_repo.definitions", "--select", *run],
                cwd=PROJECT_DIR,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for run in RUNS
        ]
        outputs = [proc.communicate(timeout=600)[0] for proc in procs]
        for proc, out in zip(procs, outputs, strict=True):
            assert "Conflicting lock" not in out, f"attempt {attempt + 1}: {out[-3000:]}"
            assert proc.returncode == 0, f"attempt {attempt + 1}: {out[-3000:]}"

    with DagsterInstance.from_config(str(home)) as instance:
        intervals = step_intervals(instance)
        attempts = defaultdict(int)
        for _, _, step in intervals:
            attempts[step] += 1
    # Five times every pipeline's step, each once: no attempt failed and was retried.
    assert dict(attempts) == {
        f"{name}__{tool}": 5
        for name, tool in [
            ("csv_orders", "sling"),
            ("shop_sqlite", "sling"),
            ("github_issues", "dlt"),
            ("shop_events", "sling"),
            ("store_sales", "dlt"),
        ]
    }
    for (_, end, step), (start, _, following) in zip(intervals, intervals[1:], strict=False):
        assert start >= end, f"{following} started while {step} was still writing"
