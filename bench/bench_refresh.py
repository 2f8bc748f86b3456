#!/usr/bin/env python
"""The sensor's cost per tick: an unchanged repo (ls-remote only) against a full refresh.

    .venv/bin/python bench/bench_refresh.py [--repeats 7]

Also times loading the code location against a bare `import dagster` in a fresh interpreter.
Uses a file:// copy of the bundled examples, so it runs offline.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))
from _timing import measure, report  # noqa: E402

from elt_repo.example_repo import ensure_example_repo  # noqa: E402
from elt_repo.refresh import refresh  # noqa: E402
from elt_repo.settings import load_settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        origin = Path(tmp) / "origin"
        ensure_example_repo(origin)
        env = {**os.environ, "ELT_REPO_URL": f"file://{origin}", "ELT_STATE_DIR": f"{tmp}/state"}
        settings = load_settings(env, project_dir=ROOT)
        commit = refresh(settings).manifest.commit

        medians = measure(
            {
                "full refresh (fetch + discover)": lambda: refresh(settings),
                "unchanged repo (ls-remote, skip)": lambda: refresh(settings, known_commit=commit),
            },
            args.repeats,
        )
        report("refresh of the bundled examples", medians, "full refresh (fetch + discover)")

        def python(code: str) -> None:
            subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True)

        medians = measure(
            {
                "import dagster": lambda: python("import dagster"),
                "load elt_repo.definitions": lambda: python(
                    "import elt_repo.definitions as d; d.defs.resolve_asset_graph()"
                ),
            },
            args.repeats,
        )
        report("code location load, fresh interpreter", medians, "import dagster")


if __name__ == "__main__":
    main()
