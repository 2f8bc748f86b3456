"""Materialize every asset of the current manifest, as the README's first command does."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb
from dagster import (
    AssetsDefinition,
    DagsterInstance,
    Definitions,
    DynamicPartitionsDefinition,
    TimeWindowPartitionsDefinition,
    materialize,
)

from elt_repo.defs.partitions import apply_partition_requests, dynamic_partition_requests
from elt_repo.manifest import Manifest
from elt_repo.warehouse import Warehouse

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(frozen=True)
class RunOutcome:
    op: str
    partition: str | None
    success: bool


def _runs(
    assets_def: AssetsDefinition, instance: DagsterInstance
) -> Iterator[tuple[str | None, dict]]:
    """One run per static key; one single run over the whole range for time windows."""
    pdef = assets_def.partitions_def
    if pdef is None:
        yield None, {}
    elif isinstance(pdef, TimeWindowPartitionsDefinition):
        keys = pdef.get_partition_keys()
        yield f"{keys[0]}..{keys[-1]}", {"tags": {RANGE_START: keys[0], RANGE_END: keys[-1]}}
    elif isinstance(pdef, DynamicPartitionsDefinition):
        for key in instance.get_dynamic_partitions(pdef.name or ""):
            yield key, {"partition_key": key}


def materialize_all(
    defs: Definitions, manifest: Manifest, instance: DagsterInstance
) -> list[RunOutcome]:
    """Sync dynamic partitions, then materialize every pipeline's assets in process."""
    apply_partition_requests(instance, dynamic_partition_requests(manifest, instance))
    resources = defs.resources or {}
    outcomes = []
    for assets_def in defs.assets or []:
        if not isinstance(assets_def, AssetsDefinition) or not assets_def.is_executable:
            continue
        for label, kwargs in _runs(assets_def, instance):
            result = materialize(
                [assets_def],
                instance=instance,
                resources=resources,
                raise_on_error=False,
                run_config=QUIET,
                **kwargs,
            )
            outcomes.append(RunOutcome(assets_def.op.name, label, result.success))
    return outcomes


def table_counts(warehouse: Warehouse | str) -> list[tuple[str, str, int]]:
    """(schema, table, rows) for every user table in the warehouse (a DuckDB path, or either
    kind of Warehouse), read back from it; dlt's own tables and staging schemas left out."""
    if isinstance(warehouse, Warehouse) and not warehouse.is_duckdb:
        return _postgres_counts(warehouse)
    path = str(warehouse.file if isinstance(warehouse, Warehouse) else warehouse)
    with duckdb.connect(path, read_only=True) as con:
        tables = con.sql(
            "select schema_name, table_name from duckdb_tables() "
            "where not table_name like '\\_dlt%' escape '\\' and not schema_name like '%\\_staging' escape '\\' "
            "order by 1, 2"
        ).fetchall()
        return [
            (schema, table, con.sql(f'select count(*) from "{schema}"."{table}"').fetchone()[0])
            for schema, table in tables
        ]


def _postgres_counts(warehouse: Warehouse) -> list[tuple[str, str, int]]:
    import psycopg
    from psycopg import sql

    with psycopg.connect(warehouse.resolved_url(os.environ)) as con:
        tables = con.execute(  # no parameters: psycopg sends the % as written
            "select table_schema, table_name from information_schema.tables "
            "where table_type = 'BASE TABLE' "
            "and table_schema not in ('pg_catalog', 'information_schema') "
            "and table_name not like '\\_dlt%' and table_schema not like '%\\_staging' "
            "order by 1, 2"
        ).fetchall()
        counts = []
        for schema, table in tables:
            count = sql.SQL("select count(*) from {}").format(sql.Identifier(schema, table))
            counts.append((schema, table, con.execute(count).fetchone()[0]))
        return counts
