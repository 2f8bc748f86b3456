#!/usr/bin/env python
"""Full refresh and incremental refresh of synthetic pipeline repos of N pipelines.

    .venv/bin/python bench/bench_discovery.py [--sizes 10 100 1000] [--repeats 3]

Each repo has N pipelines: half dlt (3 resources each), half Sling (3 streams each), in a
file:// Git repo. Full refresh: clone, worktree and discovery of every pipeline with no
manifest to reuse. The marginal cost per pipeline is (T(N) - T(smallest)) / (N - smallest).
Incremental: a commit that changes 1 pipeline of the largest repo, then a refresh that
re-discovers only that folder, against a full re-discovery of the same commit; once with the
inspector workers warm (a code server's sensor between commits) and once cold (after a start).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))
from _timing import measure, report  # noqa: E402

from elt_repo.discovery.inspector_pool import close_shared_pools  # noqa: E402
from elt_repo.manifest import ManifestStore  # noqa: E402
from elt_repo.refresh import refresh  # noqa: E402
from elt_repo.settings import Settings, load_settings  # noqa: E402

DLT_SOURCE = """import dlt


@dlt.resource
def orders():
    yield {"id": 1}


@dlt.resource
def customers():
    yield {"id": 1}


@dlt.resource
def items():
    yield {"id": 1}


@dlt.source
def src():
    return orders, customers, items
"""
# Sling refuses a stream with no object, and so does discovery.
REPLICATION = "source: LOCAL\ntarget: WAREHOUSE\nstreams:\n" + "".join(
    f"  file://./data/stream_{i}.csv: {{object: 'raw.stream_{i}'}}\n" for i in range(3)
)


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=b@x", *args],
        check=True,
        capture_output=True,
    )


def make_repo(root: Path, n: int) -> Path:
    """N pipelines, half dlt and half Sling, committed on main."""
    for i in range(n):
        folder = root / "pipelines" / f"p{i:04d}"
        folder.mkdir(parents=True)
        if i % 2 == 0:
            (folder / "pipeline.py").write_text(DLT_SOURCE)
            (folder / "dagster.yaml").write_text("dlt: {source: pipeline.py:src}\n")
        else:
            (folder / "replication.yaml").write_text(REPLICATION)
            (folder / "dagster.yaml").write_text("tool: sling\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    git(root, "add", "-A")
    git(root, "commit", "-qm", f"{n} pipelines")
    return root


def settings_for(repo: Path, state: Path) -> Settings:
    env = {**os.environ, "ELT_REPO_URL": f"file://{repo}", "ELT_STATE_DIR": str(state)}
    return load_settings(env, project_dir=state.parent)


def fresh_refresh(repo: Path, state: Path) -> None:
    """Clone and discover everything: no state, no manifest, no inspector worker running yet
    (as `scripts/refresh.py` on a new deployment)."""
    shutil.rmtree(state, ignore_errors=True)
    close_shared_pools()
    result = refresh(settings_for(repo, state))
    assert result.error is None and not result.manifest.errors, result.manifest.errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sizes = sorted(args.sizes)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        repos = {n: make_repo(base / f"repo{n}", n) for n in sizes}
        medians = measure(
            {
                f"full refresh, N={n}": (lambda n=n: fresh_refresh(repos[n], base / f"state{n}"))
                for n in sizes
            },
            args.repeats,
        )
        report("full refresh (clone + discover all)", medians, f"full refresh, N={sizes[0]}")
        small, large = sizes[0], sizes[-1]
        if large > small:
            per = (
                medians[f"full refresh, N={large}"].median
                - medians[f"full refresh, N={small}"].median
            ) / (large - small)
            print(f"  marginal cost per pipeline (N={small} to N={large}): {per * 1000:.1f} ms")

        # Incremental: one pipeline of the largest repo changes.
        repo, state = repos[large], base / "state-incremental"
        settings = settings_for(repo, state)
        refresh(settings)
        store = ManifestStore(settings.manifest_path)
        counter = {"n": 0}

        def change_one() -> None:
            counter["n"] += 1
            target = repo / "pipelines" / "p0000" / "dagster.yaml"
            target.write_text(f"dlt: {{source: pipeline.py:src}}\nretries: {counter['n']}\n")
            git(repo, "commit", "-qam", f"change {counter['n']}")

        def change_one_then_refresh(cold: bool = False) -> None:
            change_one()
            if cold:
                close_shared_pools()
            result = refresh(settings, known_commit=store.read().commit)
            assert result.reused == large - 1, result.reused

        def change_one_then_full_rediscovery(cold: bool = False) -> None:
            change_one()
            if cold:
                close_shared_pools()
            store.path.unlink(missing_ok=True)
            store.previous_path.unlink(missing_ok=True)  # nothing to reuse
            assert refresh(settings).reused == 0

        # Warm: the repo sensor in a running code server, whose inspector workers stay up for
        # 5 minutes between discoveries. Cold: the first tick after a start or a quiet spell.
        for state_of_workers, cold in (("warm", False), ("cold", True)):
            baseline = f"1 of {large} changed, full re-discovery, {state_of_workers} workers"
            results = measure(
                {
                    baseline: lambda cold=cold: change_one_then_full_rediscovery(cold),
                    f"1 of {large} changed, incremental, {state_of_workers} workers": (
                        lambda cold=cold: change_one_then_refresh(cold)
                    ),
                },
                args.repeats,
            )
            report(f"refresh after a commit, N={large}", results, baseline)
        close_shared_pools()


if __name__ == "__main__":
    main()
