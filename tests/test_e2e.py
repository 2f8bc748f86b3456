"""End to end: dagster-daemon and dagster-webserver against a real pipelines Git repo.

One module-scoped deployment: a temp DAGSTER_HOME with the project's dagster.yaml, a temp
state dir and warehouse, and a Git repo made from examples/pipelines. The tests run in order
and each one moves the repo forward: first refresh, a materialization, a pipeline added and
removed, a pipeline that the automation sensor materializes by itself, changed static partition
keys, a broken dagster.yaml (the pipeline kept at its last good version, with a failing asset
check), and a new pipeline broken from the start (a placeholder asset with a failing check).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import e2e_helpers as h
from tests.conftest import PipelinesRepo, git

pytestmark = pytest.mark.e2e

POLL_INTERVAL = 5
AUTOMATION_INTERVAL = 5
EXAMPLE_KEYS = [
    ("csv_orders", "orders"),
    ("store_sales", "daily_sales"),
    ("github_issues", "issues"),
    ("shop_sqlite", "products"),
]
CSV_ORDERS = h.EXAMPLES_DIR / "csv_orders"
# Every run carries the commit of the manifest its definitions were built from.
COMMIT_TAG = "elt_repo/commit"
# The asset check on every broken pipeline, and the asset the repo sensor observes.
CHECK = "valid_config"
MANIFEST_KEY = ("elt_repo", "manifest")
STORE_SALES_CONFIG = "pipelines/store_sales/dagster.yaml"
NOT_AN_INTEGER = "Not a valid integer."


@dataclass
class Deployment:
    tmp: Path
    home: Path
    state_dir: Path
    warehouse: Path
    repo: PipelinesRepo
    gql: h.GraphQL
    webserver: h.Proc
    daemon: h.Proc | None = None
    initial_location: dict[str, Any] | None = None
    initial_assets: dict[tuple[str, ...], Any] | None = None
    initial_manifest: bool | None = None

    @property
    def procs(self) -> list[h.Proc]:
        return [p for p in (self.webserver, self.daemon) if p is not None]

    def logs(self, lines: int = 80) -> str:
        """The tail of every process log, for assertion messages."""
        parts = []
        for proc in self.procs:
            code = proc.popen.poll()
            state = "running" if code is None else f"exited with {code}"
            parts.append(f"--- {proc.name} ({state}), last {lines} lines ---\n{proc.tail(lines)}")
        return "\n".join(parts)

    def check_alive(self) -> None:
        for proc in self.procs:
            code = proc.popen.poll()
            assert code is None, f"{proc.name} exited with {code}\n{self.logs()}"

    def wait(self, check, *, timeout: float, what: str, interval: float = 1.0) -> Any:
        def guarded():
            self.check_alive()
            return check()

        return h.wait_until(
            guarded, timeout=timeout, what=what, interval=interval, context=self.context
        )

    def context(self) -> str:
        try:
            ticks = self.gql.sensor_ticks()
        except Exception as exc:
            ticks = f"<{exc!r}>"
        manifest = self.state_dir / "manifest.json"
        return f"sensor ticks: {ticks}\nmanifest exists: {manifest.exists()}\n{self.logs()}"

    def wait_for_keys(
        self, present: list[tuple[str, ...]], absent: list[tuple[str, ...]] = (), *, timeout: float
    ) -> dict[tuple[str, ...], Any]:
        def check():
            assets = self.gql.assets()
            missing = [k for k in present if k not in assets]
            extra = [k for k in absent if k in assets]
            return not missing and not extra, {
                "missing": missing,
                "unexpectedly present": extra,
                "asset keys": sorted(assets),
            }

        self.wait(
            check, timeout=timeout, what=f"asset keys {present} present and {list(absent)} absent"
        )
        return self.gql.assets()

    def wait_for_check_on(self, pipeline: str, *, timeout: float) -> tuple[str, ...]:
        """The one asset of `pipeline` that carries the `valid_config` check."""

        def check():
            carriers = [k for k, names in self.gql.asset_checks().items() if CHECK in names]
            mine = [k for k in carriers if k[0] == pipeline]
            return len(mine) == 1, {"assets with the check": carriers}

        seen = self.wait(check, timeout=timeout, what=f"one {pipeline} asset with check {CHECK}")
        (key,) = [k for k in seen["assets with the check"] if k[0] == pipeline]
        return key

    def wait_for_check_execution(
        self, key: tuple[str, ...], *, since: float, timeout: float
    ) -> dict[str, Any]:
        """The latest `valid_config` execution of `key`, once one was evaluated after `since`."""

        def check():
            executions = self.gql.check_executions(key, CHECK)
            latest = executions[0] if executions else None
            evaluation = (latest or {}).get("evaluation")
            return bool(evaluation and evaluation["timestamp"] >= since - 1), executions

        executions = self.wait(
            check, timeout=timeout, what=f"an evaluation of {list(key)} {CHECK} after the commit"
        )
        return executions[0]

    def wait_for_manifest_observation(self, commit: str, *, timeout: float) -> dict[str, Any]:
        """The metadata of the latest observation of the manifest asset, once it is `commit`."""

        def check():
            observations = self.gql.observations(MANIFEST_KEY)
            latest = observations[0]["metadata"] if observations else {}
            return latest.get("elt/commit") == commit, observations[:3]

        (latest, *_) = self.wait(
            check, timeout=timeout, what=f"an observation of {list(MANIFEST_KEY)} at {commit}"
        )
        return latest["metadata"]


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("e2e")
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copyfile(h.PROJECT_DIR / "dagster.yaml", home / "dagster.yaml")
    state_dir = tmp / "state"
    warehouse = tmp / "warehouse.duckdb"
    repo = PipelinesRepo(tmp / "upstream")
    repo.copy_examples()
    repo.commit("example pipelines")
    port = h.free_port()
    url = f"http://127.0.0.1:{port}"
    env = h.clean_env(
        {
            "DAGSTER_HOME": str(home),
            "ELT_STATE_DIR": str(state_dir),
            "ELT_WAREHOUSE": str(warehouse),
            "ELT_POLL_INTERVAL": str(POLL_INTERVAL),
            "ELT_REPO_URL": repo.url,
            "ELT_REPO_BRANCH": "main",
            "ELT_PIPELINES_DIR": "pipelines",
            "ELT_AUTO_REFRESH": "true",
            "ELT_WEBSERVER_URL": url,
            "ELT_LOCATION_NAME": h.LOCATION,
            "ELT_AUTOMATION_INTERVAL": str(AUTOMATION_INTERVAL),
            "DAGSTER_DISABLE_TELEMETRY": "1",
            "DO_NOT_TRACK": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    log_dir = tmp / "logs"
    log_dir.mkdir()
    failed_before = request.session.testsfailed
    webserver = h.start(
        "dagster-webserver",
        [
            str(h.VENV_BIN / "dagster-webserver"),
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env,
        log_dir,
    )
    dep = Deployment(tmp, home, state_dir, warehouse, repo, h.GraphQL(f"{url}/graphql"), webserver)
    try:
        # The webserver alone first: no daemon means no sensor tick, so this is the location
        # as its first load builds it (one refresh when no manifest is cached), deterministically.
        dep.wait(lambda: (dep.gql.answers(), "no answer"), timeout=60, what="GraphQL to answer")
        dep.initial_location = dep.wait(
            lambda: (lambda e: (e["loadStatus"] == "LOADED", e))(dep.gql.location()),
            timeout=60,
            what="the code location to load",
        )
        dep.initial_assets = dep.gql.assets()
        dep.initial_manifest = (state_dir / "manifest.json").exists()
        dep.daemon = h.start(
            "dagster-daemon",
            [str(h.VENV_BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            env,
            log_dir,
        )
        yield dep
    finally:
        for proc in reversed(dep.procs):
            proc.stop()
        if request.session.testsfailed > failed_before:
            for proc in dep.procs:
                h.dump(f"{proc.name} log ({proc.log_path})", proc.tail(400))


def _keys_with_prefix(assets: dict[tuple[str, ...], Any], prefix: str) -> list[tuple[str, ...]]:
    return sorted(k for k in assets if k[0] == prefix)


def _checks(node: dict[str, Any]) -> list[dict[str, Any]]:
    checks = node["assetChecksOrError"]
    assert checks["__typename"] == "AssetChecks", checks
    return checks["checks"]


def _assert_config_error(execution: dict[str, Any], path: str, field: str, message: str) -> None:
    """A failed `valid_config` execution whose evaluation names the file, field and message."""
    seen = json.dumps(execution, indent=1)
    evaluation = execution["evaluation"]
    assert execution["status"] == "FAILED", seen
    assert evaluation is not None and evaluation["success"] is False, seen
    assert evaluation["severity"] == "ERROR", seen
    assert evaluation["description"].startswith(f"{path}: {field}: {message}"), seen
    meta = evaluation["metadata"]
    assert meta.get("elt/file") == path, seen
    assert meta.get("elt/field") == field, seen
    assert meta.get("elt/message") == message, seen
    errors = meta.get("elt/errors") or ""
    assert path in errors and field in errors and message in errors, seen


def _enabled_pipelines_per_tool(repo: PipelinesRepo, broken: set[str]) -> dict[str, int]:
    """Pipelines per tool as the repo's dagster.yaml files say, without disabled or new broken
    ones (a kept pipeline counts: its last good version is in the manifest)."""
    counts: dict[str, int] = {}
    for config in sorted((repo.path / "pipelines").glob("*/dagster.yaml")):
        if config.parent.name in broken:
            continue
        data = yaml.safe_load(config.read_text())
        if data.get("enabled", True):
            counts[data["tool"]] = counts.get(data["tool"], 0) + 1
    return dict(sorted(counts.items()))


def test_first_refresh_builds_the_example_assets(deployment: Deployment) -> None:
    dep = deployment
    head = git(dep.repo.path, "rev-parse", "HEAD")
    # With no manifest cached, the location's first load refreshes once, before any sensor
    # tick (the daemon was not running yet): the manifest and the example assets are there.
    assert dep.initial_manifest is True, "the first load of the location wrote no manifest"
    entry = dep.initial_location
    assert (
        entry is not None and entry["locationOrLoadError"]["__typename"] == "RepositoryLocation"
    ), entry
    repos = entry["locationOrLoadError"]["repositories"]
    assert h.SENSOR in [s["name"] for r in repos for s in r["sensors"]], repos
    initial = dep.initial_assets or {}
    missing = [k for k in EXAMPLE_KEYS if k not in initial]
    assert not missing, f"missing at first load: {missing}; seen {sorted(initial)}"

    # With the daemon, the sensor's first tick refreshes again (no cursor yet), same commit.
    dep.wait_for_keys(EXAMPLE_KEYS, timeout=90)
    assert (dep.state_dir / "manifest.json").is_file()
    manifest_commit = json.loads((dep.state_dir / "manifest.json").read_text())["commit"]
    assert manifest_commit == head
    assets = dep.gql.assets()
    # The disabled pipeline builds nothing, and a clean repo shows no config error.
    assert not _keys_with_prefix(assets, "legacy_export"), sorted(assets)
    assert not _keys_with_prefix(assets, "elt_config_errors"), sorted(assets)
    # The manifest is an asset, observed by that tick: the commit, and no errors.
    assert MANIFEST_KEY in assets, sorted(assets)
    meta = dep.wait_for_manifest_observation(head, timeout=60)
    assert meta["elt/error_count"] == 0 and meta["elt/errors"] == "No errors.", meta
    assert "legacy_export" in meta["elt/disabled"], meta
    assert meta["elt/pipelines_per_tool"] == _enabled_pipelines_per_tool(dep.repo, set()), meta
    assert not [k for k, names in dep.gql.asset_checks().items() if names], "checks on a clean repo"


def test_static_partitions_are_dynamic_partitions_on_the_instance(deployment: Deployment) -> None:
    from dagster import DagsterInstance

    dep = deployment
    expected = {"us-east", "us-west", "eu-central"}
    with DagsterInstance.from_config(str(dep.home)) as instance:
        keys = dep.wait(
            lambda: (lambda k: (set(k) == expected, k))(
                instance.get_dynamic_partitions("store_sales__keys")
            ),
            timeout=30,
            what="dynamic partitions store_sales__keys",
        )
    assert sorted(keys) == sorted(expected)


def test_materialize_csv_orders_through_the_run_queue(deployment: Deployment) -> None:
    import duckdb

    dep = deployment
    assets = dep.gql.assets()
    keys = _keys_with_prefix(assets, "csv_orders")
    assert ("csv_orders", "orders") in keys, sorted(assets)
    jobs = sorted({j for k in keys for j in assets[k]["jobNames"]})
    job = "__ASSET_JOB" if "__ASSET_JOB" in jobs else jobs[0]
    assert job.startswith("__ASSET_JOB"), f"csv_orders assets are in no implicit asset job: {jobs}"

    run_id = dep.gql.launch_assets(job, keys)
    terminal = {"SUCCESS", "FAILURE", "CANCELED"}
    run = dep.wait(
        lambda: (lambda r: (r.get("status") in terminal, r))(dep.gql.run(run_id)),
        timeout=120,
        what=f"run {run_id} to finish",
    )
    if run["status"] != "SUCCESS":
        pytest.fail(
            f"run {run_id} ended {run['status']}:\n"
            + "\n".join(dep.gql.run_failure_events(run_id))
            + "\n"
            + dep.logs()
        )

    # Launched through GraphQL, not by elt_repo: its first step tags it with the commit of the
    # definitions, still the repo's only commit.
    tags = {t["key"]: t["value"] for t in run["tags"]}
    head = git(dep.repo.path, "rev-parse", "HEAD")
    assert tags.get(COMMIT_TAG) == head, f"{COMMIT_TAG} should be HEAD {head}; run tags: {tags}"

    expected = h.count_csv_rows(CSV_ORDERS / "data" / "orders.csv")
    assert expected > 0
    with duckdb.connect(str(dep.warehouse), read_only=True) as con:
        (rows,) = con.execute("select count(*) from csv_orders.orders").fetchone()
        (customers,) = con.execute("select count(*) from csv_orders.customers").fetchone()
    assert rows == expected, f"csv_orders.orders has {rows} rows, orders.csv has {expected}"
    assert customers == h.count_csv_rows(CSV_ORDERS / "data" / "customers.csv")


def test_new_pipeline_appears_and_disappears_without_restart(deployment: Deployment) -> None:
    dep = deployment
    pids = {p.name: p.popen.pid for p in dep.procs}
    copy = dep.repo.folder("csv_orders_copy")
    shutil.copytree(CSV_ORDERS, copy)
    config = yaml.safe_load((copy / "dagster.yaml").read_text())
    config["name"] = "csv_orders_copy"
    (copy / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    replication = yaml.safe_load((copy / "replication.yaml").read_text())
    replication["defaults"]["object"] = "csv_orders_copy.{stream_file_name}"
    replication["streams"]["file://./data/orders.csv"]["object"] = "csv_orders_copy.orders"
    (copy / "replication.yaml").write_text(yaml.safe_dump(replication, sort_keys=False))
    dep.repo.commit("add csv_orders_copy")

    started = time.monotonic()
    dep.wait_for_keys([("csv_orders_copy", "orders"), *EXAMPLE_KEYS], timeout=60)
    appeared = time.monotonic() - started
    assets = dep.gql.assets()
    assert ("csv_orders_copy", "customers") in assets, sorted(assets)
    assert not _keys_with_prefix(assets, "elt_config_errors"), sorted(assets)

    dep.repo.remove("pipelines/csv_orders_copy")
    dep.repo.commit("remove csv_orders_copy")
    dep.wait_for_keys(EXAMPLE_KEYS, absent=[("csv_orders_copy", "orders")], timeout=60)
    assets = dep.gql.assets()
    assert not _keys_with_prefix(assets, "csv_orders_copy"), sorted(assets)
    # No restart: the same processes served all of it.
    assert {p.name: p.popen.pid for p in dep.procs} == pids
    dep.check_alive()
    print(f"csv_orders_copy appeared after {appeared:.1f}s")


AUTO_EVENTS_KEY = ("auto_events", "events")
AUTO_EVENTS_PIPELINE = '''\
"""One event per hour of the partition's window."""

from datetime import UTC, datetime, timedelta

import dlt


def to_utc(value):
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dlt.source
def auto_source(start_date=None, end_date=None):
    @dlt.resource(write_disposition="merge", primary_key="id")
    def events():
        if start_date is None or end_date is None:
            return
        at, end = to_utc(start_date), to_utc(end_date)
        while at < end:
            yield {"id": at.isoformat(), "event_at": at}
            at += timedelta(hours=1)

    return events
'''
ROWS_PER_DAY = 24
# The key needs every field down to the schedule's minute (elt_repo checks that it round-trips).
AUTO_EVENTS_FMT = "%Y-%m-%d-%H:%M"
# Time for the daemon to evaluate the new asset before its next daily partition appears: a
# refresh tick (5 s), the daemon's own workspace reload (every 60 s), an automation tick (5 s).
DAEMON_PICKUP_MARGIN = 110


def _auto_events_config(start: date, boundary: datetime, condition: str) -> dict[str, Any]:
    return {
        "enabled": True,
        "tool": "dlt",
        "description": "Hourly events by day, materialized by the automation sensor when missing",
        "partitions": {
            "enabled": True,
            "type": "time",
            "time": {
                "start": start.isoformat(),
                # Daily windows that end at `boundary`'s time of day, so a new one appears
                # while the test runs.
                "cron_schedule": f"{boundary.minute} {boundary.hour} * * *",
                "timezone": "UTC",
                "fmt": AUTO_EVENTS_FMT,
            },
        },
        "automation": condition,
        "dlt": {
            "source": "pipeline.py:auto_source",
            "partition_args": {"start": "start_date", "end": "end_date"},
            "dataset_name": "auto_events_data",
        },
    }


def test_automation_sensor_materializes_the_missing_partition(deployment: Deployment) -> None:
    """`automation: on_missing`: the daemon's automation sensor runs a new daily partition.

    Dagster's on_missing requests only partitions that appear after its first evaluation of the
    asset (initial_evaluation counts as handled), not those already missing then. So the daily
    windows here end at a time of day a couple of minutes ahead: the daemon first evaluates the
    asset while the latest complete window is the one that started two days ago, and when the
    window that started yesterday completes, the sensor requests it with nobody launching a run.
    """
    import duckdb
    from dagster import AssetKey, DagsterInstance, DagsterRunStatus

    dep = deployment
    key = AssetKey(list(AUTO_EVENTS_KEY))
    now = datetime.now(UTC)
    boundary = (now + timedelta(seconds=DAEMON_PICKUP_MARGIN + 60)).replace(second=0, microsecond=0)
    window = (boundary - timedelta(days=1), boundary)
    partition = window[0].strftime(AUTO_EVENTS_FMT)  # yesterday's window
    start = boundary.date() - timedelta(days=3)
    folder = dep.repo.folder("auto_events")
    dep.repo.write(
        "pipelines/auto_events/dagster.yaml", _auto_events_config(start, boundary, "on_missing")
    )
    (folder / "pipeline.py").write_text(AUTO_EVENTS_PIPELINE)
    commit = dep.repo.commit("add auto_events, automation: on_missing")
    started = time.monotonic()
    dep.wait_for_keys([AUTO_EVENTS_KEY, *EXAMPLE_KEYS], timeout=60)

    with DagsterInstance.from_config(str(dep.home)) as instance:

        def evaluated() -> tuple[bool, Any]:
            records = instance.schedule_storage.get_auto_materialize_asset_evaluations(
                key=key, limit=1
            )
            return bool(records), [(r.evaluation_id, r.timestamp) for r in records]

        # The daemon must see the asset before `boundary`, or there is no new partition to run.
        (evaluation,) = dep.wait(
            evaluated,
            timeout=(boundary - datetime.now(UTC)).total_seconds() - 5,
            interval=2,
            what=f"the daemon to evaluate {AUTO_EVENTS_KEY} before {boundary:%H:%M:%S} UTC",
        )
        picked_up = evaluation[1] - now.timestamp()

        # Nobody launches a run: the daemon's automation sensor has to request it.
        def materialized() -> tuple[bool, Any]:
            runs = [
                r
                for r in instance.get_runs(limit=50)
                if r.asset_selection and key in r.asset_selection
            ]
            failed = [r for r in runs if r.status == DagsterRunStatus.FAILURE]
            if failed:
                pytest.fail(
                    f"run {failed[0].run_id} of {AUTO_EVENTS_KEY} failed:\n"
                    + "\n".join(dep.gql.run_failure_events(failed[0].run_id))
                    + "\n"
                    + dep.logs()
                )
            records = instance.fetch_materializations(key, limit=20).records
            done = {r.run_id for r in runs if r.status == DagsterRunStatus.SUCCESS}
            for record in records:
                if record.partition_key == partition and record.run_id in done:
                    return True, next(r for r in runs if r.run_id == record.run_id)
            return False, {
                "materializations": [(r.partition_key, r.run_id) for r in records],
                "runs": [(r.run_id, r.status.value, dict(r.tags)) for r in runs],
            }

        run = dep.wait(
            materialized,
            timeout=(boundary - datetime.now(UTC)).total_seconds() + 150,
            interval=2,
            what=f"the automation sensor to materialize {AUTO_EVENTS_KEY} partition {partition}",
        )
    took = time.monotonic() - started
    # The tags the asset daemon puts on the runs it submits for a declarative-automation sensor.
    assert run.tags.get("dagster/from_automation_condition") == "true", run.tags
    assert run.tags.get("dagster/sensor_name") == "elt_repo_automation", run.tags
    assert run.tags.get("dagster/partition") == partition, run.tags
    # Submitted by elt_repo's automation sensor, tagged with the commit of the daemon's
    # definitions: the one that added auto_events (no later commit exists yet).
    assert run.tags.get(COMMIT_TAG) == commit, f"{COMMIT_TAG} should be {commit}: {run.tags}"

    def count_rows() -> tuple[bool, int]:
        with duckdb.connect(str(dep.warehouse), read_only=True) as con:
            (rows,) = con.execute(
                "select count(*) from auto_events_data.events where event_at >= ? and event_at < ?",
                list(window),
            ).fetchone()
        return True, rows

    # A run writing the warehouse (the queue allows one per DuckDB file) may hold its lock.
    rows = dep.wait(count_rows, timeout=30, what="a read-only connection to the warehouse")
    assert rows == ROWS_PER_DAY, (
        f"auto_events_data.events has {rows} rows in partition {partition}, expected {ROWS_PER_DAY}"
    )
    print(
        f"auto_events: first evaluated {picked_up:.1f}s after the commit, partition {partition} "
        f"materialized {took:.1f}s after it"
    )


STORE_SALES_KEY = ("store_sales", "daily_sales")
STORE_SALES_PARTITIONS = "store_sales__keys"
STORE_SALES_STATIC = "static: {partition_keys: [us-east, us-west, eu-central]}"


def test_changed_static_partition_keys_reach_the_instance_and_the_ui(
    deployment: Deployment,
) -> None:
    """A commit that changes store_sales' static keys: us-west goes, ap-south comes.

    The poll sensor's next tick returns the dynamic-partition changes, so within two poll
    intervals (plus a reload) the instance and the webserver both show exactly the new keys.
    The keys are not restored: the broken-config test after this one edits only `retries`.
    (store_sales has `on_code_change: true`, so the daemon may also launch runs of it.)
    """
    from dagster import DagsterInstance

    dep = deployment
    new_keys = ["us-east", "eu-central", "ap-south"]
    config_path = dep.repo.folder("store_sales") / "dagster.yaml"
    text = config_path.read_text()
    assert STORE_SALES_STATIC in text, text
    config_path.write_text(
        text.replace(STORE_SALES_STATIC, f"static: {{partition_keys: [{', '.join(new_keys)}]}}")
    )
    commit = dep.repo.commit("store_sales: ap-south instead of us-west")
    started = time.monotonic()

    with DagsterInstance.from_config(str(dep.home)) as instance:

        def synced() -> tuple[bool, Any]:
            on_instance = instance.get_dynamic_partitions(STORE_SALES_PARTITIONS)
            node = dep.gql.asset_partitions(STORE_SALES_KEY)
            done = sorted(on_instance) == sorted(new_keys) == sorted(node["partitionKeys"])
            return done, {"instance": on_instance, "asset node": node}

        seen = dep.wait(
            synced,
            timeout=2 * POLL_INTERVAL + 20,
            what=f"{STORE_SALES_PARTITIONS} and {list(STORE_SALES_KEY)} to have keys {new_keys}",
        )
    took = time.monotonic() - started
    dims = seen["asset node"]["partitionDefinition"]["dimensionTypes"]
    assert [d["dynamicPartitionsDefinitionName"] for d in dims] == [STORE_SALES_PARTITIONS], dims
    manifest = json.loads((dep.state_dir / "manifest.json").read_text())
    assert manifest["commit"] == commit
    assets = dep.gql.assets()
    assert not _keys_with_prefix(assets, "elt_config_errors"), sorted(assets)
    print(f"store_sales keys synced {took:.1f}s after the commit")


def test_broken_config_keeps_last_good_and_shows_the_error(deployment: Deployment) -> None:
    """store_sales' dagster.yaml breaks: its last good version stays, with a failing check.

    No placeholder: the first asset of the kept pipeline carries the asset check `valid_config`,
    and the repo sensor records its failing evaluation (file, field, message) on the refresh.
    """
    dep = deployment
    config_path = dep.repo.folder("store_sales") / "dagster.yaml"
    text = config_path.read_text()
    assert "retries: 2" in text
    config_path.write_text(text.replace("retries: 2", "retries: many"))
    before = time.time()
    commit = dep.repo.commit("break store_sales")

    # After the reload, exactly one store_sales asset carries the check.
    carrier = dep.wait_for_check_on("store_sales", timeout=60)
    assets = dep.gql.assets()
    # Every pipeline stays, store_sales at its last good version, and with no placeholder.
    missing = [k for k in [*EXAMPLE_KEYS, MANIFEST_KEY] if k not in assets]
    assert not missing, f"missing after the broken commit: {missing}; seen {sorted(assets)}"
    assert ("store_sales",) not in assets, sorted(assets)
    assert not _keys_with_prefix(assets, "elt_config_errors"), sorted(assets)
    assert carrier in assets and carrier in _keys_with_prefix(assets, "store_sales"), carrier

    # The sensor recorded the failing evaluation when it refreshed to the broken commit.
    execution = dep.wait_for_check_execution(carrier, since=before, timeout=30)
    _assert_config_error(execution, STORE_SALES_CONFIG, "retries", NOT_AN_INTEGER)
    # What the asset's Checks tab shows: failed, unless a run of the kept version has
    # materialized it since (the evaluation then predates the latest materialization).
    (check,) = [c for c in _checks(dep.gql.asset_node(carrier)) if c["name"] == CHECK]
    latest = check["executionForLatestMaterialization"]
    assert latest is None or latest["status"] == "FAILED", check

    manifest = json.loads((dep.state_dir / "manifest.json").read_text())
    assert manifest["commit"] == commit
    assert "store_sales" in manifest.get("pinned", {}), manifest.get("pinned")
    assert manifest["pinned"]["store_sales"] != commit

    # The manifest asset was observed on that refresh, with the error in its table.
    meta = dep.wait_for_manifest_observation(commit, timeout=30)
    assert meta["elt/error_count"] >= 1, meta
    assert STORE_SALES_CONFIG in meta["elt/errors"] and "retries" in meta["elt/errors"], meta
    print(f"store_sales valid_config on {list(carrier)}; for the latest materialization: {latest}")


ORDERS_API = "orders_api"
ORDERS_API_CONFIG = f"pipelines/{ORDERS_API}/dagster.yaml"


def test_a_new_broken_pipeline_is_a_placeholder_with_a_failing_check(
    deployment: Deployment,
) -> None:
    """A pipeline that never loaded: a non-executable asset `[orders_api]` in its own group.

    store_sales is still broken from the test before: both checks fail, and the manifest
    asset counts both errors.
    """
    dep = deployment
    dep.repo.write(ORDERS_API_CONFIG, {"tool": "sling", "group": "shop", "retries": "lots"})
    dep.repo.write(
        f"pipelines/{ORDERS_API}/replication.yaml",
        {
            "source": "LOCAL",
            "target": "WAREHOUSE",
            "streams": {"file://./data/orders.csv": {"object": "orders_api.orders"}},
        },
    )
    before = time.time()
    commit = dep.repo.commit("add orders_api, broken from the start")
    key = (ORDERS_API,)
    assets = dep.wait_for_keys([key, *EXAMPLE_KEYS, AUTO_EVENTS_KEY, MANIFEST_KEY], timeout=60)
    assert not _keys_with_prefix(assets, "elt_config_errors"), sorted(assets)
    assert [k for k in assets if k[0] == ORDERS_API] == [key], sorted(assets)

    node = dep.gql.asset_node(key)
    assert node["groupName"] == "shop", node
    assert node["isExecutable"] is False and node["isMaterializable"] is False, node
    assert node["jobNames"] == [], node
    description = node["description"] or ""
    for part in (ORDERS_API_CONFIG, "retries", NOT_AN_INTEGER):
        assert part in description, f"{part!r} not in the description: {description!r}"
    (check,) = [c for c in _checks(node) if c["name"] == CHECK]

    execution = dep.wait_for_check_execution(key, since=before, timeout=30)
    _assert_config_error(execution, ORDERS_API_CONFIG, "retries", NOT_AN_INTEGER)
    # Never materialized: the Checks tab shows this evaluation, failed.
    latest = check["executionForLatestMaterialization"]
    assert latest is not None and latest["status"] == "FAILED", check
    assert latest["evaluation"]["success"] is False, check

    # store_sales is still kept and its check failed again on this refresh.
    carrier = dep.wait_for_check_on("store_sales", timeout=10)
    execution = dep.wait_for_check_execution(carrier, since=before, timeout=30)
    _assert_config_error(execution, STORE_SALES_CONFIG, "retries", NOT_AN_INTEGER)

    # The manifest asset, observed on this refresh: HEAD, both errors, pipelines per tool.
    head = git(dep.repo.path, "rev-parse", "HEAD")
    assert head == commit
    meta = dep.wait_for_manifest_observation(head, timeout=30)
    assert meta["elt/error_count"] >= 2, meta
    for path in (STORE_SALES_CONFIG, ORDERS_API_CONFIG):
        assert path in meta["elt/errors"], meta["elt/errors"]
    per_tool = meta["elt/pipelines_per_tool"]
    assert per_tool == _enabled_pipelines_per_tool(dep.repo, broken={ORDERS_API}), meta
    assert sum(per_tool.values()) == meta["elt/pipelines"], meta
    assert "legacy_export" in meta["elt/disabled"], meta
    assert meta["elt/branch"] == "main" and meta["elt/repo"] == dep.repo.url, meta
    assert isinstance(meta["elt/folders_unchanged"], int), meta
    assert meta["elt/folders_unchanged"] >= 1, meta
    assert meta.get("elt/discovered_at"), meta
