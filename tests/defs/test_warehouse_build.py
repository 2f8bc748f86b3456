"""What a Postgres warehouse changes in the definitions: kinds, pools, the Sling connection, the
DuckDB-only checks; built without any server, as the code location builds them."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from dagster import AssetsDefinition, AssetSpec, Definitions

from elt_repo.defs.assets import duckdb_pool
from elt_repo.defs.build import build_definitions
from elt_repo.defs.health import MANIFEST_KEY
from elt_repo.defs.pools import sync_pools
from elt_repo.discovery.sling_streams import WAREHOUSE, connection_configs, filled_connection
from elt_repo.discovery.walk import discover
from elt_repo.manifest import Manifest
from elt_repo.refresh import shared_connections
from elt_repo.settings import EXAMPLES_DIR, Settings
from tests.conftest import make_settings

COMMIT = "feed" + "0" * 36
PG = "postgresql://loader:${PG_PASSWORD}@127.0.0.1:5432/warehouse"
POOLS = {
    "csv_orders__sling": "sling_csv_orders",
    "github_issues__dlt": "dlt_github_issues",
    "shop_events__sling": "sling_shop_events",
    "shop_sqlite__sling": "sling_shop_sqlite",
    "store_sales__dlt": "dlt_store_sales",
}


def manifest_for(tmp_path: Path, settings: Settings) -> Manifest:
    checkout = tmp_path / "checkout"
    if not checkout.exists():
        shutil.copytree(EXAMPLES_DIR, checkout / "pipelines")
    found = discover(
        checkout, "pipelines", dict(os.environ), connections=shared_connections(settings)
    )
    return Manifest(
        commit=COMMIT,
        branch="main",
        url="file:///srv/pipelines",
        pipelines_dir="pipelines",
        discovered_at="t",
        pipelines=found.pipelines,
        disabled=found.disabled,
        errors=found.errors,
    )


@pytest.fixture
def pg_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, "x", ELT_WAREHOUSE=PG)


def assets(defs: Definitions) -> list[AssetsDefinition]:
    return [a for a in defs.assets or [] if isinstance(a, AssetsDefinition)]


def test_every_asset_of_a_postgres_warehouse_is_of_kind_postgres(
    tmp_path: Path, pg_settings: Settings
) -> None:
    defs = build_definitions(manifest_for(tmp_path, pg_settings), pg_settings)
    kinds = {spec.key.to_user_string(): spec.kinds for a in assets(defs) for spec in a.specs}
    assert len(kinds) == 9
    for key, of in kinds.items():
        assert "postgres" in of and "duckdb" not in of, key


def test_a_postgres_warehouse_has_no_duckdb_pool_but_one_pool_per_pipeline(
    tmp_path: Path, pg_settings: Settings, instance
) -> None:
    manifest = manifest_for(tmp_path, pg_settings)
    defs = build_definitions(manifest, pg_settings)
    assert {a.op.name: a.op.pool for a in assets(defs)} == POOLS
    # The sensor (and refresh.py --sync-partitions) creates them before any run claims one.
    assert sync_pools(instance, manifest, pg_settings) == sorted(POOLS.values())
    storage = instance.event_log_storage
    assert sorted(storage.get_concurrency_keys()) == sorted(POOLS.values())
    assert {storage.get_concurrency_info(p).slot_count for p in POOLS.values()} == {1}
    # The same examples into DuckDB: one pool, the file's.
    duck = make_settings(tmp_path, "x")
    pools = {a.op.pool for a in assets(build_definitions(manifest_for(tmp_path, duck), duck))}
    assert pools == {duckdb_pool(duck.warehouse.file)}


def test_a_dataset_named_like_the_database_is_no_error_in_postgres(
    tmp_path: Path, pg_settings: Settings
) -> None:
    # DuckDB cannot tell a dataset named like its file from the file's catalog; Postgres can.
    manifest = manifest_for(tmp_path, pg_settings)
    (github,) = [p for p in manifest.pipelines if p.name == "github_issues"]
    assert github.dlt is not None
    others = tuple(p for p in manifest.pipelines if p is not github)
    # Into the warehouse, and into a DuckDB file of dlt's own (not the warehouse's).
    for destination in (None, "duckdb"):
        named = replace(
            github, dlt=replace(github.dlt, dataset_name="warehouse", destination=destination)
        )
        defs = build_definitions(replace(manifest, pipelines=(named, *others)), pg_settings)
        assert "github_issues__dlt" in {a.op.name for a in assets(defs)}
        built = defs.assets or []
        errors = [a for a in built if isinstance(a, AssetSpec) and a.key != MANIFEST_KEY]
        assert errors == [], destination


def test_sling_gets_the_warehouse_as_postgres_fields_with_secrets_left_for_the_run(
    tmp_path: Path,
) -> None:
    def sling_warehouse(url: str) -> dict:
        warehouse = make_settings(tmp_path, "x", ELT_WAREHOUSE=url).warehouse
        return dict(connection_configs({}, {}, warehouse)[WAREHOUSE])

    local = sling_warehouse(PG)
    assert local == {
        "type": "postgres",
        "host": "127.0.0.1",
        "user": "loader",
        "database": "warehouse",
        "password": "${PG_PASSWORD}",
        "port": "5432",
        "sslmode": "disable",  # Sling's driver has no `prefer`; loopback needs no TLS
    }
    filled = filled_connection(WAREHOUSE, local, tmp_path, {"PG_PASSWORD": "p@ss/w rd"})
    assert filled["password"] == "p@ss/w rd"  # a field: no URL quoting needed
    remote = sling_warehouse("postgresql://loader:pw@db.example.com/wh")
    assert "sslmode" not in remote and "port" not in remote  # Sling's defaults: require, 5432
    assert sling_warehouse("postgresql://l@127.0.0.1/wh?sslmode=require")["sslmode"] == "require"


def test_streams_without_a_schema_land_in_public(tmp_path: Path, pg_settings: Settings) -> None:
    folder = tmp_path / "checkout" / "pipelines" / "plain_csv"
    shutil.copytree(EXAMPLES_DIR / "csv_orders", folder)
    (folder / "replication.yaml").write_text(
        "source: LOCAL\ntarget: WAREHOUSE\ndefaults: {mode: full-refresh, object: "
        "'{stream_file_name}'}\nstreams:\n  file://./data/orders.csv: {}\n"
    )
    (spec,) = [p for p in manifest_for(tmp_path, pg_settings).pipelines if p.name == "plain_csv"]
    assert spec.sling is not None
    assert [(s.schema, s.table) for s in spec.sling.streams] == [("public", "orders")]
