"""Daily store sales, generated in code and loaded one region at a time.

No files: rows come from a seeded generator, so every run of the same region
yields the same rows and merge keeps the tables free of duplicates.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import dlt
from dlt.sources import DltResource

FIRST_DAY = date(2024, 1, 1)

# region -> [(store_id, city, opened_on)]
STORES: dict[str, list[tuple[str, str, str]]] = {
    "us-east": [
        ("use-001", "New York", "2019-03-01"),
        ("use-002", "Boston", "2019-09-15"),
        ("use-003", "Philadelphia", "2020-05-02"),
        ("use-004", "Washington", "2021-01-20"),
        ("use-005", "Atlanta", "2021-11-11"),
        ("use-006", "Miami", "2022-06-30"),
        ("use-007", "Charlotte", "2023-02-14"),
        ("use-008", "Pittsburgh", "2023-08-01"),
    ],
    "us-west": [
        ("usw-001", "San Francisco", "2018-10-10"),
        ("usw-002", "Los Angeles", "2019-04-04"),
        ("usw-003", "Seattle", "2020-02-29"),
        ("usw-004", "Portland", "2021-07-07"),
        ("usw-005", "San Diego", "2022-03-03"),
        ("usw-006", "Denver", "2023-05-05"),
    ],
    "eu-central": [
        ("euc-001", "Berlin", "2020-01-15"),
        ("euc-002", "Munich", "2020-09-09"),
        ("euc-003", "Vienna", "2021-04-01"),
        ("euc-004", "Zurich", "2022-10-01"),
        ("euc-005", "Prague", "2023-03-21"),
    ],
}
REGIONS = list(STORES)
CURRENCY = {"us-east": "USD", "us-west": "USD", "eu-central": "EUR"}


def store_rows(region: str) -> Iterator[dict[str, Any]]:
    """Yield the static store list of one region."""
    for store_id, city, opened_on in STORES[region]:
        yield {
            "store_id": store_id,
            "region": region,
            "city": city,
            "opened_on": date.fromisoformat(opened_on),
        }


def sales_rows(region: str, days: int) -> Iterator[dict[str, Any]]:
    """Yield one row per store and day, the same on every call."""
    for offset in range(days):
        day = FIRST_DAY + timedelta(days=offset)
        for store_id, _, _ in STORES[region]:
            # A string seed is hashed with SHA-512, so it is stable across processes.
            rng = random.Random(f"{region}:{store_id}:{day.isoformat()}")
            weekend = day.weekday() >= 5
            transactions = rng.randint(120, 260) + (80 if weekend else 0)
            units = transactions + rng.randint(0, transactions)
            yield {
                "region": region,
                "store_id": store_id,
                "day": day,
                "transactions": transactions,
                "units_sold": units,
                "revenue": round(units * rng.uniform(6.5, 9.5), 2),
                "returns": rng.randint(0, 8),
                "currency": CURRENCY[region],
            }


@dlt.source
def sales_source(region: str | None = None, days: int = 30) -> tuple[DltResource, DltResource]:
    """Stores and daily sales for one region, or for all regions when region is None."""
    if region is not None and region not in STORES:
        raise ValueError(f"unknown region {region!r}; expected one of {REGIONS}")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    regions = [region] if region is not None else REGIONS

    @dlt.resource(write_disposition="merge", primary_key="store_id")
    def stores() -> Iterator[dict[str, Any]]:
        """The store list."""
        for name in regions:
            yield from store_rows(name)

    @dlt.resource(write_disposition="merge", primary_key=["region", "store_id", "day"])
    def daily_sales() -> Iterator[dict[str, Any]]:
        """One row per store and day, starting on FIRST_DAY."""
        for name in regions:
            yield from sales_rows(name, days)

    return daily_sales, stores
