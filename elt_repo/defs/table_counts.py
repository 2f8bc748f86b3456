"""`dagster/row_count` as the warehouse holds it: the rows of a table after the run, or of each
partition when the pipeline names the column that places a row in its partition.

One query per table counts the whole table and every partition of the run at once
(`count(*) filter (where ...)`), through whatever executes SQL on the destination: a DuckDB or
psycopg connection for Sling's warehouse, dlt's own sql_client for a dlt destination.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dagster import AssetExecutionContext, TimeWindowPartitionsDefinition

from elt_repo.schemas import PipelineSpec
from elt_repo.warehouse import Warehouse

# Executes one statement with positional parameters and returns its rows.
Query = Callable[[str, Sequence[Any]], Sequence[Sequence[Any]]]


@dataclass(frozen=True)
class PartitionSlice:
    """The rows of one partition: `start <= column < end` for a time window, else
    `column = key` for a static key."""

    key: str
    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True)
class Dialect:
    """What differs between the SQL engines counted here."""

    placeholder: str = "?"
    # A text column's value as a timestamp, NULL where it holds none ({} is the column); None:
    # the engine has no cast that cannot fail.
    text_timestamp: str | None = "try_cast({} as timestamp)"

    def quote(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'


DUCKDB = Dialect()
# Postgres has no try_cast (pg_input_is_valid is 16+): only text shaped like a wall-clock
# timestamp is cast, as Sling writes a SQLite source's text timestamps. (A day past its
# month's end, 2024-02-30, still fails the cast: table_counts then counts no partitions.)
POSTGRES = Dialect(
    placeholder="%s",
    text_timestamp=(
        r"case when {0} ~ '^\d{{4}}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
        r"([ T]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d+)?)?)?$' then cast({0} as timestamp) end"
    ),
)
POSTGRES_STYLE = Dialect(placeholder="%s", text_timestamp=None)  # any other SQL engine


@contextmanager
def warehouse_query(warehouse: Warehouse) -> Iterator[tuple[Query, Dialect]]:
    """Run SQL on the warehouse, read-only for DuckDB: the query function and its dialect."""
    # Both only at run time: loading the definitions needs neither driver.
    if warehouse.is_duckdb:
        import duckdb

        with duckdb.connect(str(warehouse.file), read_only=True) as con:
            yield (lambda sql, params: con.execute(sql, list(params)).fetchall()), DUCKDB
        return
    import psycopg

    with psycopg.connect(warehouse.resolved_url(os.environ), autocommit=True) as pg:
        yield (lambda sql, params: pg.execute(sql, list(params)).fetchall()), POSTGRES


def partition_slices(
    context: AssetExecutionContext, pipeline: PipelineSpec
) -> list[PartitionSlice]:
    """One slice per partition the run materializes, if the pipeline names a partition column."""
    part = pipeline.partitions
    if part is None or not part.column:
        return []
    if part.type == "time":
        partitions = context.assets_def.partitions_def
        assert isinstance(partitions, TimeWindowPartitionsDefinition)
        return [
            PartitionSlice(key, window.start, window.end)
            for key in context.partition_keys
            for window in [partitions.time_window_for_partition_key(key)]
        ]
    return [PartitionSlice(context.partition_key)]


def _condition(
    column: str, column_type: str, part: PartitionSlice, dialect: Dialect
) -> tuple[str, list[Any]] | None:
    p, col, kind = dialect.placeholder, dialect.quote(column), column_type.lower()
    if part.start is None or part.end is None:
        return f"cast({col} as varchar) = {p}", [part.key]
    # DuckDB says "timestamp with time zone", Postgres also "timestamp without time zone".
    if "with time zone" in kind or kind in ("timestamptz", "timestamp_tz"):
        return f"{col} >= {p} and {col} < {p}", [part.start, part.end]
    # A naive timestamp or a date holds wall-clock time in the partitions' timezone.
    start, end = part.start.replace(tzinfo=None), part.end.replace(tzinfo=None)
    if kind.startswith(("timestamp", "date", "datetime")):
        return f"{col} >= {p} and {col} < {p}", [start, end]
    if dialect.text_timestamp:
        cast = dialect.text_timestamp.format(col)
        return f"{cast} >= {p} and {cast} < {p}", [start, end]
    return None  # a text column on an engine with no safe cast: no count rather than an error


def table_counts(
    query: Query,
    schema: str,
    table: str,
    column: str | None = None,
    slices: Sequence[PartitionSlice] = (),
    dialect: Dialect = DUCKDB,
) -> tuple[int, dict[str, int]]:
    """The table's rows, and each slice's rows when the table has the partition column."""
    p = dialect.placeholder
    conditions: list[tuple[str, str, list[Any]]] = []
    if column and slices:
        found = query(
            "select data_type from information_schema.columns "
            f"where table_schema = {p} and table_name = {p} and column_name = {p}",
            [schema, table, column],
        )
        if found:
            for part in slices:
                condition = _condition(column, str(found[0][0]), part, dialect)
                if condition is None:
                    conditions = []
                    break
                conditions.append((part.key, *condition))
    counted = ["count(*)"] + [f"count(*) filter (where {c})" for _, c, _ in conditions]
    params = [arg for _, _, args in conditions for arg in args]
    name = f"{dialect.quote(schema)}.{dialect.quote(table)}"
    try:
        (row,) = query(f"select {', '.join(counted)} from {name}", params)
    except Exception:
        if not conditions or dialect.text_timestamp is None or dialect is DUCKDB:
            raise
        # Postgres's guarded cast met text shaped like a time that is none (2024-02-30): the
        # table's count without its partitions', rather than a failed step after a good load.
        (row,) = query(f"select count(*) from {name}", [])
        return int(row[0]), {}
    return int(row[0]), {key: int(n) for (key, _, _), n in zip(conditions, row[1:], strict=True)}
