#!/usr/bin/env python
"""Every example pipeline at once, multiprocess against in-process steps.

    .venv/bin/python bench/bench_executors.py [--repeats 5]

Each case starts the three `dagster asset materialize` runs of tests/example_runs.py together
(all of them write one DuckDB warehouse, so the pools serialize their steps) and waits for all
three. Baseline: ELT_EXECUTOR=in_process, every step in its run's process. Against it, the
default multiprocess executor, a process per step. Every run must succeed, and none may hit
DuckDB's lock ("Conflicting lock"): the run fails the benchmark otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))
from _timing import (  # noqa: E402
    Result,
    add_lane_arguments,
    in_lane,
    measure,
    report,
    run_lanes,
    save_lane,
)

from elt_repo.git.example_repo import ensure_example_repo  # noqa: E402
from tests.example_runs import materialize_examples_at_once  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3, help="how many of the 3 runs (CI: 1)")
    add_lane_arguments(parser)
    args = parser.parse_args()
    if args.lanes > 1 and args.lane is None:
        medians, extras = run_lanes(args.lanes)
        lock_errors = sum(extra["lock_errors"] for extra in extras)
    else:
        medians, lock_errors = measure_cases(args)
        if args.lane is not None:
            return  # the first process reports
    report("every example pipeline at once", medians, f"in_process: {args.runs} runs")
    print(f"\nDuckDB lock errors in {2 * args.repeats} rounds of {args.runs} runs: {lock_errors}")
    assert lock_errors == 0


def measure_cases(args: argparse.Namespace) -> tuple[dict[str, Result], int]:
    """Set up and run the cases (a lane: its share); (results, DuckDB lock errors seen)."""
    with tempfile.TemporaryDirectory() as tmp:
        origin = Path(tmp) / "origin"
        ensure_example_repo(origin)
        home = Path(tmp) / "dagster_home"
        home.mkdir()
        shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "ELT_REPO_URL": f"file://{origin}",
            "ELT_STATE_DIR": f"{tmp}/state",
            "ELT_WAREHOUSE": f"{tmp}/warehouse.duckdb",
        }
        refresh = [sys.executable, "scripts/refresh.py", "--quiet", "--sync-partitions"]
        subprocess.run(refresh, cwd=ROOT, env=env, check=True, capture_output=True)
        lock_errors = 0

        def run_all(executor: str) -> None:
            nonlocal lock_errors
            outputs = materialize_examples_at_once({**env, "ELT_EXECUTOR": executor}, args.runs)
            for returncode, out in outputs:
                lock_errors += out.count("Conflicting lock")
                assert returncode == 0, out[-3000:]

        cases = {
            f"in_process: {args.runs} runs": lambda: run_all("in_process"),
            f"multiprocess: {args.runs} runs": lambda: run_all("multiprocess"),
        }
        groups = {name: number for number, name in enumerate(cases)}  # a lane per executor
        medians = measure(in_lane(cases, groups, args), args.repeats, rss="children")
        if args.lane is not None:
            save_lane(args, list(cases), medians, lock_errors=lock_errors)
        return medians, lock_errors


if __name__ == "__main__":
    main()
