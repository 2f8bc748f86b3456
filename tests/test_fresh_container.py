"""Runs in a new container: each run executes exactly its commit, sharing only the instance and Git.

The deployment is the one Dagster's Helm chart makes: a `dagster code-server` with its own state
dir, a `dagster-webserver` on the same Postgres instance, and a run launcher that starts every
run as K8sRunLauncher starts a pod (tests/fresh_container_launcher.py): `dagster api
execute_run` in a new process with a new, empty ELT_STATE_DIR and HOME. The Git remote is the
loopback HTTPS server, which demands the token.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus

from elt_repo.defs.assets import COMMIT_TAG
from elt_repo.defs.reload import reload_location
from tests import e2e_helpers as h
from tests.conftest import PipelinesRepo, git
from tests.defs.test_pinning import VERSIONED
from tests.fresh_container_launcher import execute_in_new_container
from tests.git_http_server import GitHttpsServer

pytestmark = pytest.mark.e2e

TOKEN = "fresh-container-token-6c1f"
KEY = AssetKey(["pinme", "rows"])


def instance_yaml(spool: Path) -> str:
    return f"""
storage:
  custom:
    module: elt_repo.defs.postgres_storage
    class: PostgresStorage
    config:
      postgres_url:
        env: DAGSTER_PG_URL
run_coordinator:  # launch at once: when the "pod" starts is the test's to choose
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
run_launcher:
  module: tests.fresh_container_launcher
  class: SpoolRunLauncher
  config:
    spool_dir: {spool}
telemetry:
  enabled: false
"""


@dataclass
class Deployment:
    root: Path
    home: Path
    spool: Path
    warehouse: Path
    served: PipelinesRepo
    code_env: dict[str, str]
    run_env: dict[str, str]
    gql: h.GraphQL
    webserver_url: str
    procs: list[h.Proc] = field(default_factory=list)
    workers: int = 0

    def commit_version(self, version: int) -> str:
        repo = self.served
        repo.write("pipelines/pinme/pipeline.py", VERSIONED.format(version=version))
        repo.write(
            "pipelines/pinme/dagster.yaml",
            {"dlt": {"source": "pipeline.py:src", "args": {"label": f"config {version}"}}},
        )
        return repo.commit(f"version {version}")

    def refresh_code_server(self) -> None:
        """refresh.py on the code server's state dir, then a reload, as the repo sensor does."""
        refresh_script(self.code_env)
        failure = reload_location(self.webserver_url, h.LOCATION, timeout=60)
        assert failure is None, failure
        wait_loaded(self.gql)

    def execute(self, run_id: str) -> tuple[subprocess.CompletedProcess, Path]:
        h.wait_until(
            lambda: ((self.spool / f"{run_id}.json").exists(), self.gql.run(run_id)),
            timeout=30,
            what=f"run {run_id} to be launched",
        )
        self.workers += 1
        root = self.root / f"container{self.workers}"
        done = execute_in_new_container(self.spool, run_id, root, self.run_env)
        return done, root


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_loaded(gql: h.GraphQL) -> None:
    """Until the location is loaded from a code server that answers (not a load error)."""

    def loaded() -> tuple[bool, object]:
        entry = gql.location()
        ok = entry["loadStatus"] == "LOADED"
        return ok and entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry

    h.wait_until(loaded, timeout=90, what="the code location to load")


def refresh_script(env: dict[str, str]) -> None:
    out = subprocess.run(
        [sys.executable, "scripts/refresh.py"],
        cwd=h.PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, postgres
) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("fresh")
    home, spool, logs = root / "dagster_home", root / "spool", root / "logs"
    for folder in (home, spool, logs):
        folder.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml(spool))
    (root / "tls").mkdir()
    server = GitHttpsServer(root / "served", TOKEN, root / "tls")
    server.start()
    served = PipelinesRepo(server.root / "pipes")
    warehouse = root / "warehouse" / "warehouse.duckdb"
    shared = {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_URL": postgres.new_database(),
        "ELT_REPO_URL": server.url("pipes"),
        "ELT_REPO_BRANCH": "main",
        "ELT_PIPELINES_DIR": "pipelines",
        "ELT_WAREHOUSE": str(warehouse),  # the warehouse: a system of its own, as Postgres is
        "ELT_LOCATION_NAME": h.LOCATION,
        "GITHUB_TOKEN": TOKEN,
        "GIT_SSL_CAINFO": str(server.cafile),
        "PATH": f"{h.VENV_BIN}{os.pathsep}{os.environ['PATH']}",  # `dagster`, as in the image
        "PYTHONPATH": str(h.PROJECT_DIR),  # the instance names tests.fresh_container_launcher
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "DO_NOT_TRACK": "1",
        "PYTHONUNBUFFERED": "1",
    }
    code_env = h.clean_env({**shared, "ELT_STATE_DIR": str(root / "code_server_state")})
    grpc_port, web_port = h.free_port(), h.free_port()
    (root / "workspace.yaml").write_text(
        "load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
        f"      port: {grpc_port}\n      location_name: {h.LOCATION}\n"
    )
    url = f"http://127.0.0.1:{web_port}"
    dep = Deployment(
        root=root,
        home=home,
        spool=spool,
        warehouse=warehouse,
        served=served,
        code_env=code_env,
        run_env=h.clean_env(shared),
        gql=h.GraphQL(f"{url}/graphql"),
        webserver_url=url,
    )
    failed_before = request.session.testsfailed
    # The schema first, as the Helm chart's migration job makes it: processes that start
    # together on an empty database race to create the same tables.
    with opened(dep):
        pass
    try:
        dep.commit_version(1)
        refresh_script(code_env)
        dep.procs.append(
            h.start(
                "code-server",
                [
                    str(h.VENV_BIN / "dagster"),
                    "code-server",
                    "start",
                    "-m",
                    "elt_repo.definitions",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(grpc_port),
                    "--location-name",
                    h.LOCATION,
                ],
                code_env,
                logs,
            )
        )
        h.wait_until(
            lambda: (port_open(grpc_port), None), timeout=90, what="the code server to listen"
        )
        dep.procs.append(
            h.start(
                "dagster-webserver",
                [
                    str(h.VENV_BIN / "dagster-webserver"),
                    "-w",
                    str(root / "workspace.yaml"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(web_port),
                ],
                h.clean_env(shared),
                logs,
            )
        )
        h.wait_until(lambda: (dep.gql.answers(), None), timeout=90, what="GraphQL to answer")
        try:
            wait_loaded(dep.gql)
        except AssertionError:
            for proc in dep.procs:
                h.dump(f"{proc.name} log ({proc.log_path})", proc.tail(300))
            raise
        yield dep
    finally:
        for proc in reversed(dep.procs):
            proc.stop()
        server.stop()
        if request.session.testsfailed > failed_before:
            for proc in dep.procs:
                h.dump(f"{proc.name} log ({proc.log_path})", proc.tail(300))


def rows(warehouse: Path) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.sql(
            "select code_version, label from pinme.rows order by code_version"
        ).fetchall()


@contextlib.contextmanager
def opened(dep: Deployment) -> Iterator[DagsterInstance]:
    """The deployment's instance, in this process (it needs DAGSTER_PG_URL for that)."""
    os.environ["DAGSTER_PG_URL"] = dep.run_env["DAGSTER_PG_URL"]
    try:
        with DagsterInstance.from_config(str(dep.home)) as instance:
            yield instance
    finally:
        del os.environ["DAGSTER_PG_URL"]


def run_record(dep: Deployment, run_id: str):
    with opened(dep) as instance:
        run = instance.get_run_by_id(run_id)
        events = instance.get_records_for_run(run_id).records
        materialized = [
            e.event_log_entry.dagster_event.event_specific_data.materialization
            for e in events
            if e.event_log_entry.dagster_event
            and e.event_log_entry.dagster_event.event_type == DagsterEventType.ASSET_MATERIALIZATION
        ]
        return run, materialized, [e.event_log_entry for e in events]


def assert_ran_in_its_own_container(done: subprocess.CompletedProcess, root: Path, commit: str):
    """The worker fetched that one commit (shallow, no branch), ran no discovery, kept no token."""
    state = root / "state"
    assert sorted(p.name for p in (state / "repo" / "worktrees").iterdir()) == [commit]
    mirror = state / "repo" / "mirror.git"
    assert git(mirror, "rev-parse", "--is-shallow-repository").strip() == "true"
    assert git(mirror, "for-each-ref", "--format=%(refname)").split() == [f"refs/pinned/{commit}"]
    assert not (state / "manifest.json").exists()  # definitions from the instance's copy
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in done.stdout + done.stderr


def test_a_run_executes_its_own_commit_in_a_new_container(deployment: Deployment) -> None:
    dep = deployment
    first = git(dep.served.path, "rev-parse", "HEAD").strip()
    pinned = dep.gql.launch_assets("__ASSET_JOB", [KEY.path], tags={COMMIT_TAG: first})
    # The pod waits to be scheduled; meanwhile a new commit changes the pipeline's rows and the
    # code server moves on to it.
    second = dep.commit_version(2)
    dep.refresh_code_server()

    done, root = dep.execute(pinned)
    run, materialized, _ = run_record(dep, pinned)
    assert run.status == DagsterRunStatus.SUCCESS, done.stderr[-4000:]
    assert rows(dep.warehouse) == [(1, "config 1")]
    assert [m.metadata["elt/commit"].value for m in materialized if m.asset_key == KEY] == [first]
    assert_ran_in_its_own_container(done, root, first)

    # A run launched now, untagged as the UI launches it, runs the commit the code server has.
    latest = dep.gql.launch_assets("__ASSET_JOB", [KEY.path])
    done, root = dep.execute(latest)
    run, materialized, _ = run_record(dep, latest)
    assert run.status == DagsterRunStatus.SUCCESS, done.stderr[-4000:]
    assert run.tags[COMMIT_TAG] == second
    assert rows(dep.warehouse) == [(1, "config 1"), (2, "config 2")]
    assert [m.metadata["elt/commit"].value for m in materialized if m.asset_key == KEY] == [second]
    assert_ran_in_its_own_container(done, root, second)


def test_a_run_whose_commit_was_force_pushed_away_fails_naming_it(deployment: Deployment) -> None:
    dep = deployment
    before = git(dep.served.path, "rev-parse", "HEAD").strip()
    doomed = dep.commit_version(3)
    dep.refresh_code_server()
    run_id = dep.gql.launch_assets("__ASSET_JOB", [KEY.path], tags={COMMIT_TAG: doomed})
    # The branch is rewritten and the remote collects the commit, as a force-push and gc do.
    git(dep.served.path, "reset", "--hard", before)
    git(dep.served.path, "reflog", "expire", "--expire=now", "--all")
    git(dep.served.path, "gc", "--prune=now", "--quiet")

    done, root = dep.execute(run_id)
    run, _, entries = run_record(dep, run_id)
    assert run.status == DagsterRunStatus.FAILURE, done.stderr[-4000:]
    failures = [
        e.dagster_event.event_specific_data.error.message
        for e in entries
        if e.dagster_event and e.dagster_event.event_type == DagsterEventType.STEP_FAILURE
    ]
    assert len(failures) == 1, failures  # a commit that is gone is not retried
    assert f"commit {doomed} is not in" in failures[0], failures
    assert rows(dep.warehouse)[-1][0] != 3  # nothing of it, and nothing else in its place
    assert not (root / "state" / "repo" / "worktrees" / before).exists()
