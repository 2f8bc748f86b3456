#!/usr/bin/env python
"""A Postgres warehouse against DuckDB: N rows through elt_repo's dlt asset (Arrow) and its Sling
asset into each, as ratios in one run.

    .venv/bin/python bench/bench_postgres.py [--rows 1000000] [--repeats 3]

The CSV, the pipelines repo and the cases of bench/bench_load_path.py: the dlt pipeline whose
resource yields pyarrow record batches, and the Sling replication of the same file; each case is
`dagster asset materialize -m elt_repo.definitions --select <pipeline>/rows`, one subprocess,
interleaved with the others. Two deployments of the same repo: ELT_WAREHOUSE a DuckDB file, and
ELT_WAREHOUSE the URL of a throwaway PostgreSQL server on 127.0.0.1 (tests/postgres_server.py,
fsync off), each with its own state dir, DAGSTER_HOME and one refresh. Every run starts from an
empty warehouse: the DuckDB file is deleted, or the pipeline's schemas are dropped (inside the
timed region, a few ms); its row count is read back from the warehouse and must equal N.

The server runs detached from this process, so that the peak RSS of a case is that of its own
process tree (the dagster CLI, its step, Sling), not the server's; the server's own memory is
not in any case.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))
import psycopg  # noqa: E402
from _timing import measure, report  # noqa: E402
from bench_load_path import REFRESH, count, forget, make_repo, run, write_csv  # noqa: E402

PY = sys.executable
DAGSTER = str(Path(PY).with_name("dagster"))
PIPELINES = {"dlt": "bench_arrow", "sling": "bench_sling"}
LABELS = {"dlt": "dlt asset, Arrow", "sling": "Sling asset"}

# Starts the server in a grandchild that outlives its parent, so it is no child of the benchmark;
# it prints the URL and stops the server when the benchmark closes its stdin (or exits).
SERVER = """import json, os, sys
sys.path.insert(0, sys.argv[1])
if os.fork():
    os._exit(0)
os.setsid()
from tests.postgres_server import PostgresServer
with PostgresServer() as pg:
    print(json.dumps({"url": pg.url}), flush=True)
    sys.stdin.read()
"""


@contextmanager
def detached_postgres() -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1, not a descendant of this process: its URL."""
    proc = subprocess.Popen(
        [PY, "-c", SERVER, str(ROOT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit("the PostgreSQL server did not start (scripts/install_postgres.sh)")
        proc.wait()  # the parent of the server's process has exited by now
        yield json.loads(line)["url"]
    finally:
        proc.stdin.close()  # the server stops and removes its directory


def pg_count(url: str, table: str) -> int:
    with psycopg.connect(url) as con:
        return con.execute(f"select count(*) from {table}").fetchone()[0]


def pg_forget(url: str, schemas: list[str]) -> None:
    with psycopg.connect(url, autocommit=True) as con:
        for schema in schemas:
            con.execute(f'drop schema if exists "{schema}" cascade')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = args.rows
    cases_by_tool: dict[str, list[str]] = {tool: [] for tool in PIPELINES}

    with tempfile.TemporaryDirectory() as tmp_name, detached_postgres() as url:
        tmp = Path(tmp_name)
        csv_path = tmp / "data" / "rows.csv"
        csv_path.parent.mkdir()
        write_csv(csv_path, n)
        origin = tmp / "origin"
        make_repo(origin, csv_path)
        logs = tmp / "logs"
        logs.mkdir()
        duckdb_file = tmp / "warehouse.duckdb"

        def deployment(kind: str, warehouse: str) -> dict[str, str]:
            home = tmp / kind / "dagster_home"
            home.mkdir(parents=True)
            shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
            env = {
                **os.environ,
                "ELT_REPO_URL": f"file://{origin}",
                "ELT_LOCAL_ROOTS": str(csv_path.parent),
                "ELT_STATE_DIR": str(tmp / kind / "state"),
                "ELT_WAREHOUSE": warehouse,
                "DAGSTER_HOME": str(home),
            }
            run([PY, "-c", REFRESH], env, tmp, logs / f"refresh_{kind}.log")
            return env

        envs = {"DuckDB": deployment("duckdb", str(duckdb_file)), "Postgres": deployment("pg", url)}

        def materialize(tool: str, kind: str) -> Callable[[], None]:
            pipeline = PIPELINES[tool]
            table = f"{pipeline}.rows"

            def case() -> None:
                if kind == "DuckDB":
                    forget(duckdb_file)
                else:
                    pg_forget(url, [pipeline, f"{pipeline}_staging"])
                argv = [DAGSTER, "asset", "materialize", "-m", "elt_repo.definitions"]
                run([*argv, "--select", f"{pipeline}/rows"], envs[kind], tmp, logs / "run.log")
                rows = count(duckdb_file, table) if kind == "DuckDB" else pg_count(url, table)
                assert rows == n, (tool, kind, rows)

            return case

        cases: dict[str, Callable[[], None]] = {}
        for tool in PIPELINES:
            for kind in ("DuckDB", "Postgres"):
                name = f"elt_repo {LABELS[tool]}, {kind}"
                cases[name] = materialize(tool, kind)
                cases_by_tool[tool].append(name)
        results = measure(cases, args.repeats, rss="children")
        size = f"{n:,} rows, {csv_path.stat().st_size / 2**20:,.1f} MiB of CSV"

    for tool, (duck, pg) in cases_by_tool.items():
        title = "dlt, Arrow" if tool == "dlt" else "Sling"
        pair = {duck: results[duck], pg: results[pg]}
        report(f"{title}: a Postgres warehouse against DuckDB, {size}", pair, duck)
    print("\nrows/s (rows / median)")
    for name, r in results.items():
        print(f"  {name:<52} {n / r.median:>12,.0f}")


if __name__ == "__main__":
    main()
