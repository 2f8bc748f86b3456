"""Loading the code location in a fresh interpreter: first load with no manifest cached."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import PROJECT_DIR, PipelinesRepo

PROBE = """
import json
import elt_repo.definitions as d
graph = d.defs.resolve_asset_graph()
keys = sorted("/".join(k.path) for k in graph.get_all_asset_keys())
errors = [
    d.defs.resolve_assets_def(k).specs_by_key[k].description
    for k in graph.get_all_asset_keys() if k.path[0] == "elt_config_errors"
]
print(json.dumps({"keys": keys, "errors": errors, "sensors": sorted(s.name for s in d.defs.sensors)}))
"""


def load(tmp_path: Path, repo_url: str, **env: str) -> tuple[dict, float]:
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=PROJECT_DIR,
        env={
            **os.environ,
            "ELT_REPO_URL": repo_url,
            "ELT_STATE_DIR": str(tmp_path / "state"),
            "ELT_WAREHOUSE": str(tmp_path / "w.duckdb"),
            **env,
        },
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return json.loads(out.strip().splitlines()[-1]), time.monotonic() - started


def test_first_load_refreshes_once_then_loads_from_the_manifest(
    tmp_path: Path, examples_repo: PipelinesRepo
) -> None:
    first, _ = load(tmp_path, examples_repo.url)
    assert "csv_orders/orders" in first["keys"] and first["errors"] == []
    assert "elt_repo_poll" in first["sensors"]
    manifest = json.loads((tmp_path / "state" / "manifest.json").read_text())
    examples_repo.write("pipelines/csv_orders/extra.txt", "a new commit\n")
    examples_repo.commit("after the first load")
    second, _ = load(tmp_path, examples_repo.url)  # no network at load: the cached manifest
    assert second["keys"] == first["keys"]
    again = json.loads((tmp_path / "state" / "manifest.json").read_text())
    assert again["commit"] == manifest["commit"]


def test_first_load_with_a_bad_repo_loads_and_shows_the_error(tmp_path: Path) -> None:
    result, _ = load(tmp_path, f"file://{tmp_path}/no-such-repo")
    (error,) = result["errors"]
    assert sorted(k.split("/")[0] for k in result["keys"]) == ["elt_config_errors", "elt_repo"]
    assert "does not exist" in error and "elt_repo_poll" in result["sensors"]


def test_first_load_that_hangs_gives_up_after_the_timeout(tmp_path: Path) -> None:
    """A remote that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        result, took = load(
            tmp_path, f"http://127.0.0.1:{port}/pipes.git", ELT_FIRST_LOAD_TIMEOUT="3"
        )
    (error,) = result["errors"]
    assert "did not finish within 3s" in error
    assert took < 60  # not the 120 s the git command alone could take


def test_elt_executor_sets_how_every_run_executes(
    tmp_path: Path, examples_repo: PipelinesRepo
) -> None:
    probe = (
        "import elt_repo.definitions as d; "
        "print(d.defs.get_repository_def().get_implicit_global_asset_job_def().executor_def.name)"
    )
    names = {}
    for executor in ("multiprocess", "in_process"):
        names[executor] = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=PROJECT_DIR,
            env={
                **os.environ,
                "ELT_REPO_URL": examples_repo.url,
                "ELT_STATE_DIR": str(tmp_path / "state"),
                "ELT_WAREHOUSE": str(tmp_path / "w.duckdb"),
                "ELT_EXECUTOR": executor,
            },
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout.split()[-1]
    # Dagster's default runs steps in subprocesses unless a run's config says otherwise.
    assert names == {"multiprocess": "multi_or_in_process_executor", "in_process": "in_process"}
