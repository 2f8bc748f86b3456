"""One metadata vocabulary for dlt and Sling materializations, checked against the sources."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime

import duckdb
import pytest
from dagster import AssetKey, AssetsDefinition, materialize

from elt_repo.cli.demo import QUIET
from elt_repo.defs.build import build_definitions
from elt_repo.defs.resources import build_resources
from elt_repo.defs.run_metadata import commit_url, redacted_config
from elt_repo.refresh import refresh
from elt_repo.settings import EXAMPLES_DIR

VOCABULARY = {
    "dagster/row_count",
    "elt/rows_loaded",
    "dagster/table_name",
    "dagster/column_schema",
    "elt/started_at",
    "elt/finished_at",
    "elt/duration_seconds",
    "elt/rows_per_second",
    "elt/commit",
    "elt/config",
}


def test_secrets_are_masked_in_the_effective_config() -> None:
    config = {
        "name": "p",
        "sling": {
            "connections": {
                "DB": {"type": "postgres", "password": "hunter22", "user": "loader"},
                "API": {"type": "http", "url": "https://bot:tok3n-value@api.example.com/v1"},
            }
        },
        "dlt": {"args": {"api_token": "abc", "limit": 5, "empty_secret": ""}},
    }
    assert redacted_config(config) == {
        "name": "p",
        "sling": {
            "connections": {
                "DB": {"type": "postgres", "password": "***", "user": "loader"},
                "API": {"type": "http", "url": "https://***@api.example.com/v1"},
            }
        },
        "dlt": {"args": {"api_token": "***", "limit": 5, "empty_secret": ""}},
    }


def test_commit_links_only_for_github() -> None:
    sha = "a" * 40
    assert commit_url("https://github.com/acme/pipes.git", sha) == (
        f"https://github.com/acme/pipes/commit/{sha}"
    )
    assert commit_url("file:///srv/pipes", sha) is None
    assert commit_url("https://github.com/acme/pipes", None) is None


@pytest.mark.slow
def test_dlt_and_sling_materializations_share_the_vocabulary(
    examples_repo, settings_for, instance
) -> None:
    settings = settings_for(examples_repo.url)
    manifest = refresh(settings).manifest
    ops = {
        a.op.name: a
        for a in build_definitions(manifest, settings).assets
        if isinstance(a, AssetsDefinition)
    }
    resources = build_resources(settings)
    for op, kwargs in (
        ("github_issues__dlt", {"partition_key": "2024-01-15"}),
        ("csv_orders__sling", {}),
    ):
        assert materialize(
            [ops[op]], instance=instance, resources=resources, run_config=QUIET, **kwargs
        ).success

    def meta(*path: str) -> dict:
        event = instance.get_latest_materialization_event(AssetKey(list(path)))
        return {k: v.value for k, v in event.asset_materialization.metadata.items()}

    issues, customers = meta("github_issues", "issues"), meta("csv_orders", "customers")
    for found in (issues, customers):
        assert set(found) >= VOCABULARY, VOCABULARY - set(found)
        assert found["elt/commit"] == manifest.commit
        assert (
            found["elt/finished_at"]
            >= found["elt/started_at"]
            > datetime(2026, 1, 1, tzinfo=UTC).timestamp()
        )
        assert found["elt/rows_per_second"] == pytest.approx(
            found["elt/rows_loaded"] / max(found["elt/duration_seconds"], 1e-6), rel=0.01, abs=0.1
        )

    day = [
        json.loads(line)
        for line in (EXAMPLES_DIR / "github_issues/data/issues.jsonl").read_text().splitlines()
        if line.strip() and json.loads(line)["created_at"].startswith("2024-01-15")
    ]
    assert issues["dagster/row_count"] == issues["elt/rows_loaded"] == len(day) > 0
    assert issues["elt/rows_by_table"] == {
        "issues": len(day),
        "issues__labels": sum(len(i["labels"]) for i in day),
    }
    assert issues["elt/bytes"] > 0 and issues["elt/partition"] == "2024-01-15"
    assert issues["elt/config"]["dlt"]["partition_args"] == {
        "start": "start_date",
        "end": "end_date",
    }
    with open(EXAMPLES_DIR / "csv_orders/data/customers.csv") as f:
        rows = sum(1 for _ in csv.DictReader(f))
    # Sling's own log says how many rows it inserted; the warehouse says how many the table has.
    assert customers["dagster/row_count"] == customers["elt/rows_loaded"] == rows > 0
    assert "elt/partition" not in customers

    # The table names name real tables: database (the warehouse file), schema, table.
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        for found in (issues, customers):
            table = found["dagster/table_name"]
            assert table.split(".")[0] == settings.warehouse.file.stem
            (rows,) = con.sql(f"select count(*) from {table}").fetchone()
            assert rows == found["dagster/row_count"]
            columns = {c.name for c in found["dagster/column_schema"].columns}
            assert columns and columns <= {r[0] for r in con.sql(f"describe {table}").fetchall()}
    assert issues["dagster/table_name"] == "warehouse.github.issues"
    assert customers["dagster/table_name"] == "warehouse.csv_orders.customers"
