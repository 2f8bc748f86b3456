#!/usr/bin/env python
"""Start-up: `dagster dev -w workspace.yaml` until GraphQL answers with the examples loaded.

    .venv/bin/python bench/bench_startup.py [--repeats 5]

Three cases, interleaved, each a fresh `dagster dev` process tree (webserver, daemon, code
server) in its own temp DAGSTER_HOME (with the project's dagster.yaml) on its own free port:

- an empty `Definitions()` module, loaded as a python_file from a temp workspace.yaml (baseline);
- this project's workspace.yaml with a cached manifest in ELT_STATE_DIR: the normal restart;
- the same with an empty state dir each time: the first start, whose load of the code location
  clones the repo and discovers every pipeline (bounded by ELT_FIRST_LOAD_TIMEOUT).

The clock runs from starting `dagster dev` until a GraphQL answer (polled every 50 ms) shows the
location LOADED; that answer must list exactly the asset keys that the manifest builds (the
empty module: none), or the benchmark fails. Stopping the process group is not timed (the
smoke run's --kill skips its graceful shutdown), nor is one warm-up round of all three cases.
Peak RSS is the sum over the `dagster dev` process tree while it starts (shared library pages
count once per process). Uses a file:// copy of the bundled examples, so it runs offline.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))
from _timing import Result, RssSampler, report  # noqa: E402
from dagster import Definitions  # noqa: E402

from elt_repo.defs.build import build_definitions  # noqa: E402
from elt_repo.defs.resources import build_resources  # noqa: E402
from elt_repo.defs.sensors import repo_sensor  # noqa: E402
from elt_repo.discovery.inspector_pool import close_shared_pools  # noqa: E402
from elt_repo.git.example_repo import ensure_example_repo  # noqa: E402
from elt_repo.refresh import refresh  # noqa: E402
from elt_repo.settings import load_settings  # noqa: E402
from tests import e2e_helpers as h  # noqa: E402

START_TIMEOUT = 120.0  # seconds from `dagster dev` to the location loaded, per start
POLL = 0.05
EMPTY_LOCATION = "empty"
EMPTY_DEFS = "from dagster import Definitions\n\ndefs = Definitions()\n"
WORKSPACE = ROOT / "workspace.yaml"

# One query per poll: while the location loads, `locationOrLoadError` is null, so it stays cheap;
# the answer that shows it LOADED already carries the asset keys to check.
LOCATION_QUERY = """
{ workspaceOrError { __typename
    ... on Workspace { locationEntries { name loadStatus
        locationOrLoadError { __typename
            ... on PythonError { message }
            ... on RepositoryLocation { repositories { name
                assetNodes { assetKey { path } } } } } } }
    ... on PythonError { message } } }
"""


class StartupFailed(RuntimeError):
    pass


@dataclass
class Case:
    name: str
    workdir: Path  # where `dagster dev` runs (and reads `.env` from)
    workspace: str  # the -w argument
    location: str
    expected: set[tuple[str, ...]]  # the asset keys the loaded location must list
    env: Callable[[str], dict[str, str]]  # run label -> the ELT_* part of the environment


def expected_keys(manifest: Any, settings: Any) -> set[tuple[str, ...]]:
    """The asset keys of the definitions elt_repo.definitions builds from this manifest."""
    defs = Definitions.merge(
        build_definitions(manifest, settings),
        Definitions(sensors=[repo_sensor(settings, manifest)], resources=build_resources(settings)),
    )
    return {tuple(k.path) for k in defs.resolve_asset_graph().get_all_asset_keys()}


def location_entry(gql: h.GraphQL, location: str) -> dict[str, Any] | None:
    """The location's workspace entry, or None while the webserver does not answer with it."""
    try:
        data = gql(LOCATION_QUERY)
    except (urllib.error.URLError, OSError, ValueError, h.GraphQLError):
        return None  # not listening yet, or starting up
    workspace = data["workspaceOrError"]
    if workspace["__typename"] != "Workspace":
        return None
    return next((e for e in workspace["locationEntries"] if e["name"] == location), None)


def loaded_keys(entry: dict[str, Any]) -> set[tuple[str, ...]]:
    loaded = entry["locationOrLoadError"] or {}
    if loaded.get("__typename") != "RepositoryLocation":
        raise StartupFailed(f"location {entry['name']} failed to load: {loaded}")
    return {
        tuple(node["assetKey"]["path"])
        for repo in loaded["repositories"]
        for node in repo["assetNodes"]
    }


def using_home(home: Path) -> dict[int, tuple[int, str]]:
    """Live processes whose environment has DAGSTER_HOME=`home`: pid -> (process group, argv)."""
    marker = f"DAGSTER_HOME={home}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state, _, pgid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
        if state != "Z":
            found[int(entry.name)] = (int(pgid), argv[:120])
    return found


def stop(proc: h.Proc, home: Path, kill: bool = False) -> None:
    """Stop the process group; then kill, by pid, what is left that uses `home`, and wait.

    `kill`: SIGKILL the group at once, not `dagster dev`'s graceful shutdown (3 to 8 s). Its
    discovery workers, in sessions of their own, are then left behind as a matter of course
    (the code server had no chance to stop them), so they are killed without a word."""
    if kill:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.popen.pid, signal.SIGKILL)  # start_new_session: pid = group id
        proc.popen.wait(timeout=10)
    else:
        proc.stop(grace=20)
    deadline, reported = time.monotonic() + 10, set()
    while (left := using_home(home)) and time.monotonic() < deadline:
        for pid, (pgid, argv) in left.items():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            outside = pgid != proc.popen.pid  # e.g. a dlt discovery worker
            if outside and pid not in reported and not kill:
                print(f"  killed {pid}, outside the process group: {argv}", file=sys.stderr)
                reported.add(pid)
        time.sleep(0.1)
    if left:
        print(f"  still running after the stop: {sorted(left.items())}", file=sys.stderr)


def run_once(case: Case, label: str, run_dir: Path, kill: bool = False) -> tuple[float, int]:
    """Start `dagster dev`, wait until the location is LOADED; (seconds until then, peak RSS)."""
    home = run_dir / "dagster_home"
    home.mkdir(parents=True)
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    port = h.free_port()
    env = h.clean_env(
        {
            **case.env(label),
            "DAGSTER_HOME": str(home),
            "DAGSTER_DISABLE_TELEMETRY": "1",
            "DO_NOT_TRACK": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    argv = [str(h.VENV_BIN / "dagster"), "dev", "-w", case.workspace]
    argv += ["-h", "127.0.0.1", "-p", str(port)]
    gql = h.GraphQL(f"http://127.0.0.1:{port}/graphql", timeout=10)
    proc = None
    try:
        with RssSampler("children") as sampler:
            started = time.perf_counter()
            proc = h.start("dagster_dev", argv, env, run_dir, cwd=case.workdir)
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                entry = location_entry(gql, case.location)
                if entry is not None and entry["loadStatus"] == "LOADED":
                    elapsed = time.perf_counter() - started
                    break
                code = proc.popen.poll()
                if code is not None:
                    raise StartupFailed(f"dagster dev exited with {code}")
                if time.monotonic() >= deadline:
                    raise StartupFailed(
                        f"location {case.location} not LOADED after {START_TIMEOUT:.0f}s;"
                        f" last entry: {entry}"
                    )
                time.sleep(POLL)
        keys = loaded_keys(entry)
        if keys != case.expected:
            raise StartupFailed(
                f"location {case.location} loaded with the wrong assets:"
                f" missing {sorted(case.expected - keys)}, unexpected {sorted(keys - case.expected)}"
            )
        return elapsed, sampler.peak
    except StartupFailed as exc:
        tail = proc.tail(80) if proc is not None else ""
        raise StartupFailed(
            f"{case.name}: {exc}\n--- the end of its `dagster dev` log ---\n{tail}"
        ) from None
    finally:
        if proc is not None:
            stop(proc, home, kill)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--no-warmup",
        action="store_true",
        help="skip the untimed first round (for a smoke run; the numbers then pay a cold cache)",
    )
    parser.add_argument(
        "--kill",
        action="store_true",
        help="stop each `dagster dev` with SIGKILL, not its graceful shutdown of several seconds"
        " (for a smoke run; the stop is not timed)",
    )
    args = parser.parse_args()
    # A SIGTERM (a CI timeout) unwinds through the finally blocks that stop the processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with tempfile.TemporaryDirectory(prefix="bench_startup_", ignore_cleanup_errors=True) as t:
        tmp = Path(t)
        origin = tmp / "origin"
        ensure_example_repo(origin)
        repo_url = f"file://{origin}"
        warehouse = tmp / "warehouse.duckdb"

        # `dagster dev` loads `.env` from its working directory over the environment, and
        # elt_repo reads `.env` and `elt.yaml` from its project dir. A local one (the README
        # suggests ELT_WEBSERVER_URL there) would change the cases, so then run elsewhere.
        workdir, project_env = ROOT, {}
        local = [p.name for p in (ROOT / ".env", ROOT / "elt.yaml") if p.exists()]
        if local:
            workdir = tmp / "project"
            workdir.mkdir()
            shutil.copyfile(WORKSPACE, workdir / "workspace.yaml")
            project_env = {"ELT_PROJECT_DIR": str(workdir)}
            print(f"ignoring {' and '.join(local)}: running from a copy of workspace.yaml")

        # The normal restart's state dir: one refresh first, so the manifest is cached.
        cached_state = tmp / "state_cached"
        elt_env = {**project_env, "ELT_REPO_URL": repo_url, "ELT_WAREHOUSE": str(warehouse)}
        settings = load_settings(
            {**elt_env, "ELT_STATE_DIR": str(cached_state)}, project_dir=workdir
        )
        manifest = refresh(settings).manifest
        close_shared_pools()  # its dlt workers would count in every case's RSS
        if manifest.errors:
            print(f"the example manifest has errors: {manifest.errors}", file=sys.stderr)
            return 1
        expected = expected_keys(manifest, settings)
        if not any(k[0] == "github_issues" for k in expected):
            print(f"no github_issues assets in the manifest: {sorted(expected)}", file=sys.stderr)
            return 1
        print(
            f"examples at {manifest.commit[:12]}: {len(manifest.pipelines)} pipelines,"
            f" {len(expected)} asset keys"
        )

        empty = tmp / "empty"
        empty.mkdir()
        (empty / "empty_defs.py").write_text(EMPTY_DEFS)
        (empty / "workspace.yaml").write_text(
            "load_from:\n  - python_file:\n      relative_path: empty_defs.py\n"
            f"      location_name: {EMPTY_LOCATION}\n"
        )
        baseline = "empty Definitions module"
        cases = [
            Case(
                baseline,
                workdir,
                str(empty / "workspace.yaml"),
                EMPTY_LOCATION,
                set(),
                lambda _: {},
            ),
            Case(
                "elt_repo, manifest cached (restart)",
                workdir,
                "workspace.yaml",
                h.LOCATION,
                expected,
                lambda _: {**elt_env, "ELT_STATE_DIR": str(cached_state)},
            ),
            Case(
                "elt_repo, no manifest (first start: clone+discover)",
                workdir,
                "workspace.yaml",
                h.LOCATION,
                expected,
                lambda label: {**elt_env, "ELT_STATE_DIR": str(tmp / f"state_fresh_{label}")},
            ),
        ]

        results = {case.name: Result() for case in cases}
        try:
            # One untimed round first, so the first timed start pays no cold page cache.
            for number, case in enumerate([] if args.no_warmup else cases):
                run_once(case, "warmup", tmp / "runs" / f"warmup_case{number}", args.kill)
            for repeat in range(args.repeats):
                for number, case in enumerate(cases):
                    label = f"repeat{repeat}"
                    run_dir = tmp / "runs" / f"{label}_case{number}"
                    elapsed, peak = run_once(case, label, run_dir, args.kill)
                    results[case.name].samples.append(elapsed)
                    results[case.name].peak_rss = max(results[case.name].peak_rss, peak)
        except StartupFailed as exc:
            print(f"FAILED {exc}", file=sys.stderr)
            return 1
    report("dagster dev start-up until the location is LOADED", results, baseline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
