"""Sling replications as multi-assets: specs from the manifest, execution through dagster-sling."""

import dataclasses
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    MaterializeResult,
    TableColumn,
    TableSchema,
    multi_asset,
)
from dagster_sling import DagsterSlingTranslator

from elt_repo.defs.assets import (
    BuildContext,
    asset_key,
    multi_asset_args,
    pipeline_asset_spec,
)
from elt_repo.defs.failures import with_failure_details
from elt_repo.defs.partitions import partition_values
from elt_repo.defs.pools import pipeline_pool, target_kind
from elt_repo.defs.run_metadata import TableFigures, with_metadata
from elt_repo.defs.sling.resource import EltSlingResource
from elt_repo.defs.table_counts import (
    PartitionSlice,
    partition_slices,
    table_counts,
    warehouse_query,
)
from elt_repo.discovery.pipeline_files import fill_partition_vars, resolve_stream_name
from elt_repo.discovery.safe_files import read_yaml
from elt_repo.discovery.sling_streams import WAREHOUSE
from elt_repo.redact import plain
from elt_repo.schemas import PipelineSpec, SlingStreamSpec
from elt_repo.warehouse import Warehouse


class EltSlingTranslator(DagsterSlingTranslator):
    """Maps a Sling stream to the [pipeline, table] key discovery resolved for it."""

    def __init__(self, pipeline: PipelineSpec, streams: Mapping[str, SlingStreamSpec]):
        super().__init__()
        self.pipeline = pipeline
        self.streams = streams  # stream name as Sling runs it -> its spec from the manifest

    def get_asset_spec(self, stream_definition: Mapping[str, Any]) -> AssetSpec:
        return AssetSpec(
            key=asset_key(self.pipeline, self.streams[stream_definition["name"]].table)
        )


def runtime_replication(
    folder: Path,
    replication_file: str,
    variables: Mapping[str, str],
    resolved: tuple[SlingStreamSpec, ...],
) -> tuple[dict[str, Any], dict[str, SlingStreamSpec]]:
    """The replication as Sling should run it: exactly the resolved streams, each with its
    pattern's config, local paths absolute and partition vars filled; defaults stay defaults."""
    # The limits discovery applied: a run never meets a replication refresh would refuse.
    rel = f"{folder.name}/{replication_file}"
    raw = read_yaml(folder / replication_file, folder, rel, "sling.replication")
    config = fill_partition_vars(raw, variables)
    written = config.get("streams") or {}
    specs: dict[str, SlingStreamSpec] = {}
    streams: dict[str, Any] = {}
    for spec in resolved:
        name = resolve_stream_name(fill_partition_vars(spec.name, variables), folder)
        own = written.get(fill_partition_vars(spec.replication_key, variables))
        streams[name] = dict(own) if own else {}
        specs[name] = spec
    config["streams"] = streams
    return config, specs


def _sling_variables(partition: Mapping[str, Any]) -> dict[str, str]:
    if not partition:
        return {}
    return {
        "partition_key": str(partition["partition_key"]),
        "partition_start": str(partition.get("partition_start_str", partition["partition_key"])),
        "partition_end": str(partition.get("partition_end_str", partition["partition_key"])),
    }


# Sling's line for each stream it loaded: `inserted 200 rows into "csv_orders"."customers" in 1 secs`
_INSERTED = re.compile(r'inserted (\d+) rows into "?([^".\s]+)"?\."?([^".\s]+)"?')


def rows_inserted(log_lines: Iterable[str]) -> dict[tuple[str, str], int]:
    """(schema, table) -> the rows Sling says it inserted, from its own log."""
    inserted: dict[tuple[str, str], int] = {}
    for line in log_lines:
        for rows, schema, table in _INSERTED.findall(plain(line)):
            key = (schema.lower(), table.lower())
            inserted[key] = inserted.get(key, 0) + int(rows)
    return inserted


def warehouse_figures(
    warehouse: Warehouse,
    objects: Mapping[AssetKey, tuple[str | None, str]],
    column: str | None = None,
    slices: Sequence[PartitionSlice] = (),
) -> dict[AssetKey, TableFigures]:
    """Per asset, the real `<database>.<schema>.<table>`, its columns, and its rows (in all and
    per partition), read from the warehouse."""
    figures: dict[AssetKey, TableFigures] = {}
    catalog = warehouse.catalog(os.environ)
    default_schema = "main" if warehouse.is_duckdb else "public"
    with warehouse_query(warehouse) as (query, dialect):
        p = dialect.placeholder
        for key, (schema, table) in objects.items():
            schema = schema or default_schema
            columns = query(
                "select column_name, data_type from information_schema.columns "
                f"where table_schema = {p} and table_name = {p} order by ordinal_position",
                [schema, table],
            )
            metadata: dict[str, Any] = {
                "dagster/table_name": f"{catalog}.{schema}.{table}",
                "dagster/storage_kind": warehouse.kind,
            }
            if not columns:
                figures[key] = TableFigures(metadata=metadata)
                continue
            metadata["dagster/column_schema"] = TableSchema(
                columns=[TableColumn(name=n, type=t.lower()) for n, t in columns]
            )
            total, by_partition = table_counts(query, schema, table, column, slices, dialect)
            figures[key] = TableFigures(
                table_rows=total, partition_rows=by_partition, metadata=metadata
            )
    return figures


def build_sling_assets(ctx: BuildContext, pipeline: PipelineSpec) -> AssetsDefinition:
    """One multi-asset per replication, one asset per stream."""
    assert pipeline.sling is not None
    sling_spec = pipeline.sling
    kind = target_kind(ctx.settings, pipeline)
    specs = [
        pipeline_asset_spec(
            ctx,
            pipeline,
            asset_key(pipeline, stream.table),
            destination_kind=kind,
            entry_file=sling_spec.replication,
            extra_metadata={"elt/sling_stream": stream.name},
        )
        for stream in sling_spec.streams
    ]
    pool = pipeline_pool(ctx.settings, pipeline)

    def _run(context: AssetExecutionContext) -> Iterator[MaterializeResult]:
        sling: EltSlingResource = context.resources.sling
        pinned = ctx.pinned(context, pipeline)
        folder, run_spec = pinned.folder, pinned.pipeline.sling or sling_spec
        partition = partition_values(context, pinned.pipeline)
        config, specs = runtime_replication(
            folder, run_spec.replication, _sling_variables(partition), run_spec.streams
        )
        translator = EltSlingTranslator(pipeline, specs)
        selected = context.selected_asset_keys
        config["streams"] = {
            name: stream_config
            for name, stream_config in config["streams"].items()
            if asset_key(pipeline, specs[name].table) in selected
        }
        resource = sling.for_pipeline(run_spec.connections, folder, ctx.settings.warehouse)
        started = datetime.now(UTC)
        # Into the warehouse, warehouse_figures counts the rows on its own connection;
        # dagster-sling's count would start `sling conns exec` (and a DuckDB CLI: 0.4 s a run).
        results = resource.run_replication(
            context, config, translator, fetch_row_count=run_spec.target != WAREHOUSE
        )
        facts = ctx.run_facts(pinned, partition, started)
        inserted = rows_inserted(resource.stream_raw_logs())
        objects = {
            asset_key(pipeline, specs[n].table): (specs[n].schema, specs[n].table)
            for n in config["streams"]
        }
        if run_spec.target == WAREHOUSE:
            part = pinned.pipeline.partitions
            figures = warehouse_figures(
                ctx.settings.warehouse,
                objects,
                part.column if part else None,
                partition_slices(context, pinned.pipeline),
            )
        else:  # dagster-sling's fetch_row_count: the table's total, as its connection reports it
            figures = {
                r.asset_key: TableFigures(
                    table_rows=_number((r.metadata or {}).get("dagster/row_count"))
                )
                for r in results
                if r.asset_key is not None
            }
        for key, (schema, table) in objects.items():
            loaded = inserted.get(((schema or "main").lower(), table.lower()))
            if key in figures and loaded is not None:
                figures[key] = dataclasses.replace(figures[key], rows_loaded=loaded)
        yield from with_metadata(results, facts, figures, context)

    @multi_asset(**multi_asset_args(pipeline, specs, pool), required_resource_keys={"sling"})
    def _assets(context: AssetExecutionContext) -> Iterator[MaterializeResult]:
        yield from with_failure_details(context, pipeline, _run(context))

    return _assets


def _number(value: Any) -> int | None:
    raw = getattr(value, "value", value)
    return int(raw) if isinstance(raw, int | float) else None
