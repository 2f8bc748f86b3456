#!/usr/bin/env python
"""Loading the code location at scale, against a bare module of the same `AssetSpec`s.

    .venv/bin/python bench/bench_definitions.py [--sizes 10 100 1000] [--repeats 5]

For each N, a synthetic file:// repo of N pipelines (half dlt with 3 resources each, half Sling
with 3 streams each; half of each kind partitioned: dlt by day, Sling by static keys; every
fourth on a cron) is refreshed once, so a manifest is cached. Each case is then a fresh
interpreter that does what a code server does: import the module, resolve its `Definitions` and
serialize the repository snapshot it serves (`RepositorySnap.from_def(defer_snapshots=True)`).

The floor is a generated module that declares the same asset keys, groups and partitions as
plain `AssetSpec`s. Each elt_repo process also checks that no pipeline module was imported:
no module in `sys.modules` comes from the state dir's worktrees or the repo.
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
from bench_discovery import DLT_SOURCE, REPLICATION, git  # noqa: E402

from elt_repo.discovery.inspector_pool import close_shared_pools  # noqa: E402
from elt_repo.refresh import refresh  # noqa: E402
from elt_repo.settings import load_settings  # noqa: E402

DAILY = (
    'partitions: {type: time, time: {start: "2024-01-01", cron_schedule: "0 0 * * *",'
    ' fmt: "%Y-%m-%d"}}\n'
)
STATIC = "partitions: {type: static, static: {partition_keys: [us-east, us-west, eu-central]}}\n"
CRON = 'schedule: {cron_schedule: "0 3 * * *"}\n'

# Runs in the measured interpreter: load, serialize the snapshot, report what was imported.
LOAD = """
import time
t0 = time.perf_counter()
import importlib, json, sys
import dagster
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value
t1 = time.perf_counter()
module = importlib.import_module(sys.argv[1])
t2 = time.perf_counter()
repo = module.defs.get_repository_def()
t3 = time.perf_counter()
snap = RepositorySnap.from_def(repo, defer_snapshots=True)
t4 = time.perf_counter()
snapshot = serialize_value(snap)
t5 = time.perf_counter()
roots = sys.argv[2:]
foreign = sorted(
    name for name, m in list(sys.modules.items())
    if any(str(getattr(m, "__file__", None) or "").startswith(root) for root in roots)
)
print(json.dumps({
    "assets": len(repo.asset_graph.get_all_asset_keys()),
    "bytes": len(snapshot),
    "pipeline_modules": foreign,
    "phases": {
        "import dagster": t1 - t0,
        "import the module (build Definitions)": t2 - t1,
        "resolve the repository": t3 - t2,
        "repository snapshot": t4 - t3,
        "serialize it": t5 - t4,
    },
}))
"""


def make_repo(root: Path, n: int) -> Path:
    """N pipelines: dlt and Sling alternate; half of each partitioned; every fourth on a cron."""
    for i in range(n):
        folder = root / "pipelines" / f"p{i:04d}"
        folder.mkdir(parents=True)
        extra = (CRON if i % 4 == 0 else "") + f"group: g{i % 20:02d}\n"
        if i % 2 == 0:
            (folder / "pipeline.py").write_text(DLT_SOURCE)
            part = DAILY if i % 4 == 2 else ""
            (folder / "dagster.yaml").write_text("dlt: {source: pipeline.py:src}\n" + part + extra)
        else:
            (folder / "replication.yaml").write_text(REPLICATION)
            part = STATIC if i % 4 == 3 else ""
            (folder / "dagster.yaml").write_text("tool: sling\n" + part + extra)
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    git(root, "add", "-A")
    git(root, "commit", "-qm", f"{n} pipelines")
    return root


def floor_module(path: Path, defs_module: str, env: dict[str, str]) -> None:
    """Write a module that declares elt_repo's asset keys, groups and partitions as AssetSpecs."""
    code = f"""
import json
from dagster import DynamicPartitionsDefinition, TimeWindowPartitionsDefinition
import {defs_module} as m
graph = m.defs.resolve_asset_graph()
out = []
for key in graph.get_all_asset_keys():
    node = graph.get(key)
    if not node.is_materializable:
        continue
    p = node.partitions_def
    if isinstance(p, TimeWindowPartitionsDefinition):
        part = ["time", p.cron_schedule, p.start.strftime(p.fmt), p.fmt, p.timezone]
    elif isinstance(p, DynamicPartitionsDefinition):
        part = ["dynamic", p.name]
    else:
        assert p is None, p
        part = None
    out.append([list(key.path), node.group_name, part])
print(json.dumps(out))
"""
    listed = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, check=True, capture_output=True, text=True
    )
    specs = json.loads(listed.stdout.splitlines()[-1])
    parts: dict[str, str] = {}
    lines = []
    for key, group, part in specs:
        arg = ""
        if part:
            name = f"P{len(parts)}"
            if part[0] == "time":
                decl = (
                    f"TimeWindowPartitionsDefinition(cron_schedule={part[1]!r}, start={part[2]!r},"
                    f" fmt={part[3]!r}, timezone={part[4]!r})"
                )
            else:
                decl = f"DynamicPartitionsDefinition(name={part[1]!r})"
            name = parts.setdefault(decl, name)
            arg = f", partitions_def={name}"
        lines.append(f"    AssetSpec({key!r}, group_name={group!r}{arg}),")
    path.write_text(
        "from dagster import AssetSpec, Definitions, DynamicPartitionsDefinition,"
        " TimeWindowPartitionsDefinition\n\n"
        + "".join(f"{name} = {decl}\n" for decl, name in parts.items())
        + "\ndefs = Definitions(assets=[\n"
        + "\n".join(lines)
        + "\n])\n"
    )


def bench_size(base: Path, n: int, repeats: int) -> None:
    repo = make_repo(base / f"repo{n}", n)
    state = base / f"state{n}"
    env = {
        **os.environ,
        "ELT_REPO_URL": f"file://{repo}",
        "ELT_STATE_DIR": str(state),
        "ELT_WAREHOUSE": str(base / "warehouse.duckdb"),
        "PYTHONPATH": os.pathsep.join([str(base), str(ROOT)]),
    }
    env.pop("ELT_WEBSERVER_URL", None)
    result = refresh(load_settings(env, project_dir=ROOT))
    assert result.error is None and not result.manifest.errors, result.manifest.errors
    close_shared_pools()  # else the inspector workers count in the children's RSS
    floor_module(base / f"floor{n}.py", "elt_repo.definitions", env)
    seen: dict[str, dict] = {}

    def load(module: str) -> None:
        out = subprocess.run(
            [sys.executable, "-c", LOAD, module, str(state), str(repo)],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        seen[module] = json.loads(out.stdout.splitlines()[-1])

    floor = f"bare AssetSpec module, N={n}"
    results = measure(
        {
            floor: lambda: load(f"floor{n}"),
            f"elt_repo.definitions, N={n}": lambda: load("elt_repo.definitions"),
        },
        repeats,
        rss="children",
    )
    report(f"load + repository snapshot, N={n} pipelines", results, floor)
    ours, bare = seen["elt_repo.definitions"], seen[f"floor{n}"]
    assert ours["pipeline_modules"] == [], ours["pipeline_modules"]
    assert ours["assets"] >= bare["assets"] >= 3 * n, (ours, bare)
    print("  where the time goes, floor then elt_repo (last run of each; seconds):")
    for phase in ours["phases"]:
        print(f"    {phase:<40} {bare['phases'][phase]:7.3f} {ours['phases'][phase]:7.3f}")
    print(
        f"  assets: elt_repo {ours['assets']} (with health/manifest assets), floor"
        f" {bare['assets']}; snapshot {ours['bytes']:,} B against {bare['bytes']:,} B;"
        " pipeline modules imported by elt_repo: 0"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for n in sorted(args.sizes):
            bench_size(Path(tmp), n, args.repeats)


if __name__ == "__main__":
    main()
