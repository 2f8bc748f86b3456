"""Automation conditions, sensors, schedules, backfill policies and pools built from config.

Conditions are evaluated with Dagster's own evaluator at simulated times, against a real
instance, on the assets built from the example pipelines.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import (
    AssetsDefinition,
    DagsterInstance,
    Definitions,
    build_schedule_context,
    evaluate_automation_conditions,
)

from elt_repo.defs.automation import automation_condition
from elt_repo.defs.build import build_definitions
from elt_repo.defs.partitions import apply_partition_requests, dynamic_partition_requests
from elt_repo.defs.resources import build_resources
from elt_repo.discovery.walk import discover
from elt_repo.manifest import Manifest
from elt_repo.schemas import (
    AutomationSpec,
    PartitionSpec,
    PipelineSpec,
    StaticPartitionSpec,
    load_pipeline_config,
)
from elt_repo.settings import EXAMPLES_DIR
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PipelineSpec]:
    root = tmp_path_factory.mktemp("examples")
    shutil.copytree(EXAMPLES_DIR, root / "pipelines")
    found = discover(root, "pipelines", dict(os.environ))
    assert found.errors == ()
    return {p.name: p for p in found.pipelines}


def build(tmp_path: Path, *pipelines: PipelineSpec) -> Definitions:
    settings = make_settings(tmp_path, "x")
    return Definitions.merge(
        build_definitions(build_manifest(*pipelines), settings),
        Definitions(resources=build_resources(settings)),
    )


def assets_of(defs: Definitions) -> list[AssetsDefinition]:
    return [a for a in defs.assets if isinstance(a, AssetsDefinition)]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def evaluate_ticks(instance: DagsterInstance, *ticks: tuple[Definitions, str]) -> list:
    """Evaluate the conditions tick after tick, each tick with the previous tick's cursor."""
    results, cursor = [], None
    for defs, when in ticks:
        result = evaluate_automation_conditions(
            defs, instance, evaluation_time=at(when), cursor=cursor
        )
        results.append(result)
        cursor = result.cursor
    return results


def key_of(defs: Definitions, table: str):
    return next(k for a in assets_of(defs) for k in a.keys if k.path[-1] == table)


def test_on_cron_requests_the_latest_day_once_the_cron_has_passed(
    tmp_path: Path, examples: dict[str, PipelineSpec]
) -> None:
    defs = build(tmp_path, examples["github_issues"])  # daily partitions, schedule "0 2 * * *"
    with DagsterInstance.ephemeral() as instance:
        before, passed, later = evaluate_ticks(
            instance,
            (defs, "2024-02-10T01:00"),
            (defs, "2024-02-10T02:30"),
            (defs, "2024-02-10T03:00"),
        )
    assert before.total_requested == 0
    assert passed.get_requested_partitions(key_of(defs, "issues")) == {"2024-02-09"}
    assert passed.total_requested == 2  # issues and comments, one partition each
    assert later.total_requested == 0


@pytest.mark.parametrize("on_code_change", [True, False])
def test_a_new_code_version_reruns_every_key_once_only_with_on_code_change(
    tmp_path: Path, examples: dict[str, PipelineSpec], on_code_change: bool
) -> None:
    # store_sales: static keys, on_cron "0 4 * * *", on_code_change in its dagster.yaml
    sales = examples["store_sales"]
    if not on_code_change:
        sales = replace(sales, automation=None)
    v1 = build(tmp_path, sales)
    v2 = build(tmp_path, replace(sales, code_version="changed-in-git"))
    with DagsterInstance.ephemeral() as instance:
        apply_partition_requests(
            instance, dynamic_partition_requests(build_manifest(sales), instance)
        )
        _, same, changed, again = evaluate_ticks(
            instance,
            (v1, "2024-02-10T01:00"),
            (v1, "2024-02-10T01:05"),
            (v2, "2024-02-10T01:10"),
            (v2, "2024-02-10T01:15"),
        )
    assert same.total_requested == 0
    expected = {"us-east", "us-west", "eu-central"} if on_code_change else set()
    assert changed.get_requested_partitions(key_of(v2, "daily_sales")) == expected
    assert again.total_requested == 0


def test_on_missing_requests_each_new_day_once_it_exists(
    tmp_path: Path, examples: dict[str, PipelineSpec]
) -> None:
    """Dagster's on_missing starts from the first evaluation: days added after it are loaded."""
    events = replace(
        examples["shop_events"], schedule=None, automation=AutomationSpec(condition="on_missing")
    )
    defs = build(tmp_path, events)
    with DagsterInstance.ephemeral() as instance:
        first, next_day = evaluate_ticks(
            instance, (defs, "2024-03-05T09:00"), (defs, "2024-03-06T00:30")
        )
    assert first.total_requested == 0
    assert next_day.get_requested_partitions(key_of(defs, "events")) == {"2024-03-05"}


def test_condition_names_map_to_dagster_conditions(examples: dict[str, PipelineSpec]) -> None:
    sales = examples["store_sales"]
    labels = {
        name: (c.get_label() if (c := automation_condition(spec)) else None)
        for name, spec in {
            "default with schedule": replace(sales, automation=None),
            "eager": replace(sales, automation=AutomationSpec("eager")),
            "on_missing": replace(sales, automation=AutomationSpec("on_missing")),
            "none": replace(sales, automation=AutomationSpec("none")),
            "none + code": replace(sales, automation=AutomationSpec("none", on_code_change=True)),
            "no schedule": replace(sales, automation=None, schedule=None),
            "schedule mode": replace(
                sales, automation=None, schedule=replace(sales.schedule, mode="schedule")
            ),
        }.items()
    }
    assert labels == {
        "default with schedule": "on_cron(0 4 * * *, UTC)",
        "eager": "eager",
        "on_missing": "on_missing",
        "none": None,
        "none + code": "on_code_change",
        "no schedule": None,
        "schedule mode": None,
    }


def test_automation_shorthand_and_mapping_load_the_same() -> None:
    base = {"dlt": {"source": "pipeline.py:src"}}
    short = load_pipeline_config({**base, "automation": "eager"}, "p/dagster.yaml")
    full = load_pipeline_config(
        {**base, "automation": {"condition": "eager", "on_code_change": False}}, "p/dagster.yaml"
    )
    assert (
        short["automation"] == full["automation"] == {"condition": "eager", "on_code_change": False}
    )


def test_stopped_pipelines_get_their_own_stopped_sensor(
    tmp_path: Path, examples: dict[str, PipelineSpec]
) -> None:
    github = examples["github_issues"]
    stopped = replace(
        examples["shop_events"], schedule=replace(github.schedule, default_status="STOPPED")
    )
    defs = build(tmp_path, github, stopped)
    assets = assets_of(defs)
    sensors = {s.name: s for s in defs.sensors}
    assert {n: s.default_status.value for n, s in sensors.items()} == {
        "elt_repo_automation": "RUNNING",
        "elt_repo_automation_stopped": "STOPPED",
    }
    stopped_keys = sensors["elt_repo_automation_stopped"].asset_selection.resolve(assets)
    assert {k.path[0] for k in stopped_keys} == {"shop_events"}
    assert sensors["elt_repo_automation"].minimum_interval_seconds == 30


def tick(defs: Definitions, instance: DagsterInstance, when: str) -> list:
    (schedule,) = defs.schedules
    context = build_schedule_context(
        instance, scheduled_execution_time=at(when), repository_def=defs.get_repository_def()
    )
    return list(schedule.evaluate_tick(context).run_requests or [])


def test_schedule_mode_requests_the_last_complete_day(
    tmp_path: Path, examples: dict[str, PipelineSpec], instance: DagsterInstance
) -> None:
    github = examples["github_issues"]
    scheduled = replace(github, schedule=replace(github.schedule, mode="schedule"))
    defs = build(tmp_path, scheduled)
    (schedule,) = defs.schedules
    assert (schedule.name, schedule.cron_schedule) == ("github_issues__schedule", "0 2 * * *")
    assert [s.name for s in defs.sensors] == []  # no on_cron condition, so no sensor
    assert all(spec.automation_condition is None for a in assets_of(defs) for spec in a.specs)
    (request,) = tick(defs, instance, "2024-02-10T02:00")
    assert request.partition_key == "2024-02-09"


def test_schedule_mode_runs_every_static_key(
    tmp_path: Path, examples: dict[str, PipelineSpec], instance: DagsterInstance
) -> None:
    sales = examples["store_sales"]
    scheduled = replace(sales, automation=None, schedule=replace(sales.schedule, mode="schedule"))
    apply_partition_requests(
        instance, dynamic_partition_requests(build_manifest(scheduled), instance)
    )
    requests = tick(build(tmp_path, scheduled), instance, "2024-02-10T04:00")
    assert sorted(r.partition_key for r in requests) == ["eu-central", "us-east", "us-west"]
    assert len({r.run_key for r in requests}) == 3


def test_schedule_mode_without_partitions_runs_once(
    tmp_path: Path, examples: dict[str, PipelineSpec], instance: DagsterInstance
) -> None:
    defs = build(tmp_path, examples["csv_orders"])  # mode: schedule in its dagster.yaml
    (request,) = tick(defs, instance, "2024-02-10T03:00")
    assert request.partition_key is None and request.run_key == "2024-02-10T03:00:00+00:00"


def test_backfill_policies(tmp_path: Path, examples: dict[str, PipelineSpec]) -> None:
    github = examples["github_issues"]
    capped = replace(github, partitions=replace(github.partitions, max_partitions_per_run=7))
    policies = {}
    for label, spec in {
        "time": github,
        "capped": replace(capped, name="capped"),
        "static": examples["store_sales"],
        "none": examples["csv_orders"],
    }.items():
        (assets_def,) = assets_of(build(tmp_path, spec))
        policy = assets_def.backfill_policy
        policies[label] = policy and (policy.policy_type.value, policy.max_partitions_per_run)
    assert policies == {
        "time": ("SINGLE_RUN", None),
        "capped": ("MULTI_RUN", 7),
        "static": ("MULTI_RUN", 1),
        "none": None,
    }


def test_a_dlt_pipeline_outside_duckdb_gets_its_own_pool(
    tmp_path: Path, examples: dict[str, PipelineSpec]
) -> None:
    github = examples["github_issues"]
    pg = replace(github, name="gh_pg", dlt=replace(github.dlt, destination="postgres"))
    pools = {a.op.name: a.op.pool for a in assets_of(build(tmp_path, github, pg))}
    assert pools["gh_pg__dlt"] == "dlt_gh_pg"
    assert pools["github_issues__dlt"].startswith("duckdb_warehouse_")


@pytest.mark.parametrize(
    ("cron", "fmt", "first_keys", "count"),
    [
        ("0 * * * *", "%Y-%m-%d-%H:%M", ["2024-01-01-00:00", "2024-01-01-01:00"], 91 * 24),
        ("0 0 * * *", "%Y-%m-%d", ["2024-01-01", "2024-01-02"], 91),
        ("0 0 * * 1", "%Y-%m-%d", ["2024-01-01", "2024-01-08"], 13),
        ("0 0 1 * *", "%Y-%m", ["2024-01", "2024-02"], 3),
    ],
)
def test_hourly_daily_weekly_and_monthly_windows(
    tmp_path: Path,
    examples: dict[str, PipelineSpec],
    cron: str,
    fmt: str,
    first_keys: list[str],
    count: int,
) -> None:
    """github_issues runs 2024-01-01 to 2024-04-01; `start` stays ISO whatever the fmt."""
    github = examples["github_issues"]
    time = replace(github.partitions.time, start="2024-01-01", cron_schedule=cron, fmt=fmt)
    spec = replace(github, partitions=replace(github.partitions, time=time))
    config = {
        "partitions": {
            "type": "time",
            "time": {"start": "2024-01-01", "cron_schedule": cron, "fmt": fmt},
        }
    }
    load_pipeline_config({**config, "dlt": {"source": "p.py:f"}}, "p/dagster.yaml")  # valid
    (assets_def,) = assets_of(build(tmp_path, spec))
    keys = assets_def.partitions_def.get_partition_keys()
    assert (keys[:2], len(keys)) == (first_keys, count)


# --- dynamic partitions: the one diff that refresh.py, the demo and the sensor all apply ----------


def build_manifest(*pipelines: PipelineSpec) -> Manifest:
    return Manifest(
        commit="c" * 40,
        branch="main",
        url="file:///x",
        pipelines_dir="pipelines",
        discovered_at="t",
        pipelines=pipelines,
    )


def with_keys(spec: PipelineSpec, *keys: str) -> PipelineSpec:
    return replace(spec, partitions=PartitionSpec(type="static", static=StaticPartitionSpec(keys)))


def test_dynamic_partition_diff_adds_removes_and_keeps(examples: dict[str, PipelineSpec]) -> None:
    sales = examples["store_sales"]
    with DagsterInstance.ephemeral() as instance:
        first = dynamic_partition_requests(build_manifest(with_keys(sales, "a", "b")), instance)
        assert [(type(r).__name__, list(r.partition_keys)) for r in first] == [
            ("AddDynamicPartitionsRequest", ["a", "b"])
        ]
        apply_partition_requests(instance, first)
        changed = dynamic_partition_requests(build_manifest(with_keys(sales, "b", "c")), instance)
        assert [(type(r).__name__, list(r.partition_keys)) for r in changed] == [
            ("AddDynamicPartitionsRequest", ["c"]),
            ("DeleteDynamicPartitionsRequest", ["a"]),
        ]
        apply_partition_requests(instance, changed)
        assert sorted(instance.get_dynamic_partitions("store_sales__keys")) == ["b", "c"]
        unchanged = dynamic_partition_requests(build_manifest(with_keys(sales, "b", "c")), instance)
        assert unchanged == []
        retired = dynamic_partition_requests(
            build_manifest(), instance, previous=build_manifest(with_keys(sales, "b", "c"))
        )
        assert [(type(r).__name__, list(r.partition_keys)) for r in retired] == [
            ("DeleteDynamicPartitionsRequest", ["b", "c"])
        ]
