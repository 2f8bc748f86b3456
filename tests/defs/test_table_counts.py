"""dagster/row_count per partition: rows counted by the partition column, whatever its type."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import duckdb
import pytest

from elt_repo.defs.table_counts import PartitionSlice, table_counts

ROWS = [  # (ts, region): two on Jan 5 (UTC), one just before midnight, one on Jan 6
    ("2024-01-05 00:00:00", "eu"),
    ("2024-01-05 13:30:00", "us"),
    ("2024-01-04 23:59:59", "eu"),
    ("2024-01-06 00:00:00", "eu"),
]


def day(key: str, tz: str = "UTC") -> PartitionSlice:
    start = datetime.fromisoformat(key).replace(tzinfo=ZoneInfo(tz))
    return PartitionSlice(key, start, start + timedelta(days=1))


@pytest.fixture
def con():
    with duckdb.connect() as con:
        con.execute("create schema s")
        for name, kind in (
            ("naive", "timestamp"),
            ("aware", "timestamptz"),
            ("text", "varchar"),
            ("dates", "date"),
        ):
            con.execute(f"create table s.{name} (ts {kind}, region varchar)")
            for ts, region in ROWS:
                value = ts[:10] if kind == "date" else ts + ("+00" if kind == "timestamptz" else "")
                con.execute(f"insert into s.{name} values (?, ?)", [value, region])
        con.execute("set TimeZone = 'UTC'")
        yield con


def query(con):
    return lambda sql, params: con.execute(sql, list(params)).fetchall()


@pytest.mark.parametrize("table", ["naive", "aware", "text"])
def test_each_day_counts_its_own_rows(con, table: str) -> None:
    slices = [day("2024-01-04"), day("2024-01-05"), day("2024-01-06"), day("2024-01-07")]
    total, by_day = table_counts(query(con), "s", table, "ts", slices)
    assert total == 4
    assert by_day == {"2024-01-04": 1, "2024-01-05": 2, "2024-01-06": 1, "2024-01-07": 0}


def test_a_date_column_counts_by_day(con) -> None:
    total, by_day = table_counts(query(con), "s", "dates", "ts", [day("2024-01-05")])
    assert (total, by_day) == (4, {"2024-01-05": 2})


def test_an_aware_column_is_compared_as_an_instant(con) -> None:
    # Jan 5 in Tokyo is Jan 4 15:00 to Jan 5 15:00 UTC: three of the rows.
    _, by_day = table_counts(query(con), "s", "aware", "ts", [day("2024-01-05", "Asia/Tokyo")])
    assert by_day == {"2024-01-05": 3}


def test_static_keys_count_by_value(con) -> None:
    _, eu = table_counts(query(con), "s", "naive", "region", [PartitionSlice("eu")])
    _, us = table_counts(query(con), "s", "naive", "region", [PartitionSlice("us")])
    assert (eu, us) == ({"eu": 3}, {"us": 1})


def test_no_column_or_a_missing_one_counts_only_the_table(con) -> None:
    assert table_counts(query(con), "s", "naive") == (4, {})
    assert table_counts(query(con), "s", "naive", "nope", [day("2024-01-05")]) == (4, {})


def test_names_are_quoted_not_spliced(con) -> None:
    con.execute('create table s."odd ""name" (ts timestamp)')
    con.execute("""insert into s."odd ""name" values ('2024-01-05 01:00:00')""")
    assert table_counts(query(con), "s", 'odd "name', "ts", [day("2024-01-05")]) == (
        1,
        {"2024-01-05": 1},
    )
