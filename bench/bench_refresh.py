#!/usr/bin/env python
"""The sensor's cost per tick: against `git ls-remote`, and an unchanged repo against a refresh.

    .venv/bin/python bench/bench_refresh.py [--repeats 7]

Also times loading the code location against a bare `import dagster` in a fresh interpreter.
Uses a file:// copy of the bundled examples, and for the ticks also a synthetic repo of
--pipelines pipelines (bench_discovery.make_repo), so it runs offline.
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
from bench_discovery import make_repo  # noqa: E402
from dagster import DagsterInstance, build_sensor_context  # noqa: E402

from elt_repo.defs.sensors import repo_sensor  # noqa: E402
from elt_repo.discovery.inspector_pool import close_shared_pools  # noqa: E402
from elt_repo.git.example_repo import ensure_example_repo  # noqa: E402
from elt_repo.manifest import ManifestStore  # noqa: E402
from elt_repo.refresh import refresh  # noqa: E402
from elt_repo.settings import Settings, load_settings  # noqa: E402


def tick_bench(
    origin: Path, settings: Settings, commit: str | None, folder: str, what: str, repeats: int
) -> None:
    """Sensor ticks with and without a new commit (one file changed in `folder`)."""
    with DagsterInstance.ephemeral() as instance:
        sensor = repo_sensor(settings, ManifestStore(settings.manifest_path).read())
        state = {"cursor": commit, "n": 0}

        def sensor_tick() -> None:
            context = build_sensor_context(instance=instance, cursor=state["cursor"])
            result = sensor.evaluate_tick(context)
            state["cursor"] = result.cursor or state["cursor"]

        def commit_then_tick() -> None:
            state["n"] += 1
            (origin / "pipelines" / folder / "bench.txt").write_text(f"{state['n']}\n")
            git = ["git", "-C", str(origin)]
            subprocess.run([*git, "add", "-A"], check=True)
            subprocess.run([*git, "commit", "-q", "-m", f"bench {state['n']}"], check=True)
            sensor_tick()

        def ls_remote() -> None:
            subprocess.run(
                ["git", "ls-remote", f"file://{origin}", "refs/heads/main"],
                check=True,
                capture_output=True,
            )

        results = measure(
            {
                "git ls-remote (same remote)": ls_remote,
                "sensor tick, no new commit": sensor_tick,
                "sensor tick, new commit (1 folder changed)": commit_then_tick,
            },
            repeats,
        )
    report(f"repo-polling sensor ticks, {what}", results, "git ls-remote (same remote)")
    no_change = results["sensor tick, no new commit"].median
    budget = 2 * results["git ls-remote (same remote)"].median + 0.010
    print(
        f"  no-change tick {no_change * 1000:.1f} ms; target 2 x ls-remote + 10 ms = "
        f"{budget * 1000:.1f} ms: {'met' if no_change <= budget else 'NOT met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--pipelines", type=int, default=1000, help="size of the large repo")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        origin = Path(tmp) / "origin"
        ensure_example_repo(origin)
        env = {**os.environ, "ELT_REPO_URL": f"file://{origin}", "ELT_STATE_DIR": f"{tmp}/state"}
        settings = load_settings(env, project_dir=ROOT)
        commit = refresh(settings).manifest.commit

        def full_refresh() -> None:
            store = ManifestStore(settings.manifest_path)
            store.path.unlink(missing_ok=True)
            store.previous_path.unlink(missing_ok=True)  # else read() falls back to it
            close_shared_pools()  # as a new deployment: no inspector worker running yet
            refresh(settings)

        medians = measure(
            {
                "full refresh (no manifest: fetch + discover all)": lambda: full_refresh(),
                "refresh, same commit (fetch, every folder reused)": lambda: refresh(settings),
                "unchanged repo (ls-remote, skip)": lambda: refresh(settings, known_commit=commit),
            },
            args.repeats,
        )
        report(
            "refresh of the bundled examples",
            medians,
            "full refresh (no manifest: fetch + discover all)",
        )

        # The repo-polling sensor's ticks, against plain `git ls-remote` of the same remote.
        os.environ.pop("ELT_WEBSERVER_URL", None)
        tick_bench(origin, settings, commit, "csv_orders", "the bundled examples", args.repeats)
        big = make_repo(Path(tmp) / f"repo{args.pipelines}", args.pipelines)
        big_env = {**env, "ELT_REPO_URL": f"file://{big}", "ELT_STATE_DIR": f"{tmp}/state-big"}
        big_settings = load_settings(big_env, project_dir=ROOT)
        big_commit = refresh(big_settings).manifest.commit
        tick_bench(
            big, big_settings, big_commit, "p0001", f"{args.pipelines} pipelines", args.repeats
        )

        close_shared_pools()  # its workers would count in the children's RSS below

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
            rss="children",
        )
        report("code location load, fresh interpreter", medians, "import dagster")


if __name__ == "__main__":
    main()
