"""A Postgres warehouse takes many writers: runs of different pipelines load at the same time,
and the runs of one dlt pipeline still never overlap (its pool, dlt_<pipeline>, has one slot)."""

from __future__ import annotations

import os
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance

from tests.conftest import PROJECT_DIR, PipelinesRepo
from tests.defs.test_concurrency import step_failures, step_intervals
from tests.example_runs import EXAMPLE_RUNS, materialize_at_once

pytestmark = pytest.mark.slow

POOLS = [
    "dlt_github_issues",
    "dlt_store_sales",
    "sling_csv_orders",
    "sling_shop_events",
    "sling_shop_sqlite",
]
# The examples' three runs, and a second run of each dlt pipeline (another partition), all
# started at once: five runs, as many as the run queue would let through and one more.
RUNS = [
    *EXAMPLE_RUNS,
    ["github_issues/issues,github_issues/comments", "--partition", "2024-03-16"],
    ["store_sales/stores,store_sales/daily_sales", "--partition", "us-west"],
]


def run_starts(instance) -> dict[str, float]:
    """run id -> when its run process started."""
    return {
        run.run_id: min(
            e.timestamp
            for e in instance.all_logs(run.run_id)
            if e.dagster_event is not None
            and e.dagster_event.event_type == DagsterEventType.RUN_START
        )
        for run in instance.get_runs()
    }


def step_runs(instance, step: str) -> list[tuple[float, float, float]]:
    """(run start, step start, step end) of every run of one step, in order of step start."""
    starts = run_starts(instance)
    found = []
    for run_id, started in starts.items():
        times = {
            e.dagster_event.event_type_value: e.timestamp
            for e in instance.all_logs(run_id)
            if e.dagster_event is not None and e.step_key == step
        }
        if "STEP_START" in times:
            found.append((started, times["STEP_START"], times["STEP_SUCCESS"]))
    return sorted(found, key=lambda t: t[1])


def test_different_pipelines_load_at_once_and_one_dlt_pipeline_never_overlaps(
    tmp_path: Path, examples_repo: PipelinesRepo, pg_url: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT_DIR / "dagster.yaml").read_text())
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ELT_REPO_URL": examples_repo.url,
        "ELT_STATE_DIR": str(tmp_path / "state"),
        "ELT_WAREHOUSE": pg_url,
    }
    refresh = [sys.executable, "scripts/refresh.py", "--quiet", "--sync-partitions"]
    subprocess.run(refresh, cwd=PROJECT_DIR, env=env, check=True, capture_output=True)
    with DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        pools = {
            p: storage.get_concurrency_info(p).slot_count for p in storage.get_concurrency_keys()
        }

    for returncode, out in materialize_at_once(env, RUNS):
        assert returncode == 0, out[-3000:]

    with DagsterInstance.from_config(str(home)) as instance:
        intervals = step_intervals(instance)
        failures = step_failures(instance)
        assert len(intervals) == 7, failures  # every step once: none failed or was retried
        # Steps of different pipelines wrote the warehouse at the same time.
        at_once = [
            (a[2], b[2])
            for a, b in combinations(intervals, 2)
            if a[2] != b[2] and b[0] < a[1] and a[0] < b[1]
        ]
        assert at_once, f"no two steps ever ran at once: {intervals}"
        for step in ("github_issues__dlt", "store_sales__dlt"):
            (first, second) = step_runs(instance, step)
            # The second run was up while the first loaded, and its step waited for the slot.
            assert second[0] < first[2], f"{step}: the runs did not overlap; nothing was tested"
            assert second[1] >= first[2], f"{step} started while its other run still loaded"
    # The means: one pool per pipeline, each with one slot, made by the refresh before any run
    # could claim it; no pool per file.
    assert pools == dict.fromkeys(POOLS, 1)
