"""A Postgres warehouse: every example loads into it with the rows it loads into DuckDB, its
tables are named, counted and described as Postgres holds them, and its password is nowhere."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from dagster import AssetKey, AssetsDefinition, DagsterInstance, Definitions
from dagster._serdes import serialize_value

from elt_repo.cli.demo import RunOutcome, materialize_all, table_counts
from elt_repo.defs.build import build_definitions
from elt_repo.defs.resources import build_resources
from elt_repo.manifest import Manifest
from elt_repo.refresh import refresh
from elt_repo.settings import Settings
from tests.conftest import PROJECT_DIR, PipelinesRepo, make_settings
from tests.defs.test_materialize import expected_counts, partition_row_counts, store_sales

pytestmark = pytest.mark.slow

EXAMPLE_OPS = [
    ("csv_orders__sling", None, True),
    ("github_issues__dlt", "2024-01-01..2024-03-31", True),
    ("shop_events__sling", "2024-01-01..2024-03-31", True),
    ("shop_sqlite__sling", None, True),
    ("store_sales__dlt", "us-east", True),
    ("store_sales__dlt", "us-west", True),
    ("store_sales__dlt", "eu-central", True),
]
PARTITIONED = {"github_issues", "shop_events", "store_sales"}


@dataclass
class Loaded:
    """Every example materialized into one warehouse, with everything the runs left behind."""

    base: Path
    settings: Settings
    manifest: Manifest
    defs: Definitions
    instance: DagsterInstance
    outcomes: list[RunOutcome]

    def latest(self, key: AssetKey):
        return self.instance.get_latest_materialization_event(key).asset_materialization

    def tool(self, key: AssetKey) -> str:
        (op,) = [a.op.name for a in self.assets if key in a.keys]
        return op.rsplit("__", 1)[1]

    @property
    def assets(self) -> list[AssetsDefinition]:
        return [a for a in self.defs.assets or [] if isinstance(a, AssetsDefinition)]

    @property
    def keys(self) -> list[AssetKey]:
        return sorted((k for a in self.assets for k in a.keys), key=lambda k: k.to_user_string())


@dataclass(frozen=True)
class Site:
    """Where one load happens: a folder for its state, instance and (DuckDB) warehouse."""

    base: Path
    env: dict[str, str]


def load_examples(site: Site, repo_url: str) -> Iterator[Loaded]:
    home = site.base / "dagster_home"
    home.mkdir(parents=True)
    shutil.copyfile(PROJECT_DIR / "dagster.yaml", home / "dagster.yaml")
    settings = make_settings(site.base, repo_url, **site.env)
    manifest = refresh(settings).manifest
    defs = Definitions.merge(
        build_definitions(manifest, settings), Definitions(resources=build_resources(settings))
    )
    with DagsterInstance.from_config(str(home)) as instance:
        outcomes = materialize_all(defs, manifest, instance)
        yield Loaded(site.base, settings, manifest, defs, instance, outcomes)


@pytest.fixture(scope="module")
def examples_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    repo = PipelinesRepo(tmp_path_factory.mktemp("origin"))
    repo.copy_examples()
    repo.commit("examples")
    return repo.url


@pytest.fixture(scope="module")
def into_duckdb(tmp_path_factory: pytest.TempPathFactory, examples_url: str) -> Iterator[Loaded]:
    yield from load_examples(Site(tmp_path_factory.mktemp("duckdb"), {}), examples_url)


@pytest.fixture(scope="module")
def pg_module_url(postgres) -> str:
    """A database of its own for this module's loads: a literal password in the URL."""
    return postgres.new_database()


@pytest.fixture(scope="module")
def into_postgres(
    tmp_path_factory: pytest.TempPathFactory, examples_url: str, pg_module_url: str
) -> Iterator[Loaded]:
    site = Site(tmp_path_factory.mktemp("postgres"), {"ELT_WAREHOUSE": pg_module_url})
    yield from load_examples(site, examples_url)


def pg_columns(url: str, schema: str, table: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as con:
        return con.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = %s and table_name = %s order by ordinal_position",
            [schema, table],
        ).fetchall()


def test_every_example_loads_into_postgres_with_the_rows_it_loads_into_duckdb(
    into_duckdb: Loaded, into_postgres: Loaded
) -> None:
    assert [(o.op, o.partition, o.success) for o in into_duckdb.outcomes] == EXAMPLE_OPS
    assert [(o.op, o.partition, o.success) for o in into_postgres.outcomes] == EXAMPLE_OPS
    assert into_postgres.settings.warehouse.kind == "postgres"
    in_postgres = {(s, t): n for s, t, n in table_counts(into_postgres.settings.warehouse)}
    in_duckdb = {(s, t): n for s, t, n in table_counts(into_duckdb.settings.warehouse)}
    assert in_postgres == in_duckdb == expected_counts()
    # Nothing was written to a DuckDB file on the way (Sling's home has a .duckdb folder).
    assert not [p for p in into_postgres.base.rglob("*.duckdb") if p.is_file()]

    # Each asset records the same counts: the table's, and each partition's.
    assert into_postgres.keys == into_duckdb.keys
    for key in into_postgres.keys:
        if key.path[0] in PARTITIONED:
            by_partition = partition_row_counts(into_postgres.instance, key)
            assert by_partition == partition_row_counts(into_duckdb.instance, key), key
            assert any(by_partition.values()), key
        pg, duck = into_postgres.latest(key).metadata, into_duckdb.latest(key).metadata
        for name in ("dagster/row_count", "elt/table_rows", "elt/rows_loaded"):
            assert (name in pg) == (name in duck), (key, name)
            if name in pg:
                assert pg[name].value == duck[name].value, (key, name)


def test_table_names_counts_and_columns_are_those_of_the_postgres_tables(
    into_postgres: Loaded, pg_module_url: str
) -> None:
    database = pg_module_url.rsplit("/", 1)[1]
    for key in into_postgres.keys:
        meta = into_postgres.latest(key).metadata
        catalog, schema, table = meta["dagster/table_name"].value.split(".")
        assert catalog == database, key
        columns = pg_columns(pg_module_url, schema, table)
        assert columns, f"{key}: {meta['dagster/table_name'].value} is not a Postgres table"
        with psycopg.connect(pg_module_url) as con:
            (rows,) = con.execute(f'select count(*) from "{schema}"."{table}"').fetchone()
        whole = "elt/table_rows" if key.path[0] in PARTITIONED else "dagster/row_count"
        assert meta[whole].value == rows, key
        described = [(c.name, c.type) for c in meta["dagster/column_schema"].value.columns]
        if (
            into_postgres.tool(key) == "sling"
        ):  # Sling's columns are read back from Postgres, names and types.
            assert described == columns, key
            assert meta["dagster/storage_kind"].value == "postgres"
        else:  # dlt's schema: the same columns, in dlt's own type names
            assert {n for n, _ in described} == {n for n, _ in columns}, key


def test_the_password_is_in_no_event_tag_log_file_or_manifest(
    into_postgres: Loaded, postgres
) -> None:
    password = postgres.password
    instance = into_postgres.instance
    runs = instance.get_runs()
    assert len(runs) == len(EXAMPLE_OPS)
    for run in runs:
        assert password not in serialize_value(run), run.run_id  # tags and config included
        snapshot = instance.get_job_snapshot(run.job_snapshot_id)
        assert password not in serialize_value(snapshot), run.run_id  # resources' config
        for entry in instance.all_logs(run.run_id):
            assert password not in serialize_value(entry), (run.run_id, entry.message[:200])
    # Every file the runs, the instance, dlt and Sling wrote: the manifest, event logs, state.
    written = [p for p in into_postgres.base.rglob("*") if p.is_file()]
    assert into_postgres.settings.manifest_path in written and len(written) > 50
    for path in written:
        assert password.encode() not in path.read_bytes(), path
    # Shown, the warehouse is the URL without its credentials.
    shown = str(into_postgres.settings.warehouse)
    assert password not in shown and "***@127.0.0.1:" in shown
    assert password not in repr(into_postgres.settings)


RUN_PIPELINE = """import dlt


def run():
    pipeline = dlt.pipeline(pipeline_name="jokes", destination="postgres", dataset_name="jokes")
    return pipeline.run([{"id": 1}, {"id": 2}, {"id": 3}], table_name="jokes")
"""


def test_a_password_from_the_environment_reaches_sling_dlt_and_a_run_function(
    repo: PipelinesRepo, tmp_path: Path, pg_url: str, postgres, monkeypatch, instance
) -> None:
    from dagster import materialize

    repo.copy_example("csv_orders")
    repo.copy_example("store_sales")
    repo.write("pipelines/dlt/jokes/pipeline.py", RUN_PIPELINE)  # a reference-style run()
    repo.commit("three tools")
    monkeypatch.setenv("PG_PASSWORD", postgres.password)
    url = pg_url.replace(f":{postgres.password}@", ":${PG_PASSWORD}@")
    settings = make_settings(tmp_path, repo.url, ELT_WAREHOUSE=url)
    assert settings.warehouse.url == url  # kept as written
    manifest = refresh(settings).manifest
    assert manifest.errors == ()
    ops = {
        a.op.name: a
        for a in build_definitions(manifest, settings).assets or []
        if isinstance(a, AssetsDefinition)
    }
    assert ops["jokes__dlt"].op.pool == "dlt_jokes"
    assert "postgres" in next(iter(ops["jokes__dlt"].specs)).kinds
    resources = build_resources(settings)
    for op, kwargs in (
        ("csv_orders__sling", {}),
        ("store_sales__dlt", {"partition_key": "us-east"}),
        ("jokes__dlt", {}),
    ):
        if op == "store_sales__dlt":
            instance.add_dynamic_partitions("store_sales__keys", ["us-east"])
        assert materialize([ops[op]], instance=instance, resources=resources, **kwargs).success
    counts = {(s, t): n for s, t, n in table_counts(settings.warehouse)}
    expected = expected_counts()
    assert counts[("csv_orders", "orders")] == expected[("csv_orders", "orders")]
    assert counts[("sales", "stores")] == len(store_sales().STORES["us-east"])
    assert counts[("jokes", "jokes")] == 3
    assert not [p for p in tmp_path.rglob("*.duckdb") if p.is_file()]


NUMBERS = """import dlt


@dlt.resource(name="numbers")
def numbers():
    yield [{"n": 1}, {"n": 2}]
"""


def test_a_load_that_cannot_log_in_fails_without_showing_the_password(
    repo: PipelinesRepo, tmp_path: Path, pg_url: str, postgres, instance
) -> None:
    from dagster import materialize

    repo.copy_example("csv_orders")
    repo.write("pipelines/csv_orders/dagster.yaml", "tool: sling\n")  # no retries
    repo.write("pipelines/numbers/pipeline.py", NUMBERS)
    repo.write("pipelines/numbers/dagster.yaml", "dlt: {source: pipeline.py:numbers}\n")
    repo.commit("two pipelines")
    wrong = "Wr0ng-literal-password"
    url = pg_url.replace(f":{postgres.password}@", f":{wrong}@")
    settings = make_settings(tmp_path, repo.url, ELT_WAREHOUSE=url)
    manifest = refresh(settings).manifest
    assert manifest.errors == ()
    defs = build_definitions(manifest, settings)
    resources = build_resources(settings)
    for assets_def in [a for a in defs.assets or [] if isinstance(a, AssetsDefinition)]:
        result = materialize(
            [assets_def], instance=instance, resources=resources, raise_on_error=False
        )
        assert not result.success, assets_def.op.name
        (failure,) = [e for e in result.all_events if e.is_step_failure]
        assert "password authentication failed" in str(failure.step_failure_data.error), (
            assets_def.op.name
        )
    for run in instance.get_runs():
        for entry in instance.all_logs(run.run_id):
            assert wrong not in serialize_value(entry), entry.message[:300]
    for path in (p for p in tmp_path.rglob("*") if p.is_file()):
        assert wrong.encode() not in path.read_bytes(), path
