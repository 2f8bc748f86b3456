"""scripts/refresh.py as a pipeline author or a cron job runs it: output and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_DIR, PipelinesRepo

SCRIPT = PROJECT_DIR / "scripts" / "refresh.py"


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ELT_", "GITHUB_TOKEN", "DAGSTER_HOME"))
    }
    base |= {"ELT_STATE_DIR": str(tmp_path / "state"), "ELT_PROJECT_DIR": str(tmp_path)}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={**base, **env},
        timeout=120,
    )


def test_help_documents_exit_codes(tmp_path: Path) -> None:
    out = run(tmp_path, "--help")
    assert out.returncode == 0
    for line in (
        "0  refreshed",
        "1  some pipelines have errors",
        "2  bad usage",
        "3  the repository could not be fetched",
    ):
        assert line in out.stdout


def test_refresh_prints_summary(tmp_path: Path, examples_repo: PipelinesRepo) -> None:
    out = run(tmp_path, ELT_REPO_URL=examples_repo.url)
    assert out.returncode == 0, out.stderr
    assert "pipelines: 5 (2 dlt, 3 sling)" in out.stdout
    assert "disabled:  legacy_export" in out.stdout
    assert "errors:    0" in out.stdout


def test_refresh_json_with_errors_exits_1(tmp_path: Path, examples_repo: PipelinesRepo) -> None:
    examples_repo.write("pipelines/broken/dagster.yaml", "tool: sling\nretries: many\n")
    sha = examples_repo.commit("broken")
    out = run(tmp_path, "--json", ELT_REPO_URL=examples_repo.url)
    assert out.returncode == 1
    summary = json.loads(out.stdout)
    assert summary["commit"] == sha
    assert summary["per_tool"] == {"dlt": 2, "sling": 3}
    assert summary["errors"] == [
        {
            "path": "pipelines/broken/dagster.yaml",
            "field": "retries",
            "message": "Not a valid integer.",
        }
    ]


def test_errors_print_as_path_field_message(tmp_path: Path, examples_repo: PipelinesRepo) -> None:
    examples_repo.write("pipelines/broken/dagster.yaml", "tool: sling\nretries: many\n")
    examples_repo.commit("broken")
    out = run(tmp_path, ELT_REPO_URL=examples_repo.url)
    assert (
        "  pipelines/broken/dagster.yaml: retries: Not a valid integer." in out.stdout.splitlines()
    )


def test_unreachable_repo_exits_3(tmp_path: Path) -> None:
    out = run(tmp_path, ELT_REPO_URL=f"file://{tmp_path}/missing")
    assert out.returncode == 3
    assert "ELT_REPO_URL: local path" in out.stdout and "does not exist" in out.stdout


def test_bad_settings_exit_2(tmp_path: Path) -> None:
    out = run(tmp_path, ELT_POLL_INTERVAL="often")
    assert out.returncode == 2 and "ELT_POLL_INTERVAL: expected a number" in out.stderr


@pytest.mark.parametrize("layout", ["pipelines_folder", "repo_root"])
def test_validate_a_local_folder(tmp_path: Path, layout: str) -> None:
    repo = PipelinesRepo(tmp_path / "authors_repo")
    repo.copy_example("csv_orders")
    repo.write("pipelines/broken/dagster.yaml", "tool: dlt\ndlt: {source: 'nope.py:f'}\n")
    target = repo.path / "pipelines" if layout == "pipelines_folder" else repo.path
    out = run(tmp_path, "--validate", str(target), "--json")
    assert out.returncode == 1
    summary = json.loads(out.stdout)
    assert summary["pipelines"] == ["csv_orders"]
    assert summary["errors"] == [
        {
            "path": "pipelines/broken/dagster.yaml",
            "field": "dlt.source",
            "message": "file not found: nope.py:f",
        }
    ]
    assert not (tmp_path / "state" / "manifest.json").exists()


def test_validate_a_reference_layout_folder(tmp_path: Path) -> None:
    repo = PipelinesRepo(tmp_path / "reference")
    repo.write("pipelines/dlt/jokes/pipeline.py", "def run():\n    return None\n")
    repo.write(
        "pipelines/sling/orders/replication.yaml", "source: A\ntarget: B\nstreams: {x.y: {}}\n"
    )
    out = run(tmp_path, "--validate", str(repo.path / "pipelines"), "--json")
    assert out.returncode == 0, out.stdout
    assert json.loads(out.stdout)["per_tool"] == {"dlt": 1, "sling": 1}


def test_validate_clean_folder_exits_0(tmp_path: Path) -> None:
    repo = PipelinesRepo(tmp_path / "authors_repo")
    repo.copy_example("csv_orders")
    out = run(tmp_path, "--validate", str(repo.path / "pipelines"))
    assert out.returncode == 0 and "errors:    0" in out.stdout


def test_validate_missing_folder_exits_2(tmp_path: Path) -> None:
    out = run(tmp_path, "--validate", str(tmp_path / "nope"))
    assert out.returncode == 2 and "is not a folder" in out.stderr


def test_sling_binary_comes_from_the_wheel_unless_set(tmp_path: Path) -> None:
    probe = "import elt_repo.definitions, sling; print(sling.SLING_BIN)"
    env = {k: v for k, v in os.environ.items() if k != "SLING_BINARY"} | {
        "ELT_STATE_DIR": str(tmp_path)
    }
    default = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert default.stdout.strip().endswith("sling_linux_amd64/bin/sling-linux-amd64")
    assert Path(default.stdout.strip()).is_file()
    custom = subprocess.run(
        [sys.executable, "-c", probe],
        env={**env, "SLING_BINARY": "/opt/sling"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert custom.stdout.strip() == "/opt/sling"
