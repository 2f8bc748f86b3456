"""Secrets never leak: `GITHUB_TOKEN` and connection passwords never reach a file on disk, a log
line, run metadata, tags, a URL shown in the UI, or an exception message.

One scenario (module-scoped: it runs real Git, Sling and dlt work once) does what a deployment
does with real secrets: a pipelines repo served over HTTPS that demands the token, `refresh()`,
repo-sensor ticks (a fetch, a tick with no new commit, and one that fails), and a
materialization of every built asset through real Sling and dlt loads. Two of them fail with
the secrets in their error: a Sling stream whose table is missing, read through a connection
with a password, and a dlt source whose exception carries every secret and a URL with the token
as userinfo. Each test below then reads one surface back and searches it for each secret and
its encoded forms. The last test plants markers in every surface and proves the search finds
them there, so no surface check passes because it looked at nothing.

Logs and output are captured the way caplog and capfd do it (a DEBUG handler on the root logger,
file descriptors 1 and 2 redirected to files), but for the whole module-scoped scenario, which
function-scoped fixtures cannot span.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import shutil
import sqlite3
import sys
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dagster import (
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    MaterializeResult,
    MetadataValue,
    asset,
    build_sensor_context,
    materialize,
    serialize_value,
)

from elt_repo.defs.build import build_definitions
from elt_repo.defs.resources import build_resources
from elt_repo.defs.sensors import repo_sensor
from elt_repo.manifest import Manifest
from elt_repo.refresh import refresh
from elt_repo.settings import EXAMPLES_DIR, Settings
from tests.conftest import PROJECT_DIR, PipelinesRepo, make_settings
from tests.git_http_server import GitHttpsServer

pytestmark = pytest.mark.slow

TOKEN = "ghp_SECRETtokenForLeakTest0123456789"
PASSWORD = "pw-LEAKCHECK-8812"
API_KEY = "ak-LEAKCHECK-4471-apikey"


def secret_forms(token: str, password: str, api_key: str) -> dict[str, str]:
    """Every form a secret could be written in: as is, and the token as git sends it."""
    return {
        "GITHUB_TOKEN": token,
        "GITHUB_TOKEN as base64 x-access-token:<token>": base64.b64encode(
            f"x-access-token:{token}".encode()
        ).decode(),
        "GITHUB_TOKEN as base64": base64.b64encode(token.encode()).decode(),
        "SHOP_DB_PASSWORD": password,
        "PIPELINE_API_KEY": api_key,
    }


SECRET_FORMS = secret_forms(TOKEN, PASSWORD, API_KEY)
# Planted by the self-check only; different values, so planting never touches the real checks.
MARKERS = ("ghp_PLANTEDmarkerToken9876543210", "pw-PLANTED-0451", "ak-PLANTED-0452-apikey")
MARKER_FORMS = secret_forms(*MARKERS)

# Loggers that might not propagate to the root logger: the capture listens on them too.
TOOL_LOGGERS = ("dagster", "dlt", "sling", "dagster_sling", "elt_repo", "git", "urllib3")

# -- the surfaces, one test each --------------------------------------------------------------

STATE_FILES = "files in the state dir"
DLT_TRACE = "dlt's trace.pickle in the state dir"
HOME_FILES = "files in DAGSTER_HOME (event log and run DBs, compute logs)"
TEMP_FILES = "temporary files (TMPDIR)"
WAREHOUSE = "the warehouse"
OTHER_FILES = "other files (served repo, certificates)"
RUNS = "runs (tags, config)"
EVENT_DATA = "events (metadata, errors)"
EVENT_MESSAGES = "events (user messages)"
DEFINITIONS = "asset definitions shown in the UI (metadata, code reference URLs)"
MANIFEST = "the manifest"
TICKS = "sensor ticks (skip message, cursor)"
TICK_ERRORS = "exception messages of failed ticks"
RUN_ERRORS = "exception messages of failed runs"
LOGS = "python logs"
STDOUT = "stdout"
STDERR = "stderr"
SURFACES = (
    STATE_FILES,
    DLT_TRACE,
    HOME_FILES,
    TEMP_FILES,
    WAREHOUSE,
    OTHER_FILES,
    RUNS,
    EVENT_DATA,
    EVENT_MESSAGES,
    DEFINITIONS,
    MANIFEST,
    TICKS,
    TICK_ERRORS,
    RUN_ERRORS,
    LOGS,
    STDOUT,
    STDERR,
)

CAUSE_CHAIN_LEAK = (
    "LEAK: elt_repo/defs/failures.py with_failure_details() raises the redacted Failure "
    "`from exc`; Dagster serializes the __cause__ chain (the unredacted exception) into the "
    "STEP_FAILURE and RUN_FAILURE events, which reach the event log, the console log, the "
    "compute logs and the exception a caller of materialize() gets"
)
KNOWN_LEAKS: dict[str, str] = {}  # surfaces that leak today, as strict xfails

# -- the repo --------------------------------------------------------------------------------

SHOP_DB = {"type": "sqlite", "instance": "./shop.sqlite", "password": "${SHOP_DB_PASSWORD}"}

EVENTS_SOURCE = '''\
"""Events from an API that wants a key: the key is used, never printed."""

import os

import dlt


@dlt.source
def events_source(api_key: str):
    @dlt.resource(primary_key="id", write_disposition="replace")
    def events():
        if api_key != os.environ["PIPELINE_API_KEY"]:
            raise ValueError("the source did not get the API key")
        headers = {"Authorization": f"Bearer {api_key}"}  # what a real client would send
        for i in range(5):
            yield {"id": i, "kind": "click", "authorised": bool(headers)}

    return events
'''

BROKEN_SOURCE = '''\
"""An API that refuses the request, with every secret in its error, as careless clients do."""

import os

import dlt


@dlt.source
def broken_source(api_key: str, password: str):
    # elt_repo's own token is not in a pipeline's environment: this finds none.
    token = os.environ.get("GITHUB_TOKEN", "absent")

    @dlt.resource(primary_key="id")
    def orders():
        yield {"id": 1}
        raise RuntimeError(
            f"upstream refused api_key={api_key} password={password} while fetching "
            f"https://x-access-token:{token}@github.com/acme/pipelines.git (token {token})"
        )

    return orders
'''


def write_pipelines(repo: PipelinesRepo) -> str:
    """csv_orders, two Sling pipelines with a password in their connection (one failing), and
    two dlt pipelines that take secrets as arguments (one failing)."""
    repo.copy_example("csv_orders")
    sling_pipelines = {
        "shop_secret": {"main.products": {"object": "shop_secret.products"}},
        "shop_broken": {"main.no_such_table": {"object": "shop_broken.nothing"}},
    }
    for name, streams in sling_pipelines.items():
        repo.folder(name).mkdir(parents=True)
        shutil.copyfile(
            EXAMPLES_DIR / "shop_sqlite" / "shop.sqlite", repo.folder(name) / "shop.sqlite"
        )
        repo.write(
            f"pipelines/{name}/dagster.yaml",
            {"tool": "sling", "sling": {"connections": {"SHOP_DB": SHOP_DB}}},
        )
        repo.write(
            f"pipelines/{name}/replication.yaml",
            {
                "source": "SHOP_DB",
                "target": "WAREHOUSE",
                "defaults": {"mode": "full-refresh"},
                "streams": streams,
            },
        )
    repo.write("pipelines/api_events/pipeline.py", EVENTS_SOURCE)
    repo.write(
        "pipelines/api_events/dagster.yaml",
        {
            "tool": "dlt",
            "dlt": {
                "source": "pipeline.py:events_source",
                "args": {"api_key": "${PIPELINE_API_KEY}"},
            },
        },
    )
    repo.write("pipelines/api_broken/pipeline.py", BROKEN_SOURCE)
    args = {"api_key": "${PIPELINE_API_KEY}", "password": "${SHOP_DB_PASSWORD}"}
    repo.write(
        "pipelines/api_broken/dagster.yaml",
        {"tool": "dlt", "dlt": {"source": "pipeline.py:broken_source", "args": args}},
    )
    return repo.commit("pipelines with secrets")


# -- capturing logs and output -----------------------------------------------------------------


@dataclass
class Captured:
    logs: list[str] = field(default_factory=list)
    out: str = ""
    err: str = ""


class _LogLines(logging.Handler):
    """Every record at DEBUG and up, formatted with its traceback, as caplog.text has it."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def capturing(directory: Path) -> Iterator[Captured]:
    """Python logs at DEBUG, and everything written to file descriptors 1 and 2 (Python's and
    subprocesses' stdout and stderr), into `directory`, which no file scan reads."""
    captured = Captured()
    handler = _LogLines(captured.logs)
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in TOOL_LOGGERS)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    sys.stdout.flush()
    sys.stderr.flush()
    out_path, err_path = directory / "stdout", directory / "stderr"
    saved = (os.dup(1), os.dup(2))
    old_streams = sys.stdout, sys.stderr
    with open(out_path, "wb") as out_sink, open(err_path, "wb") as err_sink:
        os.dup2(out_sink.fileno(), 1)
        os.dup2(err_sink.fileno(), 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    try:
        yield captured
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = old_streams
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
        captured.out = out_path.read_text(errors="replace")
        captured.err = err_path.read_text(errors="replace")


# -- the scenario ------------------------------------------------------------------------------


@dataclass
class Scenario:
    root: Path  # everything the scenario wrote is under here
    settings: Settings
    instance: DagsterInstance
    manifest: Manifest
    defs: Definitions
    ticks: list[Any]  # SensorExecutionData of each tick
    tick_errors: list[str]  # each failing tick's exception chain
    run_errors: list[str]  # each failed run's exception chain, as a raising caller gets it
    outcomes: dict[str, bool]  # op name -> success
    auth_headers: set[str | None]
    captured: Captured

    @property
    def home(self) -> Path:
        return self.root / "dagster_home"


def exception_chain(exc: BaseException) -> str:
    """An exception as it is shown: its traceback with every exception it was raised from."""
    return f"{exc!r}\n" + "".join(traceback.format_exception(exc))


def _run_everything(root: Path, instance: DagsterInstance) -> dict[str, Any]:
    (root / "served").mkdir()
    (root / "tls").mkdir()
    server = GitHttpsServer(root / "served", TOKEN, root / "tls")
    server.start()
    try:
        os.environ["GIT_SSL_CAINFO"] = str(server.cafile)  # the fixture's monkeypatch restores it
        write_pipelines(PipelinesRepo(server.root / "pipes"))
        settings = make_settings(root, server.url("pipes"), GITHUB_TOKEN=TOKEN)
        manifest = refresh(settings).manifest

        sensor = repo_sensor(settings, loaded=None)
        ticks = [  # a fetch, then a tick that finds no new commit
            sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=cursor))
            for cursor in (None, manifest.commit)
        ]
        # A tick that fails: the token, given in the URL this time, is accepted, but no
        # repository is there. Its own state dir (inside the scanned one) keeps the failure out
        # of the manifest the runs use.
        missing = make_settings(
            root,
            server.url("nowhere").replace("https://", f"https://x-access-token:{TOKEN}@"),
            ELT_STATE_DIR=str(settings.state_dir / "nowhere"),
        )
        with pytest.raises(Exception) as failed:
            repo_sensor(missing, loaded=None).evaluate_tick(
                build_sensor_context(instance=instance, cursor=None)
            )
        auth_headers = {auth for _, _, auth in server.requests}
    finally:
        server.stop()

    defs = build_definitions(manifest, settings)
    resources = build_resources(settings)
    outcomes, run_errors = {}, []
    for assets_def in defs.assets or []:
        if not isinstance(assets_def, AssetsDefinition) or not assets_def.is_executable:
            continue
        result = materialize(
            [assets_def], instance=instance, resources=resources, raise_on_error=False
        )
        outcomes[assets_def.op.name] = result.success
        if not result.success:  # again, as a caller that lets the failure raise sees it
            with pytest.raises(Exception) as raised:
                materialize([assets_def], instance=instance, resources=resources)
            run_errors.append(exception_chain(raised.value))
    return {
        "settings": settings,
        "manifest": manifest,
        "defs": defs,
        "ticks": ticks,
        "tick_errors": [exception_chain(failed.value)],
        "run_errors": run_errors,
        "outcomes": outcomes,
        "auth_headers": auth_headers,
    }


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    root = tmp_path_factory.mktemp("leakcheck")
    captures = tmp_path_factory.mktemp("leakcheck_captured")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROJECT_DIR / "dagster.yaml", home / "dagster.yaml")
    (root / "tmp").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {
            "GITHUB_TOKEN": TOKEN,
            "SHOP_DB_PASSWORD": PASSWORD,
            "PIPELINE_API_KEY": API_KEY,
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_SSL_CAINFO": "",
            "TMPDIR": str(root / "tmp"),  # Sling's temp files land where the scan reads
        }.items():
            mp.setenv(name, value)
        mp.setattr(tempfile, "tempdir", str(root / "tmp"))  # dagster-sling's replication file
        # configure_process() sets DLT_DATA_DIR to this scenario's state dir; setting each
        # one first makes the monkeypatch remove whatever the scenario leaves behind.
        for name in (
            "ELT_WEBSERVER_URL",
            "GIT_CONFIG_COUNT",
            "GIT_ASKPASS",
            "SSH_ASKPASS",
            "DLT_DATA_DIR",
            "RUNTIME__DLTHUB_TELEMETRY",
        ):
            mp.setenv(name, "")
            mp.delenv(name)
        with DagsterInstance.from_config(str(home)) as instance:
            with capturing(captures) as captured:
                done = _run_everything(root, instance)
            yield Scenario(root=root, instance=instance, captured=captured, **done)


# -- reading every surface back -----------------------------------------------------------------


def sqlite_values(path: Path) -> Iterator[tuple[str, str | bytes]]:
    """Every text and blob value of a SQLite file: a raw scan misses values split over pages."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        for table in tables:
            for row in con.execute(f'select * from "{table}"'):
                for value in row:
                    if isinstance(value, str | bytes):
                        yield table, value
    finally:
        con.close()


def duckdb_values(path: Path) -> Iterator[tuple[str, str]]:
    """Every value of every table of a DuckDB file as text (DuckDB compresses what it stores),
    with dlt's compressed pipeline state decoded."""
    from dlt.pipeline.state_sync import decompress_state

    with duckdb.connect(str(path), read_only=True) as con:
        tables = con.sql("select database_name, schema_name, table_name from duckdb_tables()")
        for db, schema, table in tables.fetchall():
            relation = con.sql(f'select * from "{db}"."{schema}"."{table}"')
            for row in relation.fetchall():
                for column, value in zip(relation.columns, row, strict=True):
                    if table == "_dlt_pipeline_state" and column == "state" and value:
                        yield table, json.dumps(decompress_state(value), default=str)
                    yield table, str(value)


def file_surface(scenario: Scenario, path: Path) -> str:
    state = scenario.settings.state_dir
    if path.is_relative_to(scenario.settings.dlt_dir) and path.name == "trace.pickle":
        return DLT_TRACE
    if path.is_relative_to(state):
        return STATE_FILES
    if path.is_relative_to(scenario.home):
        return HOME_FILES
    if path.is_relative_to(scenario.root / "tmp"):
        return TEMP_FILES
    if path.name.startswith(scenario.settings.warehouse.file.name):
        return WAREHOUSE
    return OTHER_FILES


def places(scenario: Scenario) -> Iterator[tuple[str, str, str | bytes]]:
    """(surface, place, what is there) for every place a secret could land."""
    # Every file the scenario wrote: bytes, and SQLite and DuckDB files row by row.
    for path in sorted(scenario.root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        surface, name = file_surface(scenario, path), str(path.relative_to(scenario.root))
        data = path.read_bytes()
        yield surface, name, data
        if data.startswith(b"SQLite format 3\x00"):
            for table, value in sqlite_values(path):
                yield surface, f"{name} table {table}", value
        elif path.suffix == ".duckdb":
            for table, value in duckdb_values(path):
                yield surface, f"{name} table {table}", value
    # The instance: runs, and every event of every run, with errors and their causes.
    instance = scenario.instance
    for run in instance.get_runs():
        yield RUNS, f"run {run.run_id} tags", json.dumps(dict(run.tags))
        yield RUNS, f"run {run.run_id}", serialize_value(run)
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            place = f"run {run.run_id} {event.event_type_value if event else 'log'}"
            yield EVENT_MESSAGES, place, entry.user_message or ""
            if event is not None:
                yield EVENT_DATA, place, serialize_value(event)
        for record in instance.get_records_for_run(run.run_id).records:
            yield (
                EVENT_DATA,
                f"run {run.run_id} record {record.storage_id}",
                serialize_value(record.event_log_entry),
            )
    # What the UI shows of each asset, sensor and schedule.
    for item in scenario.defs.assets or []:
        for spec in getattr(item, "specs", None) or [item]:
            yield DEFINITIONS, str(spec.key), repr(spec)
            for key, value in (spec.metadata or {}).items():
                yield DEFINITIONS, f"{spec.key} {key}", serialize_value(value)
    for item in [*(scenario.defs.sensors or []), *(scenario.defs.schedules or [])]:
        yield DEFINITIONS, item.name, repr(item)
    yield MANIFEST, "the manifest refresh() returned", json.dumps(scenario.manifest.to_dict())
    for i, tick in enumerate(scenario.ticks):
        yield TICKS, f"tick {i}", f"{tick.skip_message} {tick.cursor} {serialize_value(tick)}"
    for i, error in enumerate(scenario.tick_errors):
        yield TICK_ERRORS, f"failed tick {i}", error
    for i, error in enumerate(scenario.run_errors):
        yield RUN_ERRORS, f"failed run {i}", error
    yield LOGS, "python logs", "\n".join(scenario.captured.logs)
    yield STDOUT, "stdout", scenario.captured.out
    yield STDERR, "stderr", scenario.captured.err


def search(scenario: Scenario, forms: dict[str, str]) -> dict[str, list[str]]:
    """{surface: ["<place>: <names of the secret forms found there>"]} for every hit."""
    hits: dict[str, list[str]] = {}
    for surface, place, data in places(scenario):
        raw = data.encode(errors="replace") if isinstance(data, str) else data
        found = [name for name, value in forms.items() if value.encode() in raw]
        if found:
            hits.setdefault(surface, []).append(f"{place}: {', '.join(found)}")
    return hits


@pytest.fixture(scope="module")
def leaks(scenario: Scenario) -> dict[str, list[str]]:
    return search(scenario, SECRET_FORMS)


# -- the tests --------------------------------------------------------------------------------


def test_the_secrets_were_really_used(scenario: Scenario) -> None:
    """Git sent the token, the dlt source got the key, Sling gets the password, the runs ran."""
    basic = SECRET_FORMS["GITHUB_TOKEN as base64 x-access-token:<token>"]
    assert f"Basic {basic}" in scenario.auth_headers
    assert scenario.manifest.errors == ()
    assert scenario.outcomes == {
        "api_broken__dlt": False,
        "api_events__dlt": True,  # it fails unless it got the real key
        "csv_orders__sling": True,
        "shop_broken__sling": False,
        "shop_secret__sling": True,
    }
    commit = scenario.manifest.commit
    assert scenario.ticks[0].cursor == commit == scenario.ticks[1].cursor
    assert scenario.ticks[1].skip_message.startswith(f"no new commit: main is at {commit}")
    assert "refresh failed, keeping nothing" in scenario.tick_errors[0]
    assert "https://127.0.0.1:" in scenario.tick_errors[0] and "/nowhere" in scenario.tick_errors[0]
    # The connection Sling runs with (dagster-sling hands it to Sling's environment).
    (spec,) = [p for p in scenario.manifest.pipelines if p.name == "shop_secret"]
    sling = build_resources(scenario.settings)["sling"]
    folder = scenario.settings.repo_state_dir / "worktrees" / commit / spec.folder
    env = sling.for_pipeline(
        spec.sling.connections, folder, scenario.settings.warehouse
    ).prepare_environment()
    assert json.loads(env["SHOP_DB"])["password"] == PASSWORD


def test_failures_come_out_redacted_and_still_say_what_failed(scenario: Scenario) -> None:
    failures = {}
    for run in scenario.instance.get_runs():
        for entry in scenario.instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE):
            data = entry.dagster_event.step_failure_data
            failures[entry.step_key] = (data.error, data.user_failure_data)
    assert set(failures) == {"api_broken__dlt", "shop_broken__sling"}
    error, failure = failures["api_broken__dlt"]
    assert failure.description.startswith("api_broken failed on attempt 1 of 1: PipelineStepFailed")
    assert error.message.startswith("dagster._core.definitions.events.Failure: api_broken failed")
    message = failure.metadata["elt/error"].value
    assert "upstream refused api_key=*** password=*** while fetching" in message
    # The source looked for the Git token and found none: it is never in pipeline code's env.
    assert "https://***@github.com/acme/pipelines.git (token absent)" in message
    assert "api_key=***" in failure.metadata["elt/log_tail"].value
    sling_failure = failures["shop_broken__sling"][1]
    assert "no_such_table" in sling_failure.metadata["elt/error"].value


@pytest.mark.parametrize(
    "surface",
    [
        pytest.param(
            surface,
            marks=[
                pytest.mark.xfail(strict=True, raises=AssertionError, reason=KNOWN_LEAKS[surface])
            ]
            if surface in KNOWN_LEAKS
            else [],
        )
        for surface in SURFACES
    ],
)
def test_no_secret_reaches(surface: str, leaks: dict[str, list[str]]) -> None:
    found = leaks.get(surface, [])
    assert not found, f"secrets found in {surface}:\n" + "\n".join(found)


def test_the_search_finds_secrets_planted_in_every_surface(
    scenario: Scenario, tmp_path: Path
) -> None:
    """Plant markers (stand-ins for the secrets, in the same forms) in every surface, and search
    again: every surface must report them. A check that reads nothing would pass for nothing."""
    token, password, api_key = MARKERS
    basic = MARKER_FORMS["GITHUB_TOKEN as base64 x-access-token:<token>"]
    settings = scenario.settings
    (settings.state_dir / "planted.txt").write_text(f"token={token}\n")
    (settings.dlt_dir / "planted").mkdir()
    (settings.dlt_dir / "planted" / "trace.pickle").write_bytes(password.encode())
    (scenario.home / "planted.bin").write_bytes(b"Authorization: Basic " + basic.encode())
    (scenario.root / "tmp" / "planted.json").write_text(json.dumps({"key": api_key}))
    (scenario.root / "tls" / "planted.pem").write_text(token)
    with duckdb.connect(str(settings.warehouse)) as con:
        con.execute("create or replace table main.planted as select ? as v", [password])

    @asset(name="planted")
    def planted_asset(context) -> MaterializeResult:  # no annotation: a string here
        context.log.info(f"connecting with {password}")  # an event's user message
        print(f"stdout {token}")
        logging.getLogger("dlt").debug("python log %s", api_key)
        os.write(2, f"stderr {token}\n".encode())
        return MaterializeResult(metadata={"key": api_key})

    with capturing(tmp_path) as captured:
        result = materialize([planted_asset], instance=scenario.instance, tags={"planted": token})
        assert result.success
    defs = Definitions(
        assets=[
            AssetSpec(
                AssetKey("planted"),
                metadata={"link": MetadataValue.url(f"https://x-access-token:{token}@host/r")},
            )
        ]
    )
    planted = dataclasses.replace(
        scenario,
        defs=defs,
        manifest=dataclasses.replace(scenario.manifest, url=f"https://{token}@host/r.git"),
        ticks=[type(scenario.ticks[1])(skip_message="no new commit", cursor=token)],
        tick_errors=[f"GitSourceError: authentication failed with {basic}"],
        run_errors=[f"Failure: caused by RuntimeError: {password}"],
        captured=captured,
    )

    hits = search(planted, MARKER_FORMS)
    assert sorted(hits) == sorted(SURFACES), "surfaces blind to a planted marker"
    for surface, expected in (
        (HOME_FILES, "GITHUB_TOKEN as base64 x-access-token:<token>"),
        (EVENT_MESSAGES, "SHOP_DB_PASSWORD"),
        (EVENT_DATA, "PIPELINE_API_KEY"),
        (RUNS, "GITHUB_TOKEN"),
        (LOGS, "PIPELINE_API_KEY"),
        (WAREHOUSE, "SHOP_DB_PASSWORD"),
    ):
        assert any(expected in hit for hit in hits[surface]), (surface, hits[surface])
    # The real secrets are not among what was planted.
    assert not set(MARKER_FORMS.values()) & set(SECRET_FORMS.values())
