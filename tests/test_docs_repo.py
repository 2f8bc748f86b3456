"""Pipelines written the way dlt's and Sling's own docs write them: what Dagster shows is what
the tools write.

tests/fixtures/docs_repo holds eight pipelines: dlt's `sql_database`, `sql_table` (incremental,
merge), `rest_api_source` (paginated, a child resource) and `filesystem` (`read_csv`,
`read_jsonl`); Sling's `schema.*` wildcard, a `{stream_schema}_{stream_table}` object, a file
glob named by `{stream_file_name}` and an incremental stream. They read a real PostgreSQL
server, a local HTTP API (tests/local_api.py) and files committed beside them; every
connection string and password comes from the environment.

Each pipeline is refreshed and materialized once through elt_repo, and run once more by the
plain tool into a DuckDB file of its own (`dlt.pipeline(...).run(source)`, `sling run -r`).
Every check compares the two.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import string
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from dagster import AssetKey, AssetsDefinition, DagsterInstance, materialize

from elt_repo.defs.build import build_definitions
from elt_repo.defs.resources import build_resources
from elt_repo.manifest import Manifest
from elt_repo.refresh import refresh
from elt_repo.settings import Settings
from elt_repo.tool_env import sling_environment
from tests.conftest import PROJECT_DIR, PipelinesRepo, make_settings
from tests.local_api import LocalApi
from tests.postgres_server import PostgresServer
from tests.sling_cli import run_sling

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).parent / "fixtures" / "docs_repo"
DLT_PIPELINES = ("shop_db", "sales_orders", "blog_api", "local_files")
SLING_PIPELINES = ("shop_mirror", "crm_copy", "store_files", "billing_invoices")
PIPELINES = DLT_PIPELINES + SLING_PIPELINES

# Our own schemas on the session's shared server: no other test uses these names.
SCHEMAS = ("docs_shop", "docs_sales", "docs_crm", "docs_billing")
SETUP_SQL = """
create schema docs_shop;
create table docs_shop.customers (id int primary key, name text not null, email text);
insert into docs_shop.customers values
  (1, 'Ada', 'ada@example.com'), (2, 'Grace', 'grace@example.com'), (3, 'Linus', null),
  (4, 'Barbara', 'barbara@example.com'), (5, 'Edsger', 'edsger@example.com');
create table docs_shop.products (id int primary key, name text, price numeric(10, 2));
insert into docs_shop.products values
  (1, 'Keyboard', 49.90), (2, 'Mouse', 19.50), (3, 'Monitor', 199.00), (4, 'Cable', 4.25);
create table docs_shop.orders (
  id int primary key, customer_id int references docs_shop.customers (id),
  product_id int references docs_shop.products (id), quantity int, ordered_at timestamptz);
insert into docs_shop.orders values
  (1, 1, 1, 1, '2024-03-01 10:00+00'), (2, 1, 2, 2, '2024-03-01 11:00+00'),
  (3, 2, 3, 1, '2024-03-02 09:30+00'), (4, 3, 4, 5, '2024-03-02 12:00+00'),
  (5, 4, 1, 1, '2024-03-03 08:15+00'), (6, 5, 2, 1, '2024-03-03 16:40+00'),
  (7, 5, 4, 3, '2024-03-04 07:05+00');

create schema docs_sales;
create table docs_sales.orders (
  id int primary key, customer text not null, amount numeric(10, 2) not null,
  status text not null, updated_at timestamptz not null);
insert into docs_sales.orders values
  (1, 'ada', 10.00, 'paid', '2024-01-01 10:00+00'),
  (2, 'grace', 25.50, 'paid', '2024-01-02 10:00+00'),
  (3, 'linus', 7.25, 'open', '2024-01-03 10:00+00'),
  (4, 'barbara', 99.99, 'open', '2024-01-04 10:00+00'),
  (5, 'edsger', 12.00, 'open', '2024-01-05 10:00+00'),
  (6, 'alan', 1.50, 'open', '2024-01-05 10:00+00');

create schema docs_crm;
create table docs_crm.accounts (id int primary key, name text not null, active boolean not null);
insert into docs_crm.accounts values
  (1, 'Acme', true), (2, 'Globex', false), (3, 'Initech', true), (4, 'Umbrella', true);
create table docs_crm.contacts (
  id int primary key, account_id int, email text, phone text);
insert into docs_crm.contacts values
  (1, 1, 'wile@acme.test', '555-0101'), (2, 1, 'road@acme.test', null),
  (3, 2, 'hank@globex.test', '555-0199'), (4, 3, 'peter@initech.test', '555-0123'),
  (5, 4, 'alice@umbrella.test', null);

create schema docs_billing;
create table docs_billing.invoices (
  id int primary key, customer text not null, amount numeric(10, 2) not null,
  updated_at timestamptz not null);
insert into docs_billing.invoices values
  (1, 'acme', 100.00, '2024-02-01 09:00+00'), (2, 'globex', 250.00, '2024-02-02 09:00+00'),
  (3, 'initech', 75.50, '2024-02-03 09:00+00'), (4, 'umbrella', 12.00, '2024-02-04 09:00+00'),
  (5, 'acme', 300.00, '2024-02-05 09:00+00');
"""

# The incremental pipelines: the source table, the warehouse table, and the columns compared.
INCREMENTAL = {
    "sales_orders": (
        "docs_sales.orders",
        "sales.orders",
        ("id", "customer", "amount", "status"),
        "insert into docs_sales.orders values (100, 'new', 5.00, 'open', now())",
    ),
    "billing_invoices": (
        "docs_billing.invoices",
        "billing.invoices",
        ("id", "customer", "amount"),
        "insert into docs_billing.invoices values (100, 'new', 5.00, now())",
    ),
}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_INSERTED = re.compile(r'inserted (\d+) rows into "([^"]+)"\."([^"]+)"')


def dagster_yaml(folder: Path) -> dict[str, Any]:
    return yaml.safe_load((folder / "dagster.yaml").read_text()) or {}


def filled(value: Any, env: Mapping[str, str], folder: Path | None = None) -> Any:
    """`${VAR}` filled from `env` and `./x` made absolute, the way an author's shell would."""
    if isinstance(value, str):
        text = string.Template(value).substitute(env)
        return str((folder / text).resolve()) if folder and text.startswith("./") else text
    if isinstance(value, Mapping):
        return {k: filled(v, env, folder) for k, v in value.items()}
    return value


def duck_tables(path: Path, schemas: tuple[str, ...] | None = None) -> dict[tuple[str, str], int]:
    """(schema, table) -> rows of every table in a DuckDB file, or in some of its schemas."""
    with duckdb.connect(str(path), read_only=True) as con:
        names = con.execute(
            "select schema_name, table_name from duckdb_tables() order by 1, 2"
        ).fetchall()
        return {
            (schema, table): con.execute(f'select count(*) from "{schema}"."{table}"').fetchone()[0]
            for schema, table in names
            if schemas is None or schema in schemas
        }


def duck_rows(path: Path, table: str, columns: tuple[str, ...]) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(f"select {', '.join(columns)} from {table} order by 1").fetchall()


@dataclass
class Plain:
    """What a plain run of the tool wrote: its DuckDB file, its tables, what its last run loaded."""

    tool: str
    file: Path
    schemas: tuple[str, ...]
    loaded: dict[str, int] = field(default_factory=dict)  # table -> rows its last run loaded

    def tables(self) -> dict[tuple[str, str], int]:
        """The tables the tool writes: a dlt dataset's without dlt's own; all of Sling's."""
        found = duck_tables(self.file, self.schemas)
        return {k: n for k, n in found.items() if not k[1].startswith("_dlt_")}

    def top_tables(self) -> dict[tuple[str, str], int]:
        """The tables that are assets: not dlt's nested tables (`posts__tags`)."""
        return {k: n for k, n in self.tables().items() if "__" not in k[1]}


class PlainRunner:
    """Runs a pipeline folder's files with the plain tool, as their author would."""

    def __init__(self, root: Path, work: Path):
        self.root, self.work = root, work  # root: the pipelines folder of the repo

    def dlt(self, name: str) -> Plain:
        import dlt

        folder = self.root / name
        config = dagster_yaml(folder)["dlt"]
        file, _, function = config["source"].partition(":")
        module_name = f"docs_plain_{name}.{Path(file).stem}"
        spec = importlib.util.spec_from_file_location(module_name, folder / file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dlt looks a source's module up there
        spec.loader.exec_module(module)
        source = getattr(module, function)(**filled(config.get("args") or {}, os.environ, folder))
        dataset = config.get("dataset_name") or name
        pipeline = dlt.pipeline(
            pipeline_name=f"plain_{name}",
            destination=dlt.destinations.duckdb(
                credentials=str(self.work / f"plain_{name}.duckdb")
            ),
            dataset_name=dataset,
            pipelines_dir=str(self.work / "dlt"),
        )
        info = pipeline.run(source)
        assert not info.has_failed_jobs, info
        counts = pipeline.last_trace.last_normalize_info.row_counts
        plain = Plain("dlt", self.work / f"plain_{name}.duckdb", (dataset,))
        # dlt counts only the tables it normalized rows for: the others loaded none.
        plain.loaded = {table: counts.get(table, 0) for _, table in plain.tables()}
        return plain

    def sling(self, name: str) -> Plain:
        folder = self.root / name
        truth = self.work / f"plain_{name}.duckdb"
        own = (dagster_yaml(folder).get("sling") or {}).get("connections") or {}
        env = {
            **sling_environment(self.work / "sling"),
            "PATH": os.environ["PATH"],
            "WAREHOUSE": json.dumps({"type": "duckdb", "instance": str(truth)}),
            # Connections the author exports, as Sling's docs set them up.
            **{k: v for k, v in os.environ.items() if k == "DOCS_PG"},
            **{k: json.dumps(filled(v, os.environ)) for k, v in own.items()},
        }
        done = run_sling(["run", "-r", "replication.yaml"], env, cwd=folder)
        out = _ANSI.sub("", done.stdout + done.stderr)
        assert done.returncode == 0, out[-3000:]
        loaded = {table: int(n) for n, _, table in _INSERTED.findall(out)}
        schemas = tuple(sorted({schema for _, schema, _ in _INSERTED.findall(out)}))
        return Plain("sling", truth, schemas, loaded)

    def run(self, name: str) -> Plain:
        return self.dlt(name) if name in DLT_PIPELINES else self.sling(name)


@dataclass
class DocsRepo:
    """The fixture repo refreshed and materialized once, and the plain tools' runs of it."""

    repo: PipelinesRepo
    settings: Settings
    manifest: Manifest
    assets: dict[str, AssetsDefinition]  # pipeline -> its multi-asset
    resources: dict[str, Any]
    instance: DagsterInstance
    first: dict[AssetKey, dict[str, Any]]  # metadata of the first materializations
    failures: dict[str, str]  # pipeline -> its step's failure, if it failed
    plain_runs: dict[str, Plain | str]  # pipeline -> the plain tool's run, or how it failed
    runner: PlainRunner

    def plain(self, name: str) -> Plain:
        run = self.plain_runs[name]
        if isinstance(run, str):
            pytest.fail(f"the plain tool's run of {name} failed: {run}")
        return run

    def ran(self, name: str) -> None:
        """Fail, with the step's error, if the pipeline's first materialization failed."""
        if name in self.failures:
            pytest.fail(f"{name} failed to materialize: {self.failures[name]}")

    def keys(self, name: str) -> set[AssetKey]:
        return set(self.assets[name].keys) if name in self.assets else set()

    def materialize(self, name: str) -> dict[AssetKey, dict[str, Any]]:
        result = materialize(
            [self.assets[name]],
            instance=self.instance,
            resources=self.resources,
            raise_on_error=False,
        )
        assert result.success, step_failures(result)
        return {
            e.materialization.asset_key: e.materialization.metadata
            for e in result.get_asset_materialization_events()
        }


def step_failures(result: Any) -> str:
    return "\n".join(
        f"{e.step_key}: {e.step_failure_data.error.message}"
        for e in result.all_events
        if e.is_step_failure
    )


def value(metadata: Mapping[str, Any], key: str) -> Any:
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


@pytest.fixture(scope="module")
def docs(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocsRepo]:
    tmp = tmp_path_factory.mktemp("docs_repo")
    drop = "; ".join(f"drop schema if exists {s} cascade" for s in SCHEMAS)
    postgres.execute(drop)
    postgres.execute(SETUP_SQL)
    api = LocalApi().start()
    url = f"{postgres.url}?sslmode=disable"
    env = {
        # Each pipeline reads its connection the way its tool's docs do; none is in the repo.
        "PG_URL": url,  # ${PG_URL} in dagster.yaml (dlt args, a Sling connection)
        "DOCS_PG": url,  # a Sling connection exported by name
        "SOURCES__SQL_DATABASE__CREDENTIALS": url,  # dlt's own config key
        "PG_HOST": postgres.host,
        "PG_PORT": str(postgres.port),
        "PG_USER": postgres.user,
        "PG_PASSWORD": postgres.password,
        "PG_DATABASE": postgres.dbname,
        "BLOG_API_URL": api.base_url,
    }
    patch = pytest.MonkeyPatch()
    try:
        for key, val in env.items():
            patch.setenv(key, val)
        repo = PipelinesRepo(tmp / "origin")
        shutil.copytree(FIXTURE, repo.path, dirs_exist_ok=True)
        repo.commit("pipelines as the tools' docs write them")
        settings = make_settings(tmp, repo.url)
        manifest = refresh(settings).manifest
        defs = build_definitions(manifest, settings)
        resources = build_resources(settings)
        assets = {
            next(iter(a.keys)).path[0]: a
            for a in defs.assets
            if isinstance(a, AssetsDefinition) and a.is_executable
        }
        home = tmp / "dagster_home"
        home.mkdir()
        shutil.copyfile(PROJECT_DIR / "dagster.yaml", home / "dagster.yaml")
        with DagsterInstance.from_config(str(home)) as instance:
            # One run of every pipeline: one step per pipeline, each succeeding or failing alone.
            result = materialize(
                list(assets.values()), instance=instance, resources=resources, raise_on_error=False
            )
            first = {
                e.materialization.asset_key: e.materialization.metadata
                for e in result.get_asset_materialization_events()
            }
            failures = {
                e.step_key.split("__")[0]: e.step_failure_data.error.message
                for e in result.all_events
                if e.is_step_failure
            }
            # The plain tools, on the same files and the same source data, before any test
            # changes it.
            runner = PlainRunner(repo.path / "pipelines", tmp / "plain")
            (tmp / "plain").mkdir()
            plain: dict[str, Plain | str] = {}
            for name in PIPELINES:
                try:
                    plain[name] = runner.run(name)
                except Exception as exc:  # each pipeline's tests report it, the others run
                    plain[name] = f"{type(exc).__name__}: {exc}"[:3000]
            yield DocsRepo(
                repo,
                settings,
                manifest,
                assets,
                resources,
                instance,
                first,
                failures,
                plain,
                runner,
            )
    finally:
        patch.undo()
        api.stop()
        postgres.execute(drop)


def test_every_pipeline_is_discovered_without_errors(docs: DocsRepo) -> None:
    assert [str(e) for e in docs.manifest.errors] == []
    assert sorted(p.name for p in docs.manifest.pipelines) == sorted(PIPELINES)
    assert {p.name: p.tool for p in docs.manifest.pipelines} == {
        **{n: "dlt" for n in DLT_PIPELINES},
        **{n: "sling" for n in SLING_PIPELINES},
    }


@pytest.mark.parametrize("name", PIPELINES)
def test_asset_keys_are_the_tables_the_tool_writes(docs: DocsRepo, name: str) -> None:
    plain = docs.plain(name)
    assert plain.top_tables(), f"the plain {plain.tool} run of {name} wrote no table"
    assert docs.keys(name) == {AssetKey([name, t]) for _, t in plain.top_tables()}
    # The warehouse holds, in those schemas, exactly the tables the plain tool wrote.
    written = duck_tables(docs.settings.warehouse, plain.schemas)
    assert {k for k in written if not k[1].startswith("_dlt_")} == set(plain.tables())


@pytest.mark.parametrize("name", PIPELINES)
def test_every_asset_materializes(docs: DocsRepo, name: str) -> None:
    docs.ran(name)
    assert docs.keys(name), f"{name} has no assets"
    assert docs.keys(name) - set(docs.first) == set(), "assets the run did not materialize"


@pytest.mark.parametrize("name", PIPELINES)
def test_row_count_is_the_tables_rows_in_the_warehouse_and_the_plain_tools(
    docs: DocsRepo, name: str
) -> None:
    """`dagster/row_count`: the rows of the table after the run, read from the warehouse."""
    docs.ran(name)
    warehouse = duck_tables(docs.settings.warehouse)
    top = docs.plain(name).top_tables()
    shown = {t: docs.first[AssetKey([name, t])] for _, t in top}
    assert {t: value(md, "dagster/table_name") for t, md in shown.items()} == {
        t: f"warehouse.{s}.{t}" for s, t in top
    }
    counts = {t: value(md, "dagster/row_count") for t, md in shown.items()}
    assert counts == {t: warehouse.get((s, t)) for s, t in top}, "dagster/row_count != warehouse"
    assert counts == {t: n for (_, t), n in top.items()}, "dagster/row_count != the plain tool's"
    # dlt's nested tables are no assets; their parent's materialization counts them.
    nested = {k: n for k, n in docs.plain(name).tables().items() if "__" in k[1]}
    for (schema, table), rows in nested.items():
        by_table = value(shown[table.split("__")[0]], "elt/rows_by_table")
        assert (table, by_table[table], warehouse[(schema, table)]) == (table, rows, rows)


@pytest.mark.parametrize("name", PIPELINES)
def test_rows_loaded_is_what_the_plain_tool_loaded(docs: DocsRepo, name: str) -> None:
    """`elt/rows_loaded`: the rows this run loaded, as the tool itself counts them."""
    docs.ran(name)
    plain = docs.plain(name)
    loaded = {
        t: value(docs.first[AssetKey([name, t])], "elt/rows_loaded") for _, t in plain.top_tables()
    }
    assert loaded == {t: plain.loaded[t] for _, t in plain.top_tables()}


def comparable(rows: list[tuple]) -> list[tuple]:
    """Rows from Postgres and from DuckDB in one shape: decimals as Decimal, text as text."""
    return [
        tuple(Decimal(str(v)) if isinstance(v, float | Decimal) else v for v in r) for r in rows
    ]


@pytest.mark.parametrize("name", sorted(INCREMENTAL))
def test_an_incremental_rerun_adds_no_duplicates_and_picks_up_exactly_a_change(
    docs: DocsRepo, postgres: PostgresServer, name: str
) -> None:
    source, target, columns, insert = INCREMENTAL[name]
    key = AssetKey([name, target.split(".")[1]])
    warehouse, plain = docs.settings.warehouse, docs.plain(name)

    def source_rows() -> list[tuple]:
        return comparable(postgres.execute(f"select {', '.join(columns)} from {source} order by 1"))

    def run_both(loaded: int) -> list[tuple]:
        """Materialize the pipeline and rerun the plain tool; both must load `loaded` rows."""
        metadata = docs.materialize(name)[key]
        rerun = docs.runner.run(name)
        rows = comparable(duck_rows(warehouse, target, columns))
        ids = [r[0] for r in rows]
        assert len(ids) == len(set(ids)), f"duplicate primary keys in {target}: {sorted(ids)}"
        assert rows == source_rows(), f"{target} differs from {source}"
        assert rows == comparable(duck_rows(plain.file, target, columns)), "differs from plain"
        assert value(metadata, "dagster/row_count") == len(rows)
        assert (value(metadata, "elt/rows_loaded"), rerun.loaded.get(key.path[1])) == (
            loaded,
            loaded,
        ), "elt/rows_loaded, and what the plain tool loaded"
        return rows

    docs.ran(name)
    first = comparable(duck_rows(warehouse, target, columns))
    # Nothing changed at the source: the rerun loads nothing and duplicates nothing.
    assert run_both(loaded=0) == first
    # One row updated, one inserted: exactly those two rows are loaded.
    postgres.execute(f"update {source} set amount = amount + 1, updated_at = now() where id = 2")
    postgres.execute(insert)
    after = run_both(loaded=2)
    assert len(after) == len(first) + 1
    assert {r for r in after} - {r for r in first} == {r for r in source_rows() if r[0] in (2, 100)}


def test_no_password_is_written_in_the_repo_or_reaches_the_state_or_the_event_log(
    docs: DocsRepo, postgres: PostgresServer
) -> None:
    """The fixture names only variables; the password stays out of everything elt_repo keeps."""
    secret = postgres.password
    fixture_text = "".join(p.read_text() for p in FIXTURE.rglob("*") if p.is_file())
    assert "${PG_URL}" in fixture_text and "${PG_PASSWORD}" in fixture_text
    assert secret not in fixture_text
    # The manifests, the worktrees, dlt's pipeline state and traces, Sling's home; the instance.
    kept = [docs.settings.state_dir, Path(docs.instance.root_directory)]
    leaked = [
        str(p)
        for root in kept
        for p in root.rglob("*")
        if p.is_file() and secret.encode() in p.read_bytes()
    ]
    assert leaked == []
    runs = docs.instance.get_runs()
    assert runs  # the first run, and the incremental tests' reruns when they ran first
    logged = [r for run in runs for r in docs.instance.all_logs(run.run_id) if secret in str(r)]
    assert logged == []
    shown = json.dumps({str(k): {m: str(v) for m, v in md.items()} for k, md in docs.first.items()})
    assert docs.first and secret not in shown


def test_a_table_created_in_postgres_appears_after_a_refresh_without_a_commit(
    docs: DocsRepo, postgres: PostgresServer, settings_for, tmp_path: Path
) -> None:
    """ELT_REDISCOVER_INTERVAL=0: every refresh resolves source-driven pipelines again."""
    settings = settings_for(docs.repo.url, ELT_REDISCOVER_INTERVAL="0")
    first = refresh(settings).manifest
    assert first.errors == ()

    def keys(manifest: Manifest, name: str) -> set[str]:
        (assets,) = [
            a
            for a in build_definitions(manifest, settings).assets
            if isinstance(a, AssetsDefinition)
            and a.is_executable
            and a.op.name.startswith(f"{name}__")
        ]
        return {k.path[1] for k in assets.keys}

    tables = {"customers", "orders", "products"}
    assert keys(first, "shop_db") == keys(first, "shop_mirror") == tables
    postgres.execute("create table docs_shop.coupons (code text primary key, percent int)")
    try:
        postgres.execute("insert into docs_shop.coupons values ('SPRING', 10), ('VIP', 25)")
        second = refresh(settings).manifest
        assert second.commit == first.commit and second.errors == ()
        assert keys(second, "shop_db") == keys(second, "shop_mirror") == tables | {"coupons"}
        # And so do the plain tools: both write the new table.
        runner = PlainRunner(docs.runner.root, tmp_path / "plain")
        (tmp_path / "plain").mkdir()
        assert ("shop_db", "coupons") in runner.dlt("shop_db").top_tables()
        assert ("shop_mirror", "coupons") in runner.sling("shop_mirror").top_tables()
    finally:
        postgres.execute("drop table if exists docs_shop.coupons")
