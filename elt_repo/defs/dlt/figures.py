"""What a dlt load says of each asset's table: dlt's own counts, and the table as the
destination holds it after the run."""

from __future__ import annotations

from typing import Any

from dagster import AssetKey, MetadataValue

from elt_repo.defs.run_metadata import TableFigures
from elt_repo.defs.table_counts import (
    DUCKDB,
    POSTGRES,
    POSTGRES_STYLE,
    PartitionSlice,
    table_counts,
)
from elt_repo.redact import plain, redact

# dlt's destination type -> the SQL its sql_client speaks, as far as counting goes.
_DIALECTS = {"duckdb": DUCKDB, "motherduck": DUCKDB, "postgres": POSTGRES}


def table_figures(
    dlt_pipeline: Any,
    keys: list[AssetKey | None],
    catalog: str | None,
    column: str | None = None,
    slices: list[PartitionSlice] | None = None,
) -> tuple[dict[AssetKey, TableFigures], str | None]:
    """Per asset: the rows this run loaded and the bytes of its files (dlt's own counts, nested
    tables apart), the table's rows after the run (in all and per partition, read through dlt's
    sql_client), and the real `<database>.<dataset>.<table>` name. Also why the tables could
    not be counted, if they could not."""
    trace = dlt_pipeline.last_trace
    normalize = trace.last_normalize_info if trace else None
    counts = {t: n for t, n in (normalize.row_counts if normalize else {}).items()}
    sizes: dict[str, int] = {}
    load = trace.last_load_info if trace else None
    for package in load.load_packages if load else ():
        for job in package.jobs.get("completed_jobs", []):
            table = job.job_file_info.table_name
            sizes[table] = sizes.get(table, 0) + int(job.file_size or 0)
    naming = dlt_pipeline.default_schema.naming
    tables = {
        key: naming.normalize_table_identifier(key.path[-1]) for key in keys if key is not None
    }
    stored, problem = _stored_counts(dlt_pipeline, tables.values(), column, slices or [])
    figures: dict[AssetKey, TableFigures] = {}
    for key, table in tables.items():
        family = {t: n for t, n in counts.items() if t == table or t.startswith(f"{table}__")}
        total, by_partition = stored.get(table, (None, {}))
        metadata: dict[str, Any] = {
            "elt/rows_by_table": MetadataValue.json(dict(sorted(family.items())))
        }
        if catalog:
            metadata["dagster/table_name"] = f"{catalog}.{dlt_pipeline.dataset_name}.{table}"
        figures[key] = TableFigures(
            rows_loaded=counts.get(table, 0),
            bytes=sum(sizes.get(t, 0) for t in {table, *family}),
            table_rows=total,
            partition_rows=by_partition,
            metadata=metadata,
        )
    return figures, problem


def _stored_counts(
    dlt_pipeline: Any, tables: Any, column: str | None, slices: list[PartitionSlice]
) -> tuple[dict[str, tuple[int, dict[str, int]]], str | None]:
    """table -> (rows, rows per partition), counted on the destination through dlt's client."""
    counted: dict[str, tuple[int, dict[str, int]]] = {}
    try:
        with dlt_pipeline.sql_client() as client:
            engine = str(dlt_pipeline.destination.destination_type).rsplit(".", 1)[-1]
            dialect = _DIALECTS.get(engine, POSTGRES_STYLE)

            def query(sql: str, params: Any) -> Any:
                return client.execute_sql(sql, *params)

            existing = {
                str(name)
                for (name,) in query(
                    "select table_name from information_schema.tables where table_schema = "
                    + dialect.placeholder,
                    [client.dataset_name],
                )
            }
            for table in (t for t in tables if t in existing):  # a table with no rows yet: none
                counted[table] = table_counts(
                    query, client.dataset_name, table, column, slices, dialect
                )
    except Exception as exc:  # a count is a report, not the load: the load has succeeded
        return counted, redact(
            plain(str(exc)).strip().splitlines()[0] if str(exc) else type(exc).__name__
        )
    return counted, None
