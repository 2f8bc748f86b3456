"""Partitioned runs for real: dlt and Sling, time and static keys, reruns, backfills, retries.

Every run goes through a real Dagster instance into a real DuckDB file, and every count is
checked against the pipeline's own source data.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest
from dagster import AssetsDefinition, DagsterEventType, DagsterInstance, materialize

from elt_repo.cli.demo import RANGE_END, RANGE_START
from elt_repo.defs.build import build_definitions
from elt_repo.defs.resources import build_resources
from elt_repo.refresh import refresh
from elt_repo.settings import EXAMPLES_DIR, Settings
from tests.conftest import PipelinesRepo

pytestmark = pytest.mark.slow

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class Loader:
    """Refreshes a repo into a manifest and runs one pipeline's assets for given partitions."""

    def __init__(self, repo: PipelinesRepo, settings: Settings, instance: DagsterInstance):
        self.repo, self.settings, self.instance = repo, settings, instance
        self.reload()

    def reload(self) -> None:
        result = refresh(self.settings)
        assert result.error is None and result.manifest.errors == (), result
        from elt_repo.defs.partitions import apply_partition_requests, dynamic_partition_requests

        apply_partition_requests(
            self.instance, dynamic_partition_requests(result.manifest, self.instance)
        )
        defs = build_definitions(result.manifest, self.settings)
        self.ops = {a.op.name: a for a in defs.assets if isinstance(a, AssetsDefinition)}

    def run(self, op: str, key: str | None = None, *, first: str = "", last: str = ""):
        kwargs: dict = {"partition_key": key} if key else {}
        if first:
            kwargs["tags"] = {RANGE_START: first, RANGE_END: last}
        return materialize(
            [self.ops[op]],
            instance=self.instance,
            resources=build_resources(self.settings),
            raise_on_error=False,
            run_config=QUIET,
            **kwargs,
        )

    def query(self, sql: str) -> list[tuple]:
        with duckdb.connect(str(self.settings.warehouse), read_only=True) as con:
            return con.sql(sql).fetchall()

    def count(self, table: str) -> int:
        return self.query(f"select count(*) from {table}")[0][0]


@pytest.fixture
def loader(examples_repo: PipelinesRepo, settings_for, instance) -> Loader:
    return Loader(examples_repo, settings_for(examples_repo.url), instance)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def on_days(rows: Iterable[dict], *days: str) -> list[dict]:
    return [r for r in rows if r["created_at"][:10] in days]


ISSUES = jsonl(EXAMPLES_DIR / "github_issues/data/issues.jsonl")
COMMENTS = jsonl(EXAMPLES_DIR / "github_issues/data/comments.jsonl")


def github_state(loader: Loader) -> dict[str, object]:
    return {
        "issue_ids": sorted(r[0] for r in loader.query("select id from github.issues")),
        "comments": loader.count("github.comments"),
        "labels": loader.count("github.issues__labels"),
    }


def github_expected(*days: str) -> dict[str, object]:
    issues = on_days(ISSUES, *days)
    return {
        "issue_ids": sorted(i["id"] for i in issues),
        "comments": len(on_days(COMMENTS, *days)),
        "labels": sum(len(i["labels"]) for i in issues),
    }


def test_dlt_day_reruns_and_backfill_equal_the_source(loader: Loader) -> None:
    days = ("2024-01-10", "2024-01-11", "2024-01-12")
    assert len(github_expected(*days)["issue_ids"]) > 3
    backfill = loader.run("github_issues__dlt", first=days[0], last=days[-1])
    assert backfill.success
    materialized = [
        (e.asset_key.path[-1], e.event_specific_data.materialization.partition)
        for e in backfill.get_asset_materialization_events()
    ]
    # One run: every asset is materialized for every day of the range.
    assert sorted(materialized) == sorted(
        (table, day) for table in ("issues", "comments") for day in days
    )
    assert github_state(loader) == github_expected(*days)
    for day in days:  # each day again, on its own: nothing duplicated, nothing lost
        assert loader.run("github_issues__dlt", day).success
    assert loader.run("github_issues__dlt", days[1]).success
    assert github_state(loader) == github_expected(*days)


def test_dlt_rerun_drops_rows_deleted_upstream(loader: Loader) -> None:
    day = "2024-01-11"
    assert loader.run("github_issues__dlt", day).success
    before = github_expected(day)["issue_ids"]
    assert github_state(loader)["issue_ids"] == before
    gone = before[0]
    kept = [i for i in ISSUES if i["id"] != gone]
    loader.repo.write(
        "pipelines/github_issues/data/issues.jsonl", "".join(json.dumps(i) + "\n" for i in kept)
    )
    loader.repo.commit("issue deleted upstream")
    loader.reload()
    assert loader.run("github_issues__dlt", day).success
    assert github_state(loader)["issue_ids"] == before[1:]


def events_between(start: str, end: str) -> int:
    with sqlite3.connect(EXAMPLES_DIR / "shop_events/events.sqlite") as con:
        return con.execute(
            "select count(*) from events where event_ts >= ? and event_ts < ?", (start, end)
        ).fetchone()[0]


def test_sling_day_reruns_and_backfill_equal_the_source(loader: Loader) -> None:
    assert loader.run("shop_events__sling", "2024-02-01").success
    assert loader.run("shop_events__sling", "2024-02-01").success
    assert loader.count("shop_events.events") == events_between("2024-02-01", "2024-02-02") > 0
    backfill = loader.run("shop_events__sling", first="2024-02-01", last="2024-02-03")
    assert backfill.success
    assert loader.count("shop_events.events") == events_between("2024-02-01", "2024-02-04")
    assert loader.run("shop_events__sling", "2024-02-02").success
    assert loader.count("shop_events.events") == events_between("2024-02-01", "2024-02-04")
    (lo, hi) = loader.query("select min(event_ts), max(event_ts) from shop_events.events")[0]
    assert str(lo) >= "2024-02-01" and str(hi) < "2024-02-04"


def test_dlt_static_key_reruns_are_idempotent(loader: Loader) -> None:
    from elt_repo.discovery.dlt_inspect import import_pipeline_module

    sales = import_pipeline_module(EXAMPLES_DIR / "store_sales", "pipeline.py", "test_sales")
    for _ in range(2):
        assert loader.run("store_sales__dlt", "us-west").success
    assert loader.count("sales.daily_sales") == len(list(sales.sales_rows("us-west", 30))) > 0
    assert loader.query("select distinct region from sales.daily_sales") == [("us-west",)]


REGION_REPLICATION = """
source: ORDERS_DB
target: WAREHOUSE
streams:
  main.orders:
    object: regional.orders
    mode: incremental
    primary_key: [order_id]
    sql: "select * from orders where region = '{partition_key}'"
"""


def test_sling_static_key_reruns_are_idempotent(
    repo: PipelinesRepo, settings_for, instance
) -> None:
    folder = repo.folder("regional_orders")
    folder.mkdir(parents=True)
    with sqlite3.connect(folder / "orders.sqlite") as con:
        con.execute("create table orders (order_id integer primary key, region text, amount real)")
        regions = ["north"] * 7 + ["south"] * 4 + ["west"] * 2
        con.executemany(
            "insert into orders values (?, ?, ?)",
            [(i, r, i * 1.5) for i, r in enumerate(regions, 1)],
        )
    repo.write("pipelines/regional_orders/replication.yaml", REGION_REPLICATION)
    repo.write(
        "pipelines/regional_orders/dagster.yaml",
        {
            "tool": "sling",
            "partitions": {"type": "static", "static": {"partition_keys": ["north", "south"]}},
            "sling": {
                "connections": {"ORDERS_DB": {"type": "sqlite", "instance": "./orders.sqlite"}}
            },
        },
    )
    repo.commit("regional orders")
    loader = Loader(repo, settings_for(repo.url), instance)
    assert instance.get_dynamic_partitions("regional_orders__keys") == ["north", "south"]
    for key in ("north", "north", "south", "north"):
        assert loader.run("regional_orders__sling", key).success
    counts = loader.query("select region, count(*) from regional.orders group by 1 order by 1")
    assert counts == [("north", 7), ("south", 4)]


# --- partition values reaching a dlt source, and retries --------------------------------------

WINDOW_SOURCE = """
import dlt

@dlt.source
def window(start_date=None, end_date=None, region=None):
    @dlt.resource(write_disposition="append")
    def calls():
        yield {
            "start": start_date.isoformat() if start_date else None,
            "end": end_date.isoformat() if end_date else None,
            "tz": str(start_date.tzinfo) if start_date else None,
        }
    return calls
"""


def test_dlt_gets_aware_window_bounds_and_the_whole_range_in_a_backfill(
    repo: PipelinesRepo, settings_for, instance
) -> None:
    repo.write("pipelines/window/pipeline.py", WINDOW_SOURCE)
    repo.write(
        "pipelines/window/dagster.yaml",
        {
            "partitions": {
                "type": "time",
                "time": {"start": "2024-03-01", "timezone": "Europe/Berlin"},
            },
            "dlt": {
                "source": "pipeline.py:window",
                "dataset_name": "window_calls",
                "partition_args": {"start": "start_date", "end": "end_date"},
            },
        },
    )
    repo.commit("window")
    loader = Loader(repo, settings_for(repo.url), instance)
    assert loader.run("window__dlt", "2024-03-05").success
    assert loader.run("window__dlt", first="2024-03-10", last="2024-03-12").success
    berlin = ZoneInfo("Europe/Berlin")
    assert loader.query('select start, "end", tz from window_calls.calls order by start') == [
        (datetime(2024, 3, 5, tzinfo=berlin), datetime(2024, 3, 6, tzinfo=berlin), "Europe/Berlin"),
        (
            datetime(2024, 3, 10, tzinfo=berlin),
            datetime(2024, 3, 13, tzinfo=berlin),
            "Europe/Berlin",
        ),
    ]


FLAKY_SOURCE = """
import os
from pathlib import Path

import dlt

@dlt.source
def flaky(counter: str, failures: int):
    @dlt.resource(write_disposition="replace")
    def attempts():
        path = Path(counter)
        n = int(path.read_text()) + 1 if path.exists() else 1
        path.write_text(str(n))
        if n <= failures:
            password = os.environ.get("FLAKY_DB_PASSWORD", "")
            raise ConnectionError(
                f"upstream unavailable (call {n}) at postgres://loader:{password}@db:5432/shop"
            )
        yield {"succeeded_on_call": n}
    return attempts
"""


def flaky_repo(repo: PipelinesRepo, tmp_path: Path, failures: int) -> Path:
    counter = tmp_path / "calls.txt"
    repo.write("pipelines/flaky/pipeline.py", FLAKY_SOURCE)
    repo.write(
        "pipelines/flaky/dagster.yaml",
        {
            "retries": 2,
            "retry_delay": 0.2,
            "dlt": {
                "source": "pipeline.py:flaky",
                "args": {"counter": str(counter), "failures": failures},
                "dataset_name": "flaky_data",
            },
        },
    )
    repo.commit("flaky")
    return counter


def retries_in(result) -> int:
    return sum(1 for e in result.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY)


def test_a_pipeline_that_fails_twice_is_materialized_by_its_retries(
    repo: PipelinesRepo, settings_for, instance, tmp_path: Path
) -> None:
    counter = flaky_repo(repo, tmp_path, failures=2)
    loader = Loader(repo, settings_for(repo.url), instance)
    counter.unlink(missing_ok=True)  # discovery lists resources without calling them
    result = loader.run("flaky__dlt")
    assert result.success and retries_in(result) == 2
    assert loader.query("select succeeded_on_call from flaky_data.attempts") == [(3,)]


def test_a_pipeline_that_always_fails_stops_after_its_retries_with_the_error(
    repo: PipelinesRepo, settings_for, instance, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("FLAKY_DB_PASSWORD", "pw-0f-the-loader")
    counter = flaky_repo(repo, tmp_path, failures=99)
    loader = Loader(repo, settings_for(repo.url), instance)
    counter.unlink(missing_ok=True)
    result = loader.run("flaky__dlt")
    assert not result.success and retries_in(result) == 2
    assert counter.read_text() == "3"
    (failure,) = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    data = failure.step_failure_data.user_failure_data
    meta = {k: v.value for k, v in data.metadata.items()}
    assert (meta["elt/attempt"], meta["elt/max_attempts"], meta["elt/pipeline"]) == (3, 3, "flaky")
    assert "upstream unavailable (call 3) at postgres://***@db:5432/shop" in meta["elt/error"]
    assert "flaky failed on attempt 3 of 3" in data.description
    # dlt wraps the cause ("... failed at `step=extract` with exception:"); it is shown too
    assert "upstream unavailable (call 3)" in data.description, data.description
    assert "pw-0f-the-loader" not in data.description + meta["elt/error"] + meta["elt/log_tail"]
    assert "upstream unavailable (call 3)" in meta["elt/log_tail"]  # the tool's last log lines


def test_a_warehouse_loaded_before_created_day_existed_still_loads(loader: Loader) -> None:
    """Upgrading the example: DuckDB cannot add a NOT NULL column to an existing table."""
    path = "pipelines/github_issues/pipeline.py"
    current = (EXAMPLES_DIR / "github_issues" / "pipeline.py").read_text()
    old = (
        current.replace('yield {**row, "created_day": created_at.date()}', "yield row")
        .replace('merge_key="created_day",', "")
        .replace('"created_day": {"data_type": "date", "nullable": True},', "")
        .replace('columns={"created_day": {"data_type": "date", "nullable": True}},', "")
    )
    assert "created_day" not in old.replace("`created_day`", "").split('"""', 2)[2]
    loader.repo.write(path, old)
    loader.repo.commit("the example before created_day")
    loader.reload()
    assert loader.run("github_issues__dlt", "2024-01-10").success
    loader.repo.write(path, current)
    loader.repo.commit("the example with created_day")
    loader.reload()
    assert loader.run("github_issues__dlt", "2024-01-11").success
    days = loader.query("select distinct created_day from github.issues order by 1")
    assert {str(d) for (d,) in days} == {"None", "2024-01-11"}  # old rows keep a null day
