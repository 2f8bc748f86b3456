"""Shared fixtures: real Git repos in tmp_path, settings pointed at them, a temp Dagster instance."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import yaml

from elt_repo.settings import EXAMPLES_DIR, Settings, load_settings

PROJECT_DIR = Path(__file__).resolve().parent.parent
GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> str:
    """Run git in a test repo."""
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
    ).stdout.strip()


def running(marker: str) -> list[int]:
    """The pids whose command line holds `marker`."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                    if marker.encode() in handle.read():
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


class PipelinesRepo:
    """A real Git repo of pipeline folders under `pipelines/`, edited and committed by tests."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        git(path, "init", "--quiet", "--initial-branch=main")

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    def folder(self, name: str) -> Path:
        return self.path / "pipelines" / name

    def write(self, relpath: str, content: str | bytes | Mapping) -> Path:
        target = self.path / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Mapping):
            content = yaml.safe_dump(dict(content), sort_keys=False)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
        return target

    def copy_example(self, name: str, as_name: str | None = None) -> Path:
        target = self.folder(as_name or name)
        shutil.copytree(EXAMPLES_DIR / name, target, dirs_exist_ok=True)
        return target

    def copy_examples(self) -> None:
        for folder in sorted(EXAMPLES_DIR.iterdir()):
            if folder.is_dir():
                self.copy_example(folder.name)

    def remove(self, relpath: str) -> None:
        git(self.path, "rm", "-r", "--quiet", relpath)

    def commit(self, message: str = "change") -> str:
        git(self.path, "add", "--all")
        git(self.path, "commit", "--quiet", "--allow-empty", "-m", message)
        return git(self.path, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> PipelinesRepo:
    return PipelinesRepo(tmp_path / "origin")


@pytest.fixture
def examples_repo(repo: PipelinesRepo) -> PipelinesRepo:
    repo.copy_examples()
    repo.commit("examples")
    return repo


def make_settings(tmp_path: Path, repo_url: str, **env: str) -> Settings:
    """Settings that keep every file under tmp_path."""
    base = {
        "ELT_REPO_URL": repo_url,
        "ELT_STATE_DIR": str(tmp_path / "state"),
        "ELT_WAREHOUSE": str(tmp_path / "warehouse.duckdb"),
        "PATH": os.environ["PATH"],
        # Sling's DuckDB writer hangs now and then under load; a test's runs are tiny.
        "ELT_SLING_STALL_SECONDS": "20",
    }
    return load_settings({**base, **env}, project_dir=tmp_path)


@pytest.fixture
def settings_for(tmp_path: Path):
    def _make(repo_url: str, **env: str) -> Settings:
        return make_settings(tmp_path, repo_url, **env)

    return _make


@pytest.fixture
def instance(tmp_path: Path) -> Iterator:
    """A real Dagster instance in a temp DAGSTER_HOME with the project's dagster.yaml."""
    from dagster import DagsterInstance

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROJECT_DIR / "dagster.yaml", home / "dagster.yaml")
    with DagsterInstance.from_config(str(home)) as inst:
        yield inst


def dagster_yaml(**fields: object) -> dict:
    """A pipeline dagster.yaml as a dict."""
    return dict(fields)


@pytest.fixture(autouse=True)
def _isolated_tool_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """configure_process() sets these with setdefault; start every test without them."""
    for var in ("DLT_DATA_DIR", "RUNTIME__DLTHUB_TELEMETRY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def postgres() -> Iterator:
    """One throwaway PostgreSQL server on 127.0.0.1 for the session (tests/postgres_server.py).

    Skips only off CI when the server binaries are missing; with CI set it fails instead.
    """
    from tests.postgres_server import PostgresServer, find_bin_dir

    if find_bin_dir() is None and not os.environ.get("CI"):
        pytest.skip(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb); "
            "run scripts/install_postgres.sh as root or apt-get install postgresql"
        )
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres) -> str:
    """A fresh, empty database on the session's PostgreSQL server: its postgresql:// URL."""
    return postgres.new_database()
