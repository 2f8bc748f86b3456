"""dagster/row_count per partition in a Postgres warehouse: the same counts as in DuckDB, by
Postgres's own type names (`timestamp without time zone` is naive) and its lack of try_cast."""

from __future__ import annotations

import psycopg
import pytest

from elt_repo.defs.table_counts import POSTGRES, PartitionSlice, table_counts
from tests.defs.test_table_counts import ROWS, day


@pytest.fixture
def query(pg_url: str):
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute("set timezone = 'UTC'")
        con.execute("create schema s")
        for name, kind in (
            ("naive", "timestamp"),
            ("aware", "timestamptz"),
            ("text", "text"),
            ("dates", "date"),
        ):
            con.execute(f"create table s.{name} (ts {kind}, region text)")
            for ts, region in ROWS:
                value = ts[:10] if kind == "date" else ts + ("+00" if kind == "timestamptz" else "")
                con.execute(f"insert into s.{name} values (%s, %s)", [value, region])
        con.execute("insert into s.text values ('not a time', 'eu'), ('2024-13-45', 'eu')")
        yield lambda sql, params: con.execute(sql, list(params)).fetchall()


@pytest.mark.parametrize("table", ["naive", "aware", "text"])
def test_each_day_counts_its_own_rows(query, table: str) -> None:
    slices = [day("2024-01-04"), day("2024-01-05"), day("2024-01-06"), day("2024-01-07")]
    total, by_day = table_counts(query, "s", table, "ts", slices, POSTGRES)
    assert total == (6 if table == "text" else 4)  # text also holds two rows that are no time
    assert by_day == {"2024-01-04": 1, "2024-01-05": 2, "2024-01-06": 1, "2024-01-07": 0}


def test_a_naive_column_holds_wall_clock_time_in_the_partitions_timezone(query) -> None:
    # Jan 5 in Tokyo: the naive rows written on Jan 5, whatever the session's time zone.
    _, naive = table_counts(query, "s", "naive", "ts", [day("2024-01-05", "Asia/Tokyo")], POSTGRES)
    _, aware = table_counts(query, "s", "aware", "ts", [day("2024-01-05", "Asia/Tokyo")], POSTGRES)
    assert (naive, aware) == ({"2024-01-05": 2}, {"2024-01-05": 3})


def test_dates_and_static_keys(query) -> None:
    assert table_counts(query, "s", "dates", "ts", [day("2024-01-05")], POSTGRES) == (
        4,
        {"2024-01-05": 2},
    )
    _, eu = table_counts(query, "s", "naive", "region", [PartitionSlice("eu")], POSTGRES)
    assert eu == {"eu": 3}


def test_text_that_only_looks_like_a_time_leaves_the_partitions_uncounted(query) -> None:
    # 2024-02-30 passes the guard and fails the cast: the table is still counted.
    query("insert into s.text values ('2024-02-30 10:00:00', 'eu') returning 1", [])
    assert table_counts(query, "s", "text", "ts", [day("2024-01-05")], POSTGRES) == (7, {})
