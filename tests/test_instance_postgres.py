"""The instance of deploy/dagster.yaml on a real PostgreSQL server: what Dagster records there.

Each test copies deploy/dagster.yaml into a fresh DAGSTER_HOME with DAGSTER_PG_URL pointing
at a new empty database, and reads what was written back through another instance object and
with plain SQL, so nothing passes on a local SQLite file. The database URL holds a password:
no assertion message, log or file here contains it.
"""

from __future__ import annotations

import functools
import os
import shutil
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
import pytest
import sqlalchemy.exc
import yaml
from dagster import (
    AddDynamicPartitionsRequest,
    AssetKey,
    AssetsDefinition,
    DagsterInstance,
    DagsterRunStatus,
    DeleteDynamicPartitionsRequest,
    QueuedRunCoordinator,
    materialize,
)
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from dagster_webserver.cli import (
    DEFAULT_DB_STATEMENT_TIMEOUT,
    DEFAULT_POOL_MAX_OVERFLOW,
    DEFAULT_POOL_RECYCLE,
)
from sqlalchemy.engine import make_url

from elt_repo.defs.build import build_definitions
from elt_repo.defs.partitions import apply_partition_requests, dynamic_partition_requests
from elt_repo.defs.resources import build_resources
from elt_repo.refresh import refresh
from tests import e2e_helpers as h
from tests.conftest import PROJECT_DIR, PipelinesRepo, git

DEPLOY_YAML = PROJECT_DIR / "deploy" / "dagster.yaml"
PROJECT_YAML = PROJECT_DIR / "dagster.yaml"
COMMIT_TAG = "elt_repo/commit"
CSV_ORDERS_OP = "csv_orders__sling"
ORDERS_KEY = AssetKey(["csv_orders", "orders"])
STORE_SALES_PARTITIONS = "store_sales__keys"
STORE_SALES_STATIC = "static: {partition_keys: [us-east, us-west, eu-central]}"


@dataclass
class PgHome:
    """A DAGSTER_HOME with deploy/dagster.yaml and the database its DAGSTER_PG_URL names."""

    home: Path
    db_url: str = field(repr=False)  # postgresql://, for plain SQL with psycopg
    instance_url: str = field(repr=False)  # what DAGSTER_PG_URL holds

    @property
    def secrets(self) -> list[str]:
        password = urlsplit(self.db_url).password or ""
        return [s for s in {password, unquote(password)} if s]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def instance(self) -> DagsterInstance:
        """Another instance object opened from the same home."""
        return DagsterInstance.from_config(str(self.home))

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of one query on the instance's database, read past Dagster."""
        with psycopg.connect(self.db_url, connect_timeout=10) as conn:
            return conn.execute(query, params).fetchall()


def with_scheme(url: str, scheme: str) -> str:
    return make_url(url).set(drivername=scheme).render_as_string(hide_password=False)


def redacted(test: Callable[..., None]) -> Callable[..., None]:
    """Fail with the password masked: pytest's long tracebacks print every frame's arguments,
    and the database driver's connect() holds the password in its own."""

    @functools.wraps(test)
    def run(*args: Any, pg_home: PgHome, **kwargs: Any) -> None:
        try:
            test(*args, pg_home=pg_home, **kwargs)
        except Exception as exc:  # pytest.fail() and skips are BaseExceptions: they pass
            raise AssertionError(pg_home.redact("".join(traceback.format_exception(exc)))) from None

    return run


@pytest.fixture
def pg_home(tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> PgHome:
    home = tmp_path / "pg_home"
    home.mkdir()
    shutil.copyfile(DEPLOY_YAML, home / "dagster.yaml")
    instance_url = pg_url  # plain postgresql://: elt_repo's storage names the driver
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_URL", instance_url)
    return PgHome(home, pg_url, instance_url)


def _leaves(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(keys, value) of every scalar in a parsed YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, str(key)))
    elif isinstance(node, list):
        for value in node:
            yield from _leaves(value, path)
    else:
        yield path, node


def test_deploy_yaml_is_the_project_instance_on_postgres() -> None:
    """Same queue and pools as ./dagster.yaml, telemetry off, the URL only from the env."""
    text = DEPLOY_YAML.read_text()
    deploy, project = yaml.safe_load(text), yaml.safe_load(PROJECT_YAML.read_text())
    # No URL of any scheme, not even in a comment, and no password or user key or value.
    assert "://" not in text, "a URL in deploy/dagster.yaml"
    for path, value in _leaves(deploy):
        assert not {"password", "username", "postgres_db"} & set(path), path
        assert "@" not in str(value), path
    assert deploy["storage"] == {
        "custom": {
            "module": "elt_repo.defs.postgres_storage",
            "class": "PostgresStorage",
            "config": {"postgres_url": {"env": "DAGSTER_PG_URL"}},
        }
    }
    for section in ("concurrency", "run_queue"):
        assert deploy.get(section) == project.get(section), f"{section} drifted from dagster.yaml"
    assert deploy["telemetry"] == {"enabled": False}
    assert deploy["run_coordinator"] == {"module": "dagster", "class": "QueuedRunCoordinator"}


@redacted
def test_the_instance_is_postgres_backed(pg_home: PgHome, instance: DagsterInstance) -> None:
    """DagsterInstance.get() from the home: Postgres storage, the project's queue and pools."""
    with DagsterInstance.get() as pg:
        assert isinstance(pg.run_storage, PostgresRunStorage), type(pg.run_storage)
        assert isinstance(pg.event_log_storage, PostgresEventLogStorage), type(pg.event_log_storage)
        assert isinstance(pg.schedule_storage, PostgresScheduleStorage), type(pg.schedule_storage)
        assert isinstance(pg.run_coordinator, QueuedRunCoordinator), type(pg.run_coordinator)
        assert pg.telemetry_enabled is False
        # `instance` is ./dagster.yaml on SQLite: the resolved queue and pools are the same.
        assert pg.get_concurrency_config() == instance.get_concurrency_config()
        assert pg.get_concurrency_config().run_queue_config.max_concurrent_runs == 4
    tables = {name for (name,) in pg_home.sql("select tablename from pg_tables")}
    # Run storage, event log and schedule storage created their tables in the database.
    assert {"runs", "event_logs", "jobs", "job_ticks", "dynamic_partitions"} <= tables, tables


def optimize_for_webserver(instance: DagsterInstance) -> None:
    """What dagster-webserver does to its instance before it serves anything."""
    instance.optimize_for_webserver(
        DEFAULT_DB_STATEMENT_TIMEOUT, DEFAULT_POOL_RECYCLE, DEFAULT_POOL_MAX_OVERFLOW
    )


@redacted
def test_the_instance_works_in_the_webserver(pg_home: PgHome) -> None:
    """With a plain postgresql:// DAGSTER_PG_URL, the webserver's pooled connections work."""
    with DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage), type(instance.run_storage)
        optimize_for_webserver(instance)
        for _ in range(2):  # the second round reuses the pooled connections
            assert instance.get_runs_count() == 0
            assert instance.get_dynamic_partitions(STORE_SALES_PARTITIONS) == []
            assert instance.all_instigator_state() == []


@redacted
def test_a_bare_postgresql_url_breaks_the_webserver_on_stock_dagster_postgres(
    pg_home: PgHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why deploy/dagster.yaml uses elt_repo's storage: with a bare postgresql://, stock
    dagster-postgres gets psycopg 3 (SQLAlchemy 2.1), and its webserver hook
    (dagster_postgres.utils.set_pg_statement_timeout: `with conn:` on each new connection)
    closes psycopg 3 connections. When this test fails, dagster-postgres works with psycopg 3
    and elt_repo.defs.postgres_storage can go.
    """
    stock = tmp_path / "stock_home"
    stock.mkdir()
    (stock / "dagster.yaml").write_text(
        "storage:\n  postgres:\n    postgres_url:\n      env: DAGSTER_PG_URL\n"
    )
    monkeypatch.setenv("DAGSTER_PG_URL", with_scheme(pg_home.db_url, "postgresql"))
    with DagsterInstance.from_config(str(stock)) as instance:
        assert instance.get_runs_count() == 0  # fine outside the webserver
        optimize_for_webserver(instance)
        with pytest.raises(sqlalchemy.exc.OperationalError, match="the connection is closed"):
            instance.get_runs_count()


@pytest.mark.slow
@redacted
def test_a_materialization_is_recorded_in_postgres(
    pg_home: PgHome, examples_repo: PipelinesRepo, settings_for
) -> None:
    """csv_orders runs for real; its run and materializations are rows in Postgres."""
    settings = settings_for(examples_repo.url)
    manifest = refresh(settings).manifest
    defs = build_definitions(manifest, settings)
    (csv_orders,) = [
        a
        for a in defs.assets or []
        if isinstance(a, AssetsDefinition) and a.op.name == CSV_ORDERS_OP
    ]
    with DagsterInstance.get() as instance:
        result = materialize([csv_orders], instance=instance, resources=build_resources(settings))
    assert result.success
    run_id = result.run_id

    with pg_home.instance() as other:
        record = other.get_run_record_by_id(run_id)
        assert record is not None, f"no run {run_id} in run storage"
        assert record.dagster_run.status == DagsterRunStatus.SUCCESS
        # Added by the first step (instance.add_run_tags), after the run was created.
        assert record.dagster_run.tags.get(COMMIT_TAG) == manifest.commit, record.dagster_run.tags
        (event,) = other.fetch_materializations(ORDERS_KEY, limit=5).records
        assert event.run_id == run_id
        metadata = event.asset_materialization.metadata
        orders = h.count_csv_rows(h.EXAMPLES_DIR / "csv_orders" / "data" / "orders.csv")
        assert metadata["dagster/row_count"].value == orders
        assert metadata["elt/commit"].value == manifest.commit

    assert pg_home.sql("select status from runs where run_id = %s", (run_id,)) == [("SUCCESS",)]
    keys = pg_home.sql(
        "select asset_key from event_logs where run_id = %s"
        " and dagster_event_type = 'ASSET_MATERIALIZATION' order by asset_key",
        (run_id,),
    )
    assert [k for (k,) in keys] == sorted(k.to_string() for k in csv_orders.keys)


@redacted
def test_dynamic_partition_changes_are_recorded_in_postgres(
    pg_home: PgHome, examples_repo: PipelinesRepo, settings_for
) -> None:
    """store_sales' static keys, synced as elt_repo does, then a commit that changes them."""
    settings = settings_for(examples_repo.url)
    first = refresh(settings).manifest
    with DagsterInstance.get() as instance:
        apply_partition_requests(instance, dynamic_partition_requests(first, instance))
    with pg_home.instance() as other:
        keys = other.get_dynamic_partitions(STORE_SALES_PARTITIONS)
    assert keys == ["us-east", "us-west", "eu-central"]

    config = examples_repo.folder("store_sales") / "dagster.yaml"
    text = config.read_text()
    assert STORE_SALES_STATIC in text, text
    config.write_text(
        text.replace(
            STORE_SALES_STATIC, "static: {partition_keys: [us-east, eu-central, ap-south]}"
        )
    )
    examples_repo.commit("store_sales: ap-south instead of us-west")
    second = refresh(settings).manifest
    with pg_home.instance() as other:
        requests = dynamic_partition_requests(second, other, previous=first)
        assert requests == [
            AddDynamicPartitionsRequest(
                partitions_def_name=STORE_SALES_PARTITIONS, partition_keys=["ap-south"]
            ),
            DeleteDynamicPartitionsRequest(
                partitions_def_name=STORE_SALES_PARTITIONS, partition_keys=["us-west"]
            ),
        ]
        apply_partition_requests(other, requests)
    with pg_home.instance() as third:
        keys = third.get_dynamic_partitions(STORE_SALES_PARTITIONS)
    assert sorted(keys) == ["ap-south", "eu-central", "us-east"]
    rows = pg_home.sql(
        "select partition from dynamic_partitions where partitions_def_name = %s",
        (STORE_SALES_PARTITIONS,),
    )
    assert sorted(p for (p,) in rows) == ["ap-south", "eu-central", "us-east"]


@pytest.fixture
def daemon(pg_home: PgHome, examples_repo: PipelinesRepo, tmp_path: Path) -> Iterator[h.Proc]:
    """`dagster-daemon run` on the project's workspace.yaml, with the Postgres instance."""
    env = h.clean_env(
        {
            "DAGSTER_HOME": str(pg_home.home),
            "DAGSTER_PG_URL": pg_home.instance_url,
            "ELT_STATE_DIR": str(tmp_path / "state"),
            "ELT_WAREHOUSE": str(tmp_path / "warehouse.duckdb"),
            "ELT_REPO_URL": examples_repo.url,
            "ELT_REPO_BRANCH": "main",
            "ELT_PIPELINES_DIR": "pipelines",
            "ELT_AUTO_REFRESH": "true",
            "ELT_POLL_INTERVAL": "5",
            "ELT_LOCATION_NAME": h.LOCATION,
            "PYTHONUNBUFFERED": "1",
        }
    )
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    argv = [str(h.VENV_BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"]
    proc = h.start("dagster-daemon", argv, env, log_dir)
    try:
        yield proc
    finally:
        if proc.popen.poll() is None:
            proc.stop()


@pytest.mark.e2e
@redacted
def test_a_sensor_tick_is_recorded_in_postgres(
    pg_home: PgHome, examples_repo: PipelinesRepo, daemon: h.Proc
) -> None:
    """A real daemon ticks elt_repo_poll; the tick is read back, then the daemon stops cleanly.

    The first tick refreshes to the repo's HEAD: its cursor is that commit, and the daemon
    applied the dynamic partitions it returned (store_sales' static keys) to the instance.
    """
    head = git(examples_repo.path, "rev-parse", "HEAD")

    def log() -> str:
        return pg_home.redact(f"--- {daemon.name} log ---\n{daemon.tail(80)}")

    with pg_home.instance() as instance:

        def ticked() -> tuple[bool, Any]:
            code = daemon.popen.poll()
            if code is not None:
                pytest.fail(f"dagster-daemon exited with {code}\n{log()}")
            states = [s for s in instance.all_instigator_state() if s.instigator_name == h.SENSOR]
            if not states:
                return False, "no instigator state"
            (state,) = states
            ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=5)
            done = [t for t in ticks if t.is_completed]
            return bool(done), (state, [(t.status.value, t.timestamp) for t in ticks], done)

        state, _, done = h.wait_until(
            ticked, timeout=240, interval=2, what=f"a {h.SENSOR} tick", context=log
        )
        tick = done[-1]  # newest first: the first tick
        assert state.instigator_type.value == "SENSOR"
        error = tick.tick_data.error
        assert not tick.is_failure, pg_home.redact(error.to_string() if error else "")
        assert tick.cursor == head, tick.cursor
        keys = instance.get_dynamic_partitions(STORE_SALES_PARTITIONS)
        assert keys == ["us-east", "us-west", "eu-central"], keys
        assert "SENSOR" in instance.get_daemon_heartbeats(), "no sensor daemon heartbeat"

    daemon.stop(grace=30)
    assert daemon.popen.returncode == 0, f"exit code {daemon.popen.returncode}\n{log()}"
    with pytest.raises(ProcessLookupError):  # nothing of its process group outlived it
        os.killpg(daemon.popen.pid, 0)
    text = daemon.log_path.read_text(errors="replace")
    if any(secret in text for secret in pg_home.secrets):
        pytest.fail("the daemon log holds the database password")

    # The tick is a row of the schedule storage's tick table in Postgres.
    rows = pg_home.sql(
        "select status from job_ticks where selector_id = %s and id = %s",
        (state.selector_id, tick.tick_id),
    )
    assert rows == [(tick.status.value,)]
