"""Every example asset, materialized for real into a temp DuckDB, row counts checked at the source."""

from __future__ import annotations

import csv
import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from dagster import AssetKey, Definitions

from elt_repo.cli.demo import materialize_all, table_counts
from elt_repo.defs.build import build_definitions
from elt_repo.defs.resources import build_resources
from elt_repo.discovery.dlt_inspect import import_pipeline_module
from elt_repo.refresh import refresh
from elt_repo.settings import EXAMPLES_DIR

pytestmark = pytest.mark.slow


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def store_sales():
    """The store_sales example module, whose generator is the source of its rows."""
    return import_pipeline_module(EXAMPLES_DIR / "store_sales", "pipeline.py", "test_example")


def expected_counts() -> dict[tuple[str, str], int]:
    """Row counts computed from the example source files themselves."""
    gh = EXAMPLES_DIR / "github_issues" / "data"
    issues = jsonl(gh / "issues.jsonl")
    shop = sqlite3.connect(EXAMPLES_DIR / "shop_sqlite" / "shop.sqlite")
    events = sqlite3.connect(EXAMPLES_DIR / "shop_events" / "events.sqlite")
    sales = store_sales()

    def csv_rows(name: str) -> int:
        with open(EXAMPLES_DIR / "csv_orders" / "data" / name) as f:
            return sum(1 for _ in csv.DictReader(f))

    return {
        ("github", "issues"): len(issues),
        ("github", "issues__labels"): sum(len(i["labels"]) for i in issues),
        ("github", "comments"): len(jsonl(gh / "comments.jsonl")),
        ("sales", "daily_sales"): sum(len(list(sales.sales_rows(r, 30))) for r in sales.REGIONS),
        ("sales", "stores"): sum(len(v) for v in sales.STORES.values()),
        ("csv_orders", "customers"): csv_rows("customers.csv"),
        ("csv_orders", "orders"): csv_rows("orders.csv"),
        ("shop_sqlite", "products"): shop.execute("select count(*) from products").fetchone()[0],
        ("shop_sqlite", "inventory"): shop.execute("select count(*) from inventory").fetchone()[0],
        ("shop_events", "events"): events.execute("select count(*) from events").fetchone()[0],
    }


def test_every_example_asset_materializes(examples_repo, settings_for, instance) -> None:
    settings = settings_for(examples_repo.url)
    manifest = refresh(settings).manifest
    defs = Definitions.merge(
        build_definitions(manifest, settings), Definitions(resources=build_resources(settings))
    )
    outcomes = materialize_all(defs, manifest, instance)
    assert [(o.op, o.partition, o.success) for o in outcomes] == [
        ("csv_orders__sling", None, True),
        ("github_issues__dlt", "2024-01-01..2024-03-31", True),
        ("shop_events__sling", "2024-01-01..2024-03-31", True),
        ("shop_sqlite__sling", None, True),
        ("store_sales__dlt", "us-east", True),
        ("store_sales__dlt", "us-west", True),
        ("store_sales__dlt", "eu-central", True),
    ]
    counts = {(s, t): n for s, t, n in table_counts(str(settings.warehouse))}
    expected = expected_counts()
    assert counts == expected
    assert all(n > 0 for n in expected.values())

    # Materialization metadata says what was loaded, and from which commit.
    orders = instance.get_latest_materialization_event(
        AssetKey(["csv_orders", "orders"])
    ).asset_materialization
    assert orders.metadata["dagster/row_count"].value == expected[("csv_orders", "orders")]
    assert orders.metadata["elt/commit"].value == manifest.commit
    daily = instance.get_latest_materialization_event(
        AssetKey(["store_sales", "daily_sales"])
    ).asset_materialization
    assert daily.partition == "eu-central"
    region_rows = len(list(store_sales().sales_rows("eu-central", 30)))
    # The rows this run loaded, the rows of its partition (by partitions.column: region) and
    # the whole table, each under its own key.
    assert daily.metadata["elt/rows_loaded"].value == region_rows
    assert daily.metadata["dagster/row_count"].value == region_rows
    assert daily.metadata["elt/table_rows"].value == expected[("sales", "daily_sales")]
    assert region_rows < expected[("sales", "daily_sales")]

    # A single-run backfill of 91 days records each day with its own count, not the range's.
    events = sqlite3.connect(EXAMPLES_DIR / "shop_events" / "events.sqlite")
    per_day = dict(
        events.execute("select substr(event_ts, 1, 10), count(*) from events group by 1")
    )
    issues = jsonl(EXAMPLES_DIR / "github_issues/data/issues.jsonl")
    issues_per_day = Counter(i["created_at"][:10] for i in issues)
    for key, by_day in (
        (AssetKey(["shop_events", "events"]), per_day),
        (AssetKey(["github_issues", "issues"]), issues_per_day),
    ):
        recorded = partition_row_counts(instance, key)
        assert len(recorded) == 91, key
        assert {d: n for d, n in recorded.items() if n} == by_day, key
        assert (
            sum(recorded.values())
            == expected[
                ("shop_events", "events") if key.path[0] == "shop_events" else ("github", "issues")
            ]
        )


def partition_row_counts(instance, key: AssetKey) -> dict[str, int]:
    """Partition -> the dagster/row_count of its latest materialization."""
    from dagster import AssetRecordsFilter

    records = instance.fetch_materializations(AssetRecordsFilter(asset_key=key), limit=1000).records
    counts: dict[str, int] = {}
    for record in records:  # newest first
        event = record.asset_materialization
        if event.partition not in counts:
            counts[event.partition] = event.metadata["dagster/row_count"].value
    return counts


def test_one_time_partition_loads_only_its_window(examples_repo, settings_for, instance) -> None:
    from dagster import materialize

    settings = settings_for(examples_repo.url)
    manifest = refresh(settings).manifest
    defs = build_definitions(manifest, settings)
    (github,) = [
        a for a in defs.assets if getattr(a, "op", None) and a.op.name == "github_issues__dlt"
    ]
    result = materialize(
        [github], instance=instance, resources=build_resources(settings), partition_key="2024-01-15"
    )
    assert result.success
    day = [
        i
        for i in jsonl(EXAMPLES_DIR / "github_issues/data/issues.jsonl")
        if i["created_at"].startswith("2024-01-15")
    ]
    counts = {(s, t): n for s, t, n in table_counts(str(settings.warehouse))}
    assert counts[("github", "issues")] == len(day) > 0
