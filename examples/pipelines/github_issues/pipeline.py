"""GitHub issues and comments from a JSON-lines export, loaded by day.

The files are shaped like the GitHub REST API's issue and comment objects, so
swapping the file reader for ``dlt``'s REST client is the only change needed
to load a live repository.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dlt
from dlt.sources import DltResource

TimeBound = str | date | datetime | None


def to_utc(value: str | date | datetime) -> datetime:
    """Turn an ISO string, date or (pendulum) datetime into an aware UTC datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.strip())
    if not isinstance(value, datetime):  # a plain date means its midnight
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def read_window(
    path: str, start: datetime | None, end: datetime | None
) -> Iterator[dict[str, Any]]:
    """Yield the rows of a JSON-lines file whose created_at is in [start, end).

    Each row gets `created_day`, the UTC day it belongs to: the partition column.
    """
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            created_at = to_utc(row["created_at"])
            if start is not None and created_at < start:
                continue
            if end is not None and created_at >= end:
                continue
            yield {**row, "created_day": created_at.date()}


@dlt.source
def github_source(
    data_file: str,
    comments_file: str,
    start_date: TimeBound = None,
    end_date: TimeBound = None,
) -> tuple[DltResource, DltResource]:
    """Issues and comments created in [start_date, end_date), or all of them."""
    # Only parse the bounds here: the project calls this function just to list
    # the resources, so the files must not be touched until a resource is iterated.
    start = to_utc(start_date) if start_date is not None else None
    end = to_utc(end_date) if end_date is not None else None
    if start is not None and end is not None and start >= end:
        raise ValueError(f"start_date {start.isoformat()} is not before end_date {end.isoformat()}")

    # Idempotent by partition: delete-insert removes every row of the loaded days
    # (merge_key) and of the loaded ids (primary_key) before inserting, so a rerun
    # of a day leaves exactly that day's rows, even if some were deleted upstream.
    @dlt.resource(
        write_disposition={"disposition": "merge", "strategy": "delete-insert"},
        primary_key="id",
        merge_key="created_day",
        # Declared up front: in a window where no issue is closed these are all
        # null, and dlt would otherwise leave the columns out until one is not.
        columns={
            "closed_at": {"data_type": "timestamp", "nullable": True},
            "state_reason": {"data_type": "text", "nullable": True},
            # Nullable so DuckDB can add it to a table loaded before it existed
            # (it cannot add a column with a NOT NULL constraint).
            "created_day": {"data_type": "date", "nullable": True},
        },
    )
    def issues() -> Iterator[dict[str, Any]]:
        """Issues, with labels unnested into the issues__labels table."""
        yield from read_window(data_file, start, end)

    @dlt.resource(
        write_disposition={"disposition": "merge", "strategy": "delete-insert"},
        primary_key="id",
        merge_key="created_day",
        columns={"created_day": {"data_type": "date", "nullable": True}},
    )
    def comments() -> Iterator[dict[str, Any]]:
        """Issue comments, windowed by their own created_at."""
        yield from read_window(comments_file, start, end)

    return issues, comments
