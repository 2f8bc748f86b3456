#!/usr/bin/env python
"""dlt into DuckDB: the parquet loader file format against dlt's default insert_values.

    .venv/bin/python bench/bench_loader_format.py [--rows 100000] [--repeats 3]

Backs the choice of LOADER_FILE_FORMAT in elt_repo/defs/dlt/assets.py.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import dlt

sys.path.insert(0, str(Path(__file__).parent))
from _timing import measure, report  # noqa: E402


def rows(n: int):
    for i in range(n):
        yield {
            "id": i,
            "name": f"user {i}",
            "score": i * 0.5,
            "active": i % 3 == 0,
            "country": "DE",
        }


def load(tmp: Path, fmt: str | None, n: int) -> None:
    run_dir = Path(tempfile.mkdtemp(dir=tmp))
    pipeline = dlt.pipeline(
        pipeline_name="bench",
        destination=dlt.destinations.duckdb(credentials=str(run_dir / "bench.duckdb")),
        dataset_name="data",
        pipelines_dir=str(run_dir / "pipelines"),
    )
    kwargs = {"loader_file_format": fmt} if fmt else {}
    pipeline.run(rows(n), table_name="users", **kwargs).raise_on_failed_jobs()
    shutil.rmtree(run_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        medians = measure(
            {
                "insert_values (dlt default)": lambda: load(Path(tmp), None, args.rows),
                "parquet (elt_repo default)": lambda: load(Path(tmp), "parquet", args.rows),
            },
            args.repeats,
        )
    report(
        f"dlt -> DuckDB, {args.rows:,} rows, {args.repeats} repeats",
        medians,
        "insert_values (dlt default)",
    )


if __name__ == "__main__":
    main()
