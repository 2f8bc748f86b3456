"""A source that gained a table since discovery: the run loads what the assets declare."""

from __future__ import annotations

import duckdb
import pytest
from dagster import AssetKey, AssetsDefinition, Definitions, materialize

from elt_repo.defs.build import build_definitions
from elt_repo.defs.resources import build_resources
from elt_repo.refresh import refresh
from tests.conftest import PipelinesRepo

pytestmark = pytest.mark.slow

# Lists its tables when called, as sql_database reflects a database's.
TABLES_FROM_ENV = """
import os
import dlt


@dlt.source
def src():
    return [
        dlt.resource([{"id": n} for n in range(3)], name=t)
        for t in os.environ["SHOP_TABLES"].split(",")
    ]
"""


def test_a_table_the_assets_do_not_declare_is_named_not_loaded(
    repo: PipelinesRepo, settings_for, instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.write("pipelines/shop/pipeline.py", TABLES_FROM_ENV)
    repo.write(
        "pipelines/shop/dagster.yaml",
        {"dlt": {"source": "pipeline.py:src", "dataset_name": "shop_data"}},
    )
    repo.commit("shop")
    monkeypatch.setenv("SHOP_TABLES", "orders")
    settings = settings_for(repo.url)
    manifest = refresh(settings).manifest
    defs = Definitions.merge(
        build_definitions(manifest, settings), Definitions(resources=build_resources(settings))
    )
    monkeypatch.setenv("SHOP_TABLES", "orders,coupons")  # created in the source since
    assets = [a for a in defs.assets if isinstance(a, AssetsDefinition) and a.is_executable]
    result = materialize(assets, resources=defs.resources, instance=instance)

    assert result.success
    (event,) = result.get_asset_materialization_events()
    materialization = event.materialization
    assert materialization.asset_key == AssetKey(["shop", "orders"])
    assert materialization.metadata["elt/undeclared_tables"].value == "coupons"
    warnings = [
        e.message
        for e in instance.all_logs(result.run_id)
        if e.level >= 30 and "no asset declares" in e.message
    ]
    assert len(warnings) == 1 and "coupons" in warnings[0], warnings
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        tables = con.execute(
            "select table_name from information_schema.tables where table_schema = 'shop_data' "
            "and table_name not like '_dlt%'"
        ).fetchall()
    assert tables == [("orders",)]
