"""Pipelines repos written for the reference component-based project run unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest
from dagster import AssetKey, AssetsDefinition, Backoff, Definitions, Jitter, materialize
from dagster._core.definitions.metadata import (
    FloatMetadataValue,
    IntMetadataValue,
    JsonMetadataValue,
    MarkdownMetadataValue,
    PathMetadataValue,
    TextMetadataValue,
    UrlMetadataValue,
)

from elt_repo.defs.build import build_definitions
from elt_repo.defs.resources import build_resources
from elt_repo.refresh import refresh
from tests.conftest import PipelinesRepo

FIXTURE = Path(__file__).parent / "fixtures" / "reference_repo"


@pytest.fixture
def reference_repo(repo: PipelinesRepo) -> PipelinesRepo:
    shutil.copytree(FIXTURE, repo.path, dirs_exist_ok=True)
    repo.commit("reference layout")
    return repo


@pytest.fixture
def loaded(reference_repo: PipelinesRepo, settings_for, monkeypatch: pytest.MonkeyPatch):
    settings = settings_for(reference_repo.url)
    # Reference repos name their Sling connections in the environment, as Sling itself reads them.
    monkeypatch.setenv("DUCKDB_TARGET", f"duckdb://{settings.warehouse}")
    manifest = refresh(settings).manifest
    defs = build_definitions(manifest, settings)
    return settings, manifest, defs


def assets_by_op(defs: Definitions) -> dict[str, AssetsDefinition]:
    return {a.op.name: a for a in defs.assets if isinstance(a, AssetsDefinition)}


def rows(warehouse: Path, table: str) -> int:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.sql(f"select count(*) from {table}").fetchone()[0]


def events_on(*days: str) -> int:
    lines = (FIXTURE / "pipelines/dlt/daily_events/events.jsonl").read_text().splitlines()
    return sum(1 for line in lines if json.loads(line)["ts"][:10] in days)


def test_discovery(loaded) -> None:
    _, manifest, _ = loaded
    assert manifest.errors == ()
    by_name = {p.name: p for p in manifest.pipelines}
    assert sorted(by_name) == ["customers", "daily_events", "jokes", "products"]
    events, jokes = by_name["daily_events"], by_name["jokes"]
    assert (events.tool, events.dlt.style, events.dlt.accepts_partition_key) == ("dlt", "run", True)
    assert (jokes.tool, jokes.dlt.style, jokes.dlt.accepts_partition_key) == ("dlt", "run", False)
    # No dagster.yaml: every default.
    assert (jokes.group, jokes.owners, jokes.partitions, jokes.schedule, jokes.retry) == (
        None,
        (),
        None,
        None,
        None,
    )
    assert by_name["customers"].tool == by_name["products"].tool == "sling"


def test_assets_and_extra_fields(loaded) -> None:
    _, _, defs = loaded
    ops = assets_by_op(defs)
    assert {k for a in ops.values() for k in a.keys} == {
        AssetKey(["daily_events"]),
        AssetKey(["jokes"]),
        AssetKey(["customers", "customers"]),
        AssetKey(["products", "products"]),
    }
    events = ops["daily_events__dlt"].specs_by_key[AssetKey(["daily_events"])]
    assert {"dlt", "duckdb", "events"} == set(events.kinds)
    assert events.automation_condition.get_label() == "on_cron(0 6 * * *, America/New_York)"
    graph = list(ops.values())
    covered = {
        s.name: (s.default_status.value, s.asset_selection.resolve(graph)) for s in defs.sensors
    }
    assert covered["elt_repo_automation_stopped"] == ("STOPPED", {AssetKey(["daily_events"])})
    assert covered["elt_repo_automation"][0] == "RUNNING"
    assert AssetKey(["customers", "customers"]) in covered["elt_repo_automation"][1]

    customers = ops["customers__sling"]
    retry = customers.op.retry_policy
    assert (retry.max_retries, retry.delay, retry.backoff, retry.jitter) == (
        4,
        15,
        Backoff.LINEAR,
        Jitter.FULL,
    )
    meta = customers.specs_by_key[AssetKey(["customers", "customers"])].metadata
    expected = {
        "runbook": (UrlMetadataValue, "https://wiki.example.com/crm/customers"),
        "notes": (MarkdownMetadataValue, "Loaded **nightly**"),
        "owner_team": (TextMetadataValue, "crm"),
        "sla_hours": (IntMetadataValue, 24),
        "freshness_target": (FloatMetadataValue, 0.99),
        "contract": (JsonMetadataValue, {"version": 2, "pii": True}),
        "source_path": (PathMetadataValue, "/mnt/drop/customers.csv"),
    }
    for key, (cls, value) in expected.items():
        assert isinstance(meta[key], cls) and meta[key].value == value, key
    assert "csv" in customers.specs_by_key[AssetKey(["customers", "customers"])].kinds
    products = ops["products__sling"].op.retry_policy
    assert (products.max_retries, products.backoff, products.jitter) == (
        1,
        Backoff.EXPONENTIAL,
        Jitter.PLUS_MINUS,
    )


@pytest.mark.slow
def test_everything_materializes(loaded, instance) -> None:
    settings, _, defs = loaded
    resources = build_resources(settings)
    ops = assets_by_op(defs)
    for day in ("2024-01-02", "2024-01-05"):
        assert materialize(
            [ops["daily_events__dlt"]], instance=instance, resources=resources, partition_key=day
        ).success
    for op in ("jokes__dlt", "customers__sling", "products__sling"):
        assert materialize([ops[op]], instance=instance, resources=resources).success, op

    warehouse = settings.warehouse
    assert rows(warehouse, "events_data.events") == events_on("2024-01-02", "2024-01-05") > 0
    assert rows(warehouse, "jokes_data.jokes") == 3
    assert (
        rows(warehouse, "crm.customers")
        == len((FIXTURE / "pipelines/sling/customers/customers.csv").read_text().splitlines()) - 1
    )
    assert (
        rows(warehouse, "catalog.products")
        == len((FIXTURE / "pipelines/sling/products/products.csv").read_text().splitlines()) - 1
    )

    event = instance.get_latest_materialization_event(
        AssetKey(["daily_events"])
    ).asset_materialization
    meta = {k: v.value for k, v in event.metadata.items()}
    assert event.partition == "2024-01-05"
    assert meta["elt/rows_loaded"] == events_on("2024-01-05")
    assert meta["elt/rows_by_table"] == {"events": events_on("2024-01-05")}
    # The asset is the whole run(), not a table: no table's rows are its row count.
    assert "dagster/row_count" not in meta
    assert (meta["destination_name"], meta["destination_type"], meta["dataset_name"]) == (
        "duckdb",
        "dlt.destinations.duckdb",
        "events_data",
    )
    assert meta["started_at"] and meta["finished_at"] and meta["elt/duration_seconds"] > 0
    assert meta["elt/partition"] == "2024-01-05"


def _one_run_pipeline(repo: PipelinesRepo, settings_for, body: str):
    repo.write("pipelines/dlt/odd/pipeline.py", body)
    repo.commit("odd")
    settings = settings_for(repo.url)
    manifest = refresh(settings).manifest
    return settings, manifest, assets_by_op(build_definitions(manifest, settings))


def run_odd(ops: dict[str, AssetsDefinition], settings, instance):
    """Materialize the one-off `odd` pipeline, keeping a failure as a result to inspect."""
    resources = build_resources(settings)
    return materialize(
        [ops["odd__dlt"]], instance=instance, resources=resources, raise_on_error=False
    )


def test_run_returning_something_else_still_succeeds(
    repo: PipelinesRepo, settings_for, instance
) -> None:
    settings, _, ops = _one_run_pipeline(
        repo, settings_for, "def run(partition_key=None):\n    return {'rows': 3}\n"
    )
    assert materialize(
        [ops["odd__dlt"]], instance=instance, resources=build_resources(settings)
    ).success
    meta = instance.get_latest_materialization_event(
        AssetKey(["odd"])
    ).asset_materialization.metadata
    assert (
        meta["elt/return_type"].value == "dict" and meta["elt/return_value"].value == "{'rows': 3}"
    )


def test_run_that_raises_fails_the_asset(repo: PipelinesRepo, settings_for, instance) -> None:
    settings, _, ops = _one_run_pipeline(
        repo, settings_for, "def run():\n    raise RuntimeError('source is down')\n"
    )
    result = run_odd(ops, settings, instance)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    meta = {k: v.value for k, v in failure.user_failure_data.metadata.items()}
    assert meta["elt/error_type"] == "RuntimeError" and meta["elt/error"] == "source is down"
    assert "RuntimeError: source is down" in meta["elt/traceback"]
    assert failure.error.cause is None  # the raw exception is not chained: it may hold secrets


@pytest.mark.slow
def test_failed_load_jobs_fail_the_asset(
    repo: PipelinesRepo, settings_for, instance, monkeypatch
) -> None:
    body = (
        "import dlt\n"
        "def run():\n"
        "    p = dlt.pipeline(pipeline_name='strict', destination='duckdb', dataset_name='strict_data')\n"
        "    return p.run([{'id': 1}], table_name='items')\n"
    )
    settings, _, ops = _one_run_pipeline(repo, settings_for, body)
    settings.warehouse.file.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(settings.warehouse)) as con:  # a destination table that rejects the row
        con.execute(
            "create schema strict_data; create table strict_data.items (id bigint check (id > 100), _dlt_load_id varchar not null, _dlt_id varchar not null)"
        )
    monkeypatch.setenv("LOAD__RAISE_ON_FAILED_JOBS", "false")  # dlt returns the failure in LoadInfo
    result = run_odd(ops, settings, instance)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    assert "failed job(s) for items" in failure.user_failure_data.description


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("run = 42\n", "run is not callable (it is a int)"),
        ("def run(start_date, partition_key=None):\n    pass\n", "requires start_date"),
        (
            "import not_installed_anywhere\ndef run():\n    pass\n",
            "No module named 'not_installed_anywhere'",
        ),
    ],
)
def test_bad_run_is_an_error_naming_file_and_field(
    repo: PipelinesRepo, settings_for, body: str, message: str
) -> None:
    repo.write(
        "pipelines/sling/fine/replication.yaml",
        "source: LOCAL\ntarget: T\nstreams: {file://./a.csv: {object: raw.a}}\n",
    )
    _, manifest, ops = _one_run_pipeline(repo, settings_for, body)
    (error,) = manifest.errors
    assert (error.path, error.field) == ("pipelines/dlt/odd/pipeline.py", "run")
    assert message in error.message
    assert list(ops) == ["fine__sling"]


def test_unparseable_dagster_yaml_is_an_error_not_defaults(
    reference_repo: PipelinesRepo, settings_for
) -> None:
    reference_repo.write("pipelines/dlt/jokes/dagster.yaml", "group: [fun\n")
    reference_repo.commit("typo")
    manifest = refresh(settings_for(reference_repo.url)).manifest
    (error,) = manifest.errors
    assert (error.path, error.field) == ("pipelines/dlt/jokes/dagster.yaml", "<root>")
    assert "invalid YAML" in error.message
    assert "jokes" not in {p.name for p in manifest.pipelines}


def test_files_and_parent_folder_must_agree(repo: PipelinesRepo, settings_for) -> None:
    repo.write("pipelines/sling/mixed/pipeline.py", "def run():\n    pass\n")
    repo.commit()
    (error,) = refresh(settings_for(repo.url)).manifest.errors
    assert (error.path, error.field) == ("pipelines/sling/mixed/dagster.yaml", "tool")
    assert "the files say dlt but the folder is under sling/" in error.message
