#!/usr/bin/env python
"""What reading the pipelines repo as untrusted input costs: a full refresh before and after.

    .venv/bin/python bench/bench_hardening.py --before REV [--size 1000] [--repeats 5]

The synthetic repo of bench_discovery.py (N pipelines, half dlt, half Sling) is refreshed from
scratch (clone, worktree, discovery of every folder, no worker running) by two versions of
elt_repo: the commit REV, checked out into a temporary Git worktree of this checkout, and the
working tree. Each refresh runs in a fresh interpreter that imports the version under test, and
is timed inside it, so interpreter start-up is not counted. The cases alternate repeat by
repeat, so machine noise hits both alike; the ratio is after / before.
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
from _timing import Result, RssSampler, report  # noqa: E402
from bench_discovery import make_repo  # noqa: E402

# Runs in the interpreter under test: the elt_repo on PYTHONPATH is the version measured.
TIMED_REFRESH = """
import json, os, sys, time
from pathlib import Path
from elt_repo.refresh import refresh
from elt_repo.settings import load_settings
import elt_repo
repo, state = Path(sys.argv[1]), Path(sys.argv[2])
env = {**os.environ, "ELT_REPO_URL": f"file://{repo}", "ELT_STATE_DIR": str(state)}
settings = load_settings(env, project_dir=state.parent)
started = time.perf_counter()
result = refresh(settings)
seconds = time.perf_counter() - started
assert result.error is None and not result.manifest.errors, result.manifest.errors[:3]
print(json.dumps({"seconds": seconds, "pipelines": len(result.manifest.pipelines),
                  "package": str(Path(elt_repo.__file__).parent)}))
"""


def timed(tree: Path, repo: Path, state: Path) -> tuple[float, int]:
    """One fresh refresh by the elt_repo in `tree`: its seconds and the pipelines found."""
    subprocess.run(["rm", "-rf", str(state)], check=True)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env = {k: v for k, v in env.items() if not k.startswith("ELT_") or k == "ELT_PROJECT_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", TIMED_REFRESH, str(repo), str(state)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"refresh by {tree} failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(out["package"]).resolve() == (tree / "elt_repo").resolve(), out["package"]
    return out["seconds"], out["pipelines"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the commit to compare against")
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        before = base / "before"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(before), args.before],
            check=True,
        )
        try:
            repo = make_repo(base / "repo", args.size)
            trees = {f"before ({args.before[:10]}, baseline)": before, "after (working tree)": ROOT}
            results = {name: Result() for name in trees}
            found = set()
            for _ in range(args.repeats):
                for name, tree in trees.items():
                    with RssSampler("children") as sampler:
                        seconds, pipelines = timed(tree, repo, base / "state")
                    results[name].samples.append(seconds)
                    results[name].peak_rss = max(results[name].peak_rss, sampler.peak)
                    found.add(pipelines)
            assert found == {args.size}, found  # both found every pipeline, every time
            report(f"full refresh of N={args.size}, in process", results, next(iter(trees)))
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=False
            )


if __name__ == "__main__":
    main()
