#!/usr/bin/env python
"""Discovery of a Sling `schema.*` replication from PostgreSQL, against `sling conns discover`.

    .venv/bin/python bench/bench_sling_discovery.py [--tables 50] [--repeats 5]

A throwaway PostgreSQL server on 127.0.0.1 (tests/postgres_server.py) holds `--tables` tables
in schema `shop`. Baseline: `sling conns discover PG --pattern 'shop.*'` alone, the listing
Sling does itself before it runs the wildcard. Against it: elt_repo's discovery of a pipelines
folder holding that one replication (`shop.*` into `main.{stream_schema}_{stream_table}`):
the walk, the schemas, the listing and the filling of every stream's object. Each discovery
must find exactly the `--tables` streams.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))
from _timing import measure, report  # noqa: E402

from elt_repo.discovery.sling_streams import connection_configs  # noqa: E402
from elt_repo.discovery.walk import discover  # noqa: E402
from elt_repo.tool_env import sling_binary, sling_environment  # noqa: E402
from elt_repo.warehouse import DUCKDB, Warehouse  # noqa: E402
from tests.postgres_server import PostgresServer  # noqa: E402

REPLICATION = "source: PG\ntarget: WAREHOUSE\nstreams:\n  shop.*:\n    object: '{obj}'\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with PostgresServer() as pg, tempfile.TemporaryDirectory() as tmp:
        pg.execute("create schema shop")
        for n in range(args.tables):
            pg.execute(f"create table shop.t{n:03d} (id int primary key, name text)")
        conn = {
            "type": "postgres",
            "host": pg.host,
            "port": pg.port,
            "user": pg.user,
            "password": pg.password,
            "database": pg.dbname,
            "sslmode": "disable",
        }
        folder = Path(tmp) / "repo" / "pipelines" / "shop"
        folder.mkdir(parents=True)
        (folder / "dagster.yaml").write_text(
            f"tool: sling\nsling: {{connections: {{PG: {json.dumps(conn)}}}}}\n"
        )
        obj = "main.{stream_schema}_{stream_table}"
        (folder / "replication.yaml").write_text(REPLICATION.format(obj=obj))
        shared = connection_configs({}, {}, Warehouse(DUCKDB, path=Path(tmp) / "warehouse.duckdb"))
        binary = os.environ.get("SLING_BINARY") or sling_binary() or "sling"
        sling_env = {**sling_environment(Path(tmp) / "sling"), "PG": json.dumps(conn)}
        sling_env["PATH"] = os.environ.get("PATH", "")
        command = [binary, "conns", "discover", "PG", "--pattern", "shop.*"]

        def sling_alone() -> None:
            out = subprocess.run(command, env=sling_env, capture_output=True, text=True)
            assert out.returncode == 0, out.stderr[-2000:]
            assert all(f"t{n:03d}" in out.stdout for n in range(args.tables)), out.stdout

        def elt_repo_discovery() -> None:
            found = discover(Path(tmp) / "repo", "pipelines", dict(os.environ), connections=shared)
            assert found.errors == (), found.errors
            (pipeline,) = found.pipelines
            assert len(pipeline.sling.streams) == args.tables

        results = measure(
            {
                "sling conns discover 'shop.*'": sling_alone,
                "elt_repo discovery of the replication": elt_repo_discovery,
            },
            args.repeats,
            rss="children",
        )
        report(
            f"Sling wildcard over {args.tables} Postgres tables",
            results,
            "sling conns discover 'shop.*'",
        )


if __name__ == "__main__":
    main()
