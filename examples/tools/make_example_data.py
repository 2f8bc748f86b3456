"""Regenerate every data file of the bundled example pipelines.

Run from anywhere: ``python examples/tools/make_example_data.py``. Output is
seeded, so text files come out byte-identical; the SQLite file holds the same
rows but its bytes may differ between SQLite versions.
"""

from __future__ import annotations

import csv
import json
import random
import sqlite3
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"
SEED = 20240101

QUARTER_START = datetime(2024, 1, 1, tzinfo=UTC)
QUARTER_END = datetime(2024, 4, 1, tzinfo=UTC)

GITHUB_USERS = [
    ("alice-dev", 1001),
    ("bob-ops", 1002),
    ("carol-data", 1003),
    ("dave-ml", 1004),
    ("erin-sre", 1005),
    ("frank-fe", 1006),
    ("grace-be", 1007),
    ("heidi-qa", 1008),
    ("ivan-docs", 1009),
    ("judy-pm", 1010),
    ("dependabot[bot]", 49699333),
]
LABELS = [
    ("bug", "d73a4a"),
    ("enhancement", "a2eeef"),
    ("documentation", "0075ca"),
    ("good first issue", "7057ff"),
    ("question", "d876e3"),
    ("performance", "fbca04"),
    ("area: dlt", "1d76db"),
    ("area: sling", "0e8a16"),
    ("area: ui", "c5def5"),
    ("needs triage", "ededed"),
]
TITLE_VERBS = [
    "Fix",
    "Support",
    "Document",
    "Improve",
    "Add",
    "Investigate",
    "Remove",
    "Refactor",
]
TITLE_SUBJECTS = [
    "partition backfill for daily assets",
    "retry policy on flaky sources",
    "schema evolution when a column is dropped",
    "merge write disposition with composite keys",
    "timezone handling in cron schedules",
    "duplicate rows after a failed load",
    "slow discovery for large repositories",
    "sensor cursor reset after redeploy",
    "credentials in environment variables",
    "null handling in nested JSON",
    "CSV files with a BOM",
    "SQLite source with views",
    "asset metadata for row counts",
    "code location reload on new commit",
]
BODY_SENTENCES = [
    "Steps to reproduce are in the linked run.",
    "This started after upgrading to the latest release.",
    "Expected the load to be idempotent but it was not.",
    "A minimal example is attached below.",
    "It only happens when the partition spans midnight UTC.",
    "Would be happy to open a PR for this.",
    "The logs show a timeout while listing resources.",
    "Workaround for now is to rerun the job by hand.",
]
COMMENT_SENTENCES = [
    "Thanks for the report, I can reproduce this.",
    "Could you share the full stack trace?",
    "Fixed in the next release.",
    "+1, we see the same in production.",
    "Closing as a duplicate.",
    "I have a draft PR for this, will link it shortly.",
    "This is expected behaviour, see the docs on partitions.",
    "Confirmed fixed on main, thanks!",
]
ASSOCIATIONS = ["OWNER", "MEMBER", "CONTRIBUTOR", "NONE"]

FIRST_NAMES = [
    "Ana",
    "Ben",
    "Chloe",
    "Diego",
    "Emma",
    "Felix",
    "Hana",
    "Ivan",
    "Jonas",
    "Kai",
]
FIRST_NAMES += [
    "Lea",
    "Mateo",
    "Nora",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tara",
    "Yuki",
]
LAST_NAMES = [
    "Andersen",
    "Bauer",
    "Costa",
    "Dubois",
    "Evans",
    "Fischer",
    "Garcia",
    "Hansen",
]
LAST_NAMES += [
    "Ito",
    "Jensen",
    "Kowalski",
    "Lopez",
    "Meyer",
    "Nakamura",
    "Olsen",
    "Petrov",
]
COUNTRIES = ["US", "US", "US", "DE", "FR", "GB", "NL", "ES", "JP", "BR", "CA"]
ORDER_STATUSES = ["completed"] * 7 + ["shipped", "shipped", "cancelled", "refunded"]

CATEGORIES = {
    "coffee": [
        "Espresso Beans",
        "Filter Roast",
        "Decaf Blend",
        "Cold Brew Pack",
        "Single Origin",
    ],
    "tea": ["Green Tea", "Earl Grey", "Chai Mix", "Rooibos", "Matcha"],
    "equipment": ["Pour-Over Kit", "Burr Grinder", "Milk Frother", "Scale", "Kettle"],
    "merch": ["Mug", "Tote Bag", "T-Shirt", "Cap", "Sticker Pack"],
}
SIZES = ["Small", "Large"]
WAREHOUSE_CODES = ["AMS", "NYC", "SFO"]


def iso(ts: datetime) -> str:
    """Format a UTC datetime the way the GitHub API does."""
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def random_instant(rng: random.Random, start: datetime, end: datetime) -> datetime:
    """Return a whole-second instant in [start, end)."""
    return start + timedelta(seconds=rng.randrange(int((end - start).total_seconds())))


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Write rows as JSON lines and return how many were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def write_csv(path: Path, rows: list[dict]) -> int:
    """Write rows as a CSV with a header and return how many were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def make_github(rng: random.Random, n_issues: int = 300, n_comments: int = 600) -> None:
    """Write github_issues/data/{issues,comments}.jsonl."""
    folder = PIPELINES / "github_issues" / "data"
    # Comments are created after their issue and before the end of the quarter,
    # so every row of both files falls inside the partitioned range.
    created = sorted(random_instant(rng, QUARTER_START, QUARTER_END) for _ in range(n_issues))
    issues = []
    for number, created_at in enumerate(created, start=1):
        login, user_id = rng.choice(GITHUB_USERS)
        closed = rng.random() < 0.55
        closed_at = None
        if closed:
            closed_at = min(
                created_at + timedelta(minutes=rng.randrange(10, 60 * 24 * 21)),
                QUARTER_END - timedelta(seconds=1),
            )
        labels = [{"name": n, "color": c} for n, c in rng.sample(LABELS, rng.randint(0, 3))]
        issues.append(
            {
                "id": 2_000_000_000 + number * 7919,
                "node_id": f"I_kwDOExample{number:05d}",
                "number": number,
                "title": f"{rng.choice(TITLE_VERBS)} {rng.choice(TITLE_SUBJECTS)}",
                "state": "closed" if closed else "open",
                "state_reason": rng.choice(["completed", "not_planned"]) if closed else None,
                "locked": False,
                "user": {"login": login, "id": user_id},
                "labels": labels,
                "author_association": rng.choice(ASSOCIATIONS),
                "comments": 0,
                "created_at": created_at,
                "updated_at": closed_at or created_at,
                "closed_at": closed_at,
                "html_url": f"https://github.com/example-org/example-repo/issues/{number}",
                "body": " ".join(rng.sample(BODY_SENTENCES, rng.randint(1, 3))),
            }
        )

    comments = []
    for _ in range(n_comments):
        issue = rng.choice(issues)
        # Most replies come within days; one that would fall past the quarter is
        # redrawn uniformly instead of piling up on its last second.
        comment_at = issue["created_at"] + timedelta(seconds=int(rng.expovariate(1 / 259_200)))
        if comment_at >= QUARTER_END:
            comment_at = random_instant(rng, issue["created_at"], QUARTER_END)
        login, user_id = rng.choice(GITHUB_USERS)
        issue["comments"] += 1
        issue["updated_at"] = max(issue["updated_at"], comment_at)
        comments.append(
            {
                "issue_number": issue["number"],
                "user": {"login": login, "id": user_id},
                "author_association": rng.choice(ASSOCIATIONS),
                "body": rng.choice(COMMENT_SENTENCES),
                "created_at": comment_at,
            }
        )
    comments.sort(key=lambda c: (c["created_at"], c["issue_number"]))
    for seq, comment in enumerate(comments, start=1):
        comment["id"] = 1_900_000_000 + seq * 104729
        issue_number = comment["issue_number"]
        comment["html_url"] = (
            f"https://github.com/example-org/example-repo/issues/{issue_number}"
            f"#issuecomment-{comment['id']}"
        )

    def dump(row: dict, order: list[str]) -> dict:
        out = {key: row[key] for key in order}
        for key in ("created_at", "updated_at", "closed_at"):
            if isinstance(out.get(key), datetime):
                out[key] = iso(out[key])
        return out

    issue_keys = list(issues[0])
    comment_keys = [
        "id",
        "issue_number",
        "user",
        "author_association",
        "body",
        "created_at",
    ]
    comment_keys.append("html_url")
    write_jsonl(folder / "issues.jsonl", (dump(i, issue_keys) for i in issues))
    write_jsonl(folder / "comments.jsonl", (dump(c, comment_keys) for c in comments))


def make_csv_orders(rng: random.Random, n_customers: int = 200, n_orders: int = 1000) -> None:
    """Write csv_orders/data/{customers,orders}.csv."""
    folder = PIPELINES / "csv_orders" / "data"
    customers = []
    for customer_id in range(1, n_customers + 1):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        signup = date(2023, 1, 1) + timedelta(days=rng.randrange(365))
        customers.append(
            {
                "customer_id": customer_id,
                "first_name": first,
                "last_name": last,
                "email": f"{first.lower()}.{last.lower()}{customer_id}@example.com",
                "country": rng.choice(COUNTRIES),
                "signup_date": signup.isoformat(),
            }
        )
    orders = []
    for ordered_at in sorted(
        random_instant(rng, QUARTER_START, QUARTER_END) for _ in range(n_orders)
    ):
        items = rng.randint(1, 6)
        orders.append(
            {
                "order_id": 100_001 + len(orders),
                "customer_id": rng.randint(1, n_customers),
                "ordered_at": ordered_at.strftime("%Y-%m-%d %H:%M:%S"),
                "status": rng.choice(ORDER_STATUSES),
                "item_count": items,
                "amount": f"{items * rng.uniform(4.5, 60.0):.2f}",
                "currency": "USD",
            }
        )
    write_csv(folder / "customers.csv", customers)
    write_csv(folder / "orders.csv", orders)


def make_shop_sqlite(rng: random.Random) -> None:
    """Write shop_sqlite/shop.sqlite with products and inventory tables."""
    path = PIPELINES / "shop_sqlite" / "shop.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".sqlite.tmp")
    tmp.unlink(missing_ok=True)
    products = []
    for category, names in CATEGORIES.items():
        for name in names:
            for size in SIZES:
                product_id = len(products) + 1
                products.append(
                    (
                        product_id,
                        f"{category[:3].upper()}-{product_id:04d}",
                        f"{name} ({size})",
                        category,
                        round(rng.uniform(3.0, 180.0), 2),
                        int(rng.random() > 0.1),
                    )
                )
    # Four categories x five names x two sizes make 40; seasonal items top it up to 50.
    for season in ["Winter", "Spring", "Summer", "Autumn", "Holiday"]:
        for name in ["Blend", "Gift Box"]:
            product_id = len(products) + 1
            products.append(
                (
                    product_id,
                    f"SEA-{product_id:04d}",
                    f"{season} {name}",
                    "seasonal",
                    round(rng.uniform(8.0, 60.0), 2),
                    int(rng.random() > 0.3),
                )
            )
    inventory = []
    stamp = datetime(2024, 3, 31, 23, 0, tzinfo=UTC)
    for product_id, *_ in products:
        for code in WAREHOUSE_CODES:
            counted = stamp - timedelta(minutes=rng.randrange(60 * 24 * 7))
            inventory.append(
                (
                    len(inventory) + 1,
                    product_id,
                    code,
                    rng.randint(0, 500),
                    rng.choice([10, 20, 50]),
                    counted.strftime("%Y-%m-%d %H:%M:%S"),
                )
            )
    con = sqlite3.connect(tmp)
    try:
        con.executescript(
            """
            CREATE TABLE products (
                product_id INTEGER PRIMARY KEY,
                sku TEXT NOT NULL UNIQUE,
                name TEXT NOT NULL,
                category TEXT NOT NULL,
                unit_price REAL NOT NULL,
                active INTEGER NOT NULL
            );
            CREATE TABLE inventory (
                inventory_id INTEGER PRIMARY KEY,
                product_id INTEGER NOT NULL REFERENCES products (product_id),
                warehouse_code TEXT NOT NULL,
                quantity INTEGER NOT NULL,
                reorder_level INTEGER NOT NULL,
                counted_at TEXT NOT NULL,
                UNIQUE (product_id, warehouse_code)
            );
            """
        )
        con.executemany("INSERT INTO products VALUES (?, ?, ?, ?, ?, ?)", products)
        con.executemany("INSERT INTO inventory VALUES (?, ?, ?, ?, ?, ?)", inventory)
        con.commit()
        con.execute("VACUUM")
    finally:
        con.close()
    tmp.replace(path)


def make_shop_events(rng: random.Random, per_day: int = 30) -> None:
    """Write shop_events/events.sqlite: storefront events with a timestamp, for daily loads."""
    path = PIPELINES / "shop_events" / "events.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".sqlite.tmp")
    tmp.unlink(missing_ok=True)
    events = []
    day = QUARTER_START
    while day < QUARTER_END:
        for _ in range(rng.randint(per_day // 2, per_day * 3 // 2)):
            ts = random_instant(rng, day, day + timedelta(days=1))
            kind = rng.choices(["view", "cart", "purchase"], weights=[70, 20, 10])[0]
            amount = round(rng.uniform(5.0, 120.0), 2) if kind == "purchase" else None
            events.append(
                (
                    len(events) + 1,
                    f"s{rng.randrange(10**6):06d}",
                    kind,
                    rng.randint(1, 50),
                    amount,
                    ts.strftime("%Y-%m-%d %H:%M:%S"),
                )
            )
        day += timedelta(days=1)
    con = sqlite3.connect(tmp)
    try:
        con.executescript(
            """
            CREATE TABLE events (
                event_id INTEGER PRIMARY KEY,
                session_id TEXT NOT NULL,
                event_type TEXT NOT NULL,
                product_id INTEGER NOT NULL,
                amount REAL,
                event_ts TEXT NOT NULL
            );
            CREATE INDEX events_ts ON events (event_ts);
            """
        )
        con.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", events)
        con.commit()
        con.execute("VACUUM")
    finally:
        con.close()
    tmp.replace(path)


def main() -> None:
    """Regenerate all example data files."""
    # One generator per dataset so changing one leaves the others' bytes alone.
    make_github(random.Random(f"{SEED}:github"))
    make_csv_orders(random.Random(f"{SEED}:csv_orders"))
    make_shop_sqlite(random.Random(f"{SEED}:shop_sqlite"))
    make_shop_events(random.Random(f"{SEED}:shop_events"))
    for path in sorted(PIPELINES.rglob("*")):
        if path.is_file() and path.suffix in {".jsonl", ".csv", ".sqlite"}:
            print(f"{path.relative_to(PIPELINES)}  {path.stat().st_size:>8} bytes")


if __name__ == "__main__":
    main()
