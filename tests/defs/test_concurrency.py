"""No two steps write one DuckDB file at once: in one multiprocess run, or across runs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from elt_repo.defs.assets import duckdb_pool
from tests.conftest import PROJECT_DIR, PipelinesRepo
from tests.example_runs import EXAMPLE_STEPS, materialize_examples_at_once

pytestmark = pytest.mark.slow

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
            if event.event_type_value in ("STEP_START", "STEP_RESTARTED"):  # a retry restarts
                started[entry.step_key] = entry.timestamp
            elif event.event_type_value in ENDS and entry.step_key in started:
                intervals.append((started.pop(entry.step_key), entry.timestamp, entry.step_key))
    return sorted(intervals)


def step_failures(instance) -> list[str]:
    """What each failed or retried step attempt said: the reason for an extra attempt."""
    said = []
    for run in instance.get_runs():
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is not None and event.event_type_value in ENDS - {"STEP_SUCCESS"}:
                said.append(f"{entry.step_key}: {entry.message[-1500:]}")
    return said


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
    # The refresh made the warehouse's pool, limit 1: runs that start together cannot both
    # claim it while Dagster would still be setting it up.
    with DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        pool = duckdb_pool(tmp_path / "warehouse.duckdb")
        assert sorted(storage.get_concurrency_keys()) == [pool]
        assert storage.get_concurrency_info(pool).slot_count == 1
    for attempt in range(5):
        for returncode, out in materialize_examples_at_once(env):
            assert "Conflicting lock" not in out, f"attempt {attempt + 1}: {out[-3000:]}"
            assert returncode == 0, f"attempt {attempt + 1}: {out[-3000:]}"

    with DagsterInstance.from_config(str(home)) as instance:
        intervals = step_intervals(instance)
        failures = step_failures(instance)
        attempts = defaultdict(int)
        for _, _, step in intervals:
            attempts[step] += 1
    # Five times every pipeline's step, each once: no attempt failed and was retried.
    assert dict(attempts) == dict.fromkeys(EXAMPLE_STEPS, 5), failures
    for (_, end, step), (start, _, following) in zip(intervals, intervals[1:], strict=False):
        assert start >= end, f"{following} started while {step} was still writing"
