#!/usr/bin/env python
"""The load path: N rows through elt_repo's dlt and Sling assets, against the same loads run plainly.

    .venv/bin/python bench/bench_load_path.py [--rows 1000000] [--repeats 3]

One deterministic CSV of N rows (id, name, value, ts). Cases, interleaved, each one subprocess
(its peak RSS is that of its whole process tree):

- dlt, dicts: the pipeline's resource reads the CSV with the csv module and yields dicts (in
  pages of 10,000). `python plain_dlt.py` (dlt.pipeline + run, the same source function, the
  same loader_file_format as elt_repo, into DuckDB) against
  `dagster asset materialize -m elt_repo.definitions --select bench_dicts/rows`.
- dlt, Arrow: the same, but the resource yields pyarrow record batches read from the CSV, so
  dlt's normalize step only moves the parquet files it got (it does not touch the rows).
- Sling: `sling run -r replication.yaml` (the binary, DuckDB CLI and connections elt_repo
  uses) against `dagster asset materialize ... --select bench_sling/rows`.
- The floor: DuckDB's own `CREATE TABLE t AS SELECT * FROM read_csv(...)`, python duckdb.

The elt_repo cases go through a user's real path: a file:// Git repo with three pipeline
folders (dagster.yaml + pipeline.py, dagster.yaml + replication.yaml), one `refresh()` (in a
process of its own, so no discovery worker outlives it as a child of this one), then every
repeat runs the dagster CLI against a temp DAGSTER_HOME with this repo's dagster.yaml.
Every run of every case starts from an empty warehouse: its DuckDB file (and, for the plain
dlt script, its pipelines dir) is deleted first, so each repeat is a first load, comparable
with the others. elt_repo's dlt state dir is kept, as in a deployment (dagster-dlt drops the
local state before each run and restores it from the, empty, destination). Every run's row
count is read back from DuckDB and must equal N; deleting and counting are inside the timed
region (a few ms, the same for every case). Write disposition: replace (Sling: full-refresh).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))
import duckdb  # noqa: E402
from _timing import (  # noqa: E402
    Result,
    add_lane_arguments,
    in_lane,
    measure,
    report,
    run_lanes,
    save_lane,
    tree_rss,
)
from bench_discovery import git  # noqa: E402

from elt_repo.settings import load_settings  # noqa: E402
from elt_repo.tool_env import duckdb_cli, sling_binary, sling_environment  # noqa: E402

PY = sys.executable
DAGSTER = str(Path(PY).with_name("dagster"))

# The pipeline module committed into the pipelines repo, and imported as is by the plain script.
PIPELINE_PY = '''"""Rows of a CSV file (id, name, value, ts), as dicts or as Arrow record batches."""

import csv
from datetime import datetime

import dlt

PAGE = 10_000


@dlt.source
def rows_source(csv_path: str, as_arrow: bool = False):
    @dlt.resource(name="rows", write_disposition="replace")
    def rows():
        if as_arrow:
            from pyarrow import csv as pa_csv

            options = pa_csv.ReadOptions(block_size=16 << 20)
            yield from pa_csv.open_csv(csv_path, read_options=options)
            return
        with open(csv_path, newline="") as f:
            reader = csv.reader(f)
            next(reader)
            page = []
            for id_, name, value, ts in reader:
                page.append(
                    {
                        "id": int(id_),
                        "name": name,
                        "value": float(value),
                        "ts": datetime.fromisoformat(ts),
                    }
                )
                if len(page) == PAGE:
                    yield page
                    page = []
            if page:
                yield page

    return rows
'''

# The same source as a plain dlt script, the way one runs it without elt_repo.
PLAIN_DLT = '''"""python plain_dlt.py FOLDER NAME DB PIPELINES_DIR ARGS_JSON"""

import json
import sys

import dlt

folder, name, db, pipelines_dir, args = sys.argv[1:]
sys.path.insert(0, folder)
from pipeline import rows_source  # noqa: E402

pipeline = dlt.pipeline(
    pipeline_name=name,
    destination=dlt.destinations.duckdb(credentials=db),
    dataset_name=name,
    pipelines_dir=pipelines_dir,
)
info = pipeline.run(rows_source(**json.loads(args)), loader_file_format={fmt!r})
info.raise_on_failed_jobs()
'''

REFRESH = """from elt_repo.refresh import refresh
from elt_repo.settings import load_settings

result = refresh(load_settings())
if result.error or result.manifest.errors:
    raise SystemExit(f"refresh: {result.error} {result.manifest.errors}")
"""

FLOOR = """import sys

import duckdb

db, csv_path = sys.argv[1:]
with duckdb.connect(db) as con:
    con.execute("CREATE OR REPLACE TABLE t AS SELECT * FROM read_csv(?)", [csv_path])
"""


def write_csv(path: Path, n: int) -> None:
    """N deterministic rows: id, name, value, ts (one second apart from 2024-01-01)."""
    start = datetime(2024, 1, 1)
    with path.open("w", newline="") as f:
        f.write("id,name,value,ts\n")
        chunk = []
        for i in range(n):
            ts = (start + timedelta(seconds=i)).isoformat(sep=" ")
            chunk.append(f"{i},user {i % 10_000},{(i * 37) % 100_000 / 100},{ts}\n")
            if len(chunk) == 100_000:
                f.writelines(chunk)
                chunk = []
        f.writelines(chunk)


def make_repo(origin: Path, csv_path: Path) -> None:
    """Three pipelines over the same CSV: dlt dicts, dlt Arrow, Sling."""
    for name, as_arrow in (("bench_dicts", False), ("bench_arrow", True)):
        folder = origin / "pipelines" / name
        folder.mkdir(parents=True)
        (folder / "pipeline.py").write_text(PIPELINE_PY)
        args = json.dumps({"csv_path": str(csv_path), "as_arrow": as_arrow})
        (folder / "dagster.yaml").write_text(
            f"description: bench, the CSV as {'Arrow' if as_arrow else 'dicts'}\n"
            f"dlt:\n  source: pipeline.py:rows_source\n  args: {args}\n"
        )
    folder = origin / "pipelines" / "bench_sling"
    folder.mkdir(parents=True)
    (folder / "dagster.yaml").write_text("description: bench, the CSV by Sling\ntool: sling\n")
    (folder / "replication.yaml").write_text(
        "source: LOCAL\ntarget: WAREHOUSE\n"
        "defaults: {mode: full-refresh, object: 'bench_sling.{stream_file_name}'}\n"
        f"streams:\n  'file://{csv_path}': {{}}\n"
    )
    subprocess.run(["git", "init", "-q", "-b", "main", str(origin)], check=True)
    git(origin, "add", "-A")
    git(origin, "commit", "-qm", "bench pipelines")


def count(db: Path, table: str) -> int:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(f"select count(*) from {table}").fetchone()[0]


def forget(*paths: Path) -> None:
    """Delete DuckDB files (with their WAL) and state dirs, so the next run starts empty."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        for p in (path, path.with_name(path.name + ".wal")):
            p.unlink(missing_ok=True)


def run(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
    with log.open("w") as out:
        code = subprocess.run(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if code.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-40:])
        raise SystemExit(f"{' '.join(argv)} failed ({code.returncode}):\n{tail}")


def dlt_steps(name: str, pipelines_dir: Path) -> str:
    """extract / normalize / load seconds of the pipeline's last run, from dlt's own trace."""
    import dlt

    trace = dlt.attach(pipeline_name=name, pipelines_dir=str(pipelines_dir)).last_trace
    steps = {
        s.step: (s.finished_at - s.started_at).total_seconds()
        for s in trace.steps
        if s.step in ("extract", "normalize", "load")
    }
    return "  ".join(f"{step} {seconds:6.2f}s" for step, seconds in steps.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    add_lane_arguments(parser)
    args = parser.parse_args()
    n = args.rows
    from elt_repo.defs.dlt.assets import LOADER_FILE_FORMAT

    # the plain run, the elt_repo asset (Dagster's default multiprocess executor), and the
    # same asset with ELT_EXECUTOR=in_process (no step subprocess)
    pairs = {
        "dicts": ("dlt script, dicts", "elt_repo dlt asset, dicts"),
        "arrow": ("dlt script, Arrow", "elt_repo dlt asset, Arrow"),
        "sling": ("sling run", "elt_repo Sling asset"),
    }
    names = {k: (plain, asset, f"{asset}, in_process") for k, (plain, asset) in pairs.items()}
    floor_name = "DuckDB read_csv (floor)"
    if args.lanes > 1 and args.lane is None:
        results, extras = run_lanes(args.lanes)
        size = extras[0]["size"]
        steps = {label: line for extra in extras for label, line in extra["steps"].items()}
    else:
        results, size, steps = measure_cases(args, names, floor_name)
        if args.lane is not None:
            return  # the first process reports

    for title, trio in (
        ("dlt, dicts: elt_repo asset against the plain script", names["dicts"]),
        ("dlt, Arrow: elt_repo asset against the plain script", names["arrow"]),
        ("Sling: elt_repo asset against `sling run`", names["sling"]),
    ):
        report(f"{title}, {size}", {k: results[k] for k in trio}, trio[0])
    report(f"Every case against the physical floor, {size}", results, floor_name)

    print("\nrows/s (rows / median)")
    for name, r in results.items():
        print(f"  {name:<52} {n / r.median:>12,.0f}")

    print("\nelt_repo against the plain run (target <= x1.10)")
    for plain, *assets in names.values():
        for asset in assets:
            a, p = results[asset].median, results[plain].median
            verdict = "met" if a / p <= 1.10 else "MISSED"
            print(f"  {asset:<52} x{a / p:5.2f}  {a - p:+7.2f}s  {verdict}")

    dicts, arrow = results[names["dicts"][0]].median, results[names["arrow"][0]].median
    print(f"\ndlt settings elt_repo sets: loader_file_format={LOADER_FILE_FORMAT!r}")
    print("  (against dlt's default insert_values: bench/bench_loader_format.py)")
    print(f"  yielding Arrow instead of dicts, plain script: x{arrow / dicts:.2f} the time")

    print("\ndlt's steps in the last repeat (from its trace)")
    for label in (*names["dicts"][:2], *names["arrow"][:2]):
        print(f"  {label:<30} {steps[label]}")


def measure_cases(
    args: argparse.Namespace, names: dict[str, tuple[str, str, str]], floor_name: str
) -> tuple[dict[str, Result], str, dict[str, str]]:
    """Set up and run the cases (a lane: its share); (results, the size, dlt's step times)."""
    n = args.rows
    from elt_repo.defs.dlt.assets import LOADER_FILE_FORMAT

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        csv_path = tmp / "data" / "rows.csv"
        csv_path.parent.mkdir()
        write_csv(csv_path, n)
        origin = tmp / "origin"
        make_repo(origin, csv_path)
        logs = tmp / "logs"
        logs.mkdir()

        # elt_repo: settings as a deployment has them, one refresh, a temp DAGSTER_HOME.
        warehouse = tmp / "warehouse.duckdb"
        home = tmp / "dagster_home"
        home.mkdir()
        shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
        elt_env = {
            **os.environ,
            "ELT_REPO_URL": f"file://{origin}",
            "ELT_LOCAL_ROOTS": str(csv_path.parent),  # the CSV is on the host, not in the repo
            "ELT_STATE_DIR": str(tmp / "state"),
            "ELT_WAREHOUSE": str(warehouse),
            "DAGSTER_HOME": str(home),
        }
        settings = load_settings(elt_env, project_dir=ROOT)
        # refresh() in a process of its own: dlt discovery's inspector workers must not stay
        # children of this one, where they would count in every case's peak RSS.
        run([PY, "-c", REFRESH], elt_env, tmp, logs / "refresh.log")
        assert tree_rss(os.getpid(), include_self=False) == 0, "a child process is still running"

        def materialize(key: str, table: str, executor: str = "multiprocess") -> Callable[[], None]:
            env = {**elt_env, "ELT_EXECUTOR": executor}

            def case() -> None:
                forget(warehouse)
                argv = [DAGSTER, "asset", "materialize", "-m", "elt_repo.definitions"]
                run([*argv, "--select", key], env, tmp, logs / "dagster.log")
                assert count(warehouse, table) == n, (key, count(warehouse, table))

            return case

        # The plain runs: same source code, the same loader_file_format, same binaries.
        plain_db = tmp / "plain.duckdb"
        script = tmp / "plain_dlt.py"
        script.write_text(PLAIN_DLT.format(fmt=LOADER_FILE_FORMAT))
        plain_env = {
            **os.environ,
            "DLT_DATA_DIR": str(tmp / "plain_dlt_data"),
            "RUNTIME__DLTHUB_TELEMETRY": "false",
        }

        def plain_dlt(name: str, as_arrow: bool) -> Callable[[], None]:
            folder = origin / "pipelines" / name
            pipelines_dir = tmp / "plain_pipelines" / name
            source_args = json.dumps({"csv_path": str(csv_path), "as_arrow": as_arrow})

            def case() -> None:
                forget(plain_db, pipelines_dir)
                argv = [PY, str(script), str(folder), name, str(plain_db), str(pipelines_dir)]
                run([*argv, source_args], plain_env, tmp, logs / "plain_dlt.log")
                assert count(plain_db, f"{name}.rows") == n, count(plain_db, f"{name}.rows")

            return case

        sling_env = {
            **os.environ,
            **sling_environment(tmp / "plain_sling_state"),
            "WAREHOUSE": json.dumps({"type": "duckdb", "instance": str(plain_db)}),
        }
        sling_env.setdefault("DUCKDB_PATH", duckdb_cli() or "")
        binary = os.environ.get("SLING_BINARY") or sling_binary()
        assert binary, "no Sling binary: run scripts/bootstrap.sh"
        replication = origin / "pipelines" / "bench_sling" / "replication.yaml"

        def sling_run() -> None:
            forget(plain_db)
            run([binary, "run", "-r", str(replication)], sling_env, tmp, logs / "sling.log")
            assert count(plain_db, "bench_sling.rows") == n, count(plain_db, "bench_sling.rows")

        floor_db = tmp / "floor.duckdb"
        floor_script = tmp / "floor.py"
        floor_script.write_text(FLOOR)

        def floor() -> None:
            forget(floor_db)
            run(
                [PY, str(floor_script), str(floor_db), str(csv_path)],
                os.environ.copy(),
                tmp,
                logs / "floor.log",
            )
            assert count(floor_db, "t") == n, count(floor_db, "t")

        cases: dict[str, Callable[[], None]] = {}
        groups: dict[str, int] = {}  # a lane runs a kind's three cases, as one process would
        for group, (kind, folder, as_arrow) in enumerate(
            (
                ("dicts", "bench_dicts", False),
                ("arrow", "bench_arrow", True),
                ("sling", "bench_sling", None),
            )
        ):
            plain, asset, in_process = names[kind]
            cases[plain] = sling_run if as_arrow is None else plain_dlt(folder, as_arrow)
            cases[asset] = materialize(f"{folder}/rows", f"{folder}.rows")
            cases[in_process] = materialize(f"{folder}/rows", f"{folder}.rows", "in_process")
            groups.update(dict.fromkeys(names[kind], group))
        cases[floor_name] = floor
        groups[floor_name] = len(names)
        results = measure(in_lane(cases, groups, args), args.repeats, rss="children")
        size = f"{n:,} rows, {csv_path.stat().st_size / 2**20:,.1f} MiB of CSV"
        steps = {
            label: dlt_steps(name, pipelines_dir)
            for name, pipelines_dir, label in (
                ("bench_dicts", tmp / "plain_pipelines" / "bench_dicts", names["dicts"][0]),
                ("bench_dicts", settings.dlt_dir, names["dicts"][1]),
                ("bench_arrow", tmp / "plain_pipelines" / "bench_arrow", names["arrow"][0]),
                ("bench_arrow", settings.dlt_dir, names["arrow"][1]),
            )
            if label in results  # in a lane: the cases it ran
        }
        if args.lane is not None:
            save_lane(args, list(cases), results, size=size, steps=steps)
    return results, size, steps


if __name__ == "__main__":
    main()
