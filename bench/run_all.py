#!/usr/bin/env python
"""Run every benchmark, one after another: the numbers that go into BENCHMARKS.md.

.venv/bin/python bench/run_all.py           # the sizes BENCHMARKS.md quotes
.venv/bin/python bench/run_all.py --tiny    # each once at a tiny size (what CI runs)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent

# script -> (arguments for BENCHMARKS.md, arguments for a tiny smoke run). Options only the
# smoke run uses, which keep every case on its real path but give up timing accuracy:
# --no-warmup (no untimed first round), --kill (SIGKILL `dagster dev`, no graceful shutdown)
# and --lanes N (the cases in N processes at once, each with its own setup; _timing.py).
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "bench_loader_format.py": (
        ["--rows", "200000", "--repeats", "3"],
        ["--rows", "200", "--repeats", "1"],
    ),
    "bench_refresh.py": (
        ["--repeats", "9", "--pipelines", "1000"],
        ["--repeats", "1", "--pipelines", "6"],
    ),
    "bench_backfill.py": (["--days", "30", "--repeats", "5"], ["--days", "2", "--repeats", "1"]),
    "bench_discovery.py": (
        ["--sizes", "10", "100", "1000", "--repeats", "5"],
        ["--sizes", "2", "6", "--repeats", "1"],
    ),
    "bench_load_path.py": (
        ["--rows", "1000000", "--repeats", "3"],
        ["--rows", "1000", "--repeats", "1", "--lanes", "3"],
    ),
    "bench_startup.py": (["--repeats", "5"], ["--repeats", "1", "--no-warmup", "--kill"]),
    "bench_definitions.py": (
        ["--sizes", "10", "100", "1000", "--repeats", "5"],
        ["--sizes", "4", "--repeats", "1"],
    ),
    "bench_executors.py": (["--repeats", "5"], ["--repeats", "1", "--runs", "1", "--lanes", "2"]),
    "bench_sling_discovery.py": (
        ["--tables", "50", "--repeats", "5"],
        ["--tables", "3", "--repeats", "1"],
    ),
    "bench_postgres.py": (
        ["--rows", "1000000", "--repeats", "3"],
        ["--rows", "200", "--repeats", "1"],
    ),
    # 66d1315: the last commit before pipelines repos were read as untrusted input (issue 14).
    "bench_hardening.py": (
        ["--before", "66d1315", "--size", "1000", "--repeats", "5"],
        ["--before", "HEAD", "--size", "4", "--repeats", "1"],
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="each benchmark once, tiny inputs")
    parser.add_argument("only", nargs="*", help="run only these scripts")
    args = parser.parse_args()
    failed = []
    for script, (full, tiny) in BENCHMARKS.items():
        if args.only and script not in args.only:
            continue
        argv = [sys.executable, str(BENCH / script), *(tiny if args.tiny else full)]
        print(f"\n=== {' '.join(argv[1:])}", flush=True)
        if subprocess.run(argv, cwd=BENCH.parent).returncode != 0:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
