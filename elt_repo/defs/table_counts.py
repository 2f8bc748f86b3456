"""`dagster/row_count` as the warehouse holds it: the rows of a table after the run, or of each
partition when the pipeline names the column that places a row in its partition.

One query per table counts the whole table and every partition of the run at once
(`count(*) filter (where ...)`), through whatever executes SQL on the destination: a DuckDB
connection for Sling's warehouse, dlt's own sql_client for a dlt destination.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dagster import AssetExecutionContext, TimeWindowPartitionsDefinition

from elt_repo.schemas import PipelineSpec

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
    try_cast: bool = True  # DuckDB's TRY_CAST, for a text column that holds timestamps

    def quote(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'


DUCKDB = Dialect()
POSTGRES_STYLE = Dialect(placeholder="%s", try_cast=False)


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
    if "time zone" in kind or kind in ("timestamptz", "timestamp_tz"):
        return f"{col} >= {p} and {col} < {p}", [part.start, part.end]
    # A naive timestamp or a date holds wall-clock time in the partitions' timezone.
    start, end = part.start.replace(tzinfo=None), part.end.replace(tzinfo=None)
    if kind.startswith(("timestamp", "date", "datetime")):
        return f"{col} >= {p} and {col} < {p}", [start, end]
    if dialect.try_cast:
        cast = f"try_cast({col} as timestamp)"
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
    (row,) = query(f"select {', '.join(counted)} from {name}", params)
    return int(row[0]), {key: int(n) for (key, _, _), n in zip(conditions, row[1:], strict=True)}
