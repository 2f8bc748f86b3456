"""Sling streams resolved by Sling's own rules, each rule checked against a real `sling run`."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import duckdb
import pytest
import yaml
from dagster import AssetKey, materialize

from elt_repo.defs.build import build_definitions
from elt_repo.defs.resources import build_resources
from elt_repo.discovery.pipeline_files import resolve_stream_name
from elt_repo.discovery.sling_streams import resolve_streams
from elt_repo.refresh import refresh
from elt_repo.schemas import ConfigException, SlingStreamSpec, spec_from_dict
from elt_repo.tool_env import sling_environment
from tests.sling_cli import run_sling

SQLITE = {"SRC": {"type": "sqlite", "instance": "./src.sqlite"}}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A pipeline folder: a SQLite file of 3 tables, 2 CSV files, a stray .txt, a CSV below."""
    folder = tmp_path / "pipe"
    (folder / "data").mkdir(parents=True)
    con = sqlite3.connect(folder / "src.sqlite")
    for table in ("products", '"My-Orders"', "inv_items"):
        con.execute(f"create table {table} (id int, name text)")
        con.execute(f"insert into {table} values (1, 'a'), (2, 'b')")
    con.commit()
    con.close()
    (folder / "data" / "customers.csv").write_text("id,name\n1,x\n2,y\n")
    (folder / "data" / "My Orders-2.v1.csv").write_text("id,name\n3,z\n")
    (folder / "data" / "notes.txt").write_text("not a csv\n")
    (folder / "data" / "sub").mkdir()
    (folder / "data" / "sub" / "deep.csv").write_text("id,name\n4,w\n")
    return folder


def resolve(folder: Path, replication: dict, timeout: float = 30) -> list[tuple[str, str, str]]:
    specs = resolve_streams(replication, folder, "pipe/replication.yaml", SQLITE, {}, timeout)
    return [(s.name, s.schema, s.table) for s in specs]


def sling_writes(folder: Path, replication: dict, **target: str) -> set[tuple[str, str]]:
    """(schema, table) of every table a real `sling run` of the replication creates."""
    warehouse = folder.parent / "truth.duckdb"
    warehouse.unlink(missing_ok=True)
    # As a run does it: local file streams made absolute before Sling sees them.
    streams = {resolve_stream_name(k, folder): v for k, v in replication["streams"].items()}
    path = folder.parent / "truth.yaml"
    path.write_text(yaml.safe_dump({**replication, "streams": streams}))
    env = {
        **sling_environment(folder.parent / "sling"),
        "SRC": json.dumps({"type": "sqlite", "instance": str(folder / "src.sqlite")}),
        "WAREHOUSE": json.dumps({"type": "duckdb", "instance": str(warehouse), **target}),
    }
    done = run_sling(["run", "-r", str(path)], env)
    assert done.returncode == 0, done.stderr[-2000:]
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute("select table_schema, table_name from information_schema.tables")
        return set(rows.fetchall())


def replication(streams: dict, **extra: object) -> dict:
    return {"source": "SRC", "target": "WAREHOUSE", **extra, "streams": streams}


# Each case: a replication, and the (stream, schema, table) rows it resolves to, which must also
# be exactly the tables a real `sling run` of it writes.
CASES = {
    "wildcard_into_target_schema": (
        replication({"main.*": {"object": "{target_schema}.{stream_table}"}}),
        [
            ("main.My-Orders", "main", "My_Orders"),  # cleaned, case kept
            ("main.inv_items", "main", "inv_items"),
            ("main.products", "main", "products"),
        ],
    ),
    "headline_example": (
        replication(
            {"main.*": None},
            defaults={"object": "new_schema.{stream_schema}_{stream_table}"},
        ),
        [
            ("main.My-Orders", "new_schema", "main_My_Orders"),
            ("main.inv_items", "new_schema", "main_inv_items"),
            ("main.products", "new_schema", "main_products"),
        ],
    ),
    "prefix_wildcard_beside_a_named_stream": (
        replication(
            {"main.inv_*": {"object": "raw.{stream_table}"}, "main.products": None},
            defaults={"object": "x.{stream_name}"},
        ),
        [("main.inv_items", "raw", "inv_items"), ("main.products", "x", "main_products")],
    ),
    "defaults_override_disabled_and_casing": (
        replication(
            {
                "main.*": None,
                "main.products": {"object": "other.{stream_table_upper}"},
                "main.inv_items": {"disabled": True},
            },
            defaults={"object": "raw.{stream_table_lower}", "mode": "full-refresh"},
        ),
        [("main.My-Orders", "raw", "my_orders"), ("main.products", "other", "PRODUCTS")],
    ),
    "stream_name_is_cleaned_and_lowercased": (
        replication({"main.My-Orders": {"object": "x.{stream_name}"}}),
        [("main.My-Orders", "x", "main_my_orders")],
    ),
    "custom_sql_is_one_stream": (
        replication({"select * from products": {"object": "x.custom"}}),
        [("select * from products", "x", "custom")],
    ),
    "no_schema_in_object": (
        replication({"main.products": {"object": "Plain"}}),
        [("main.products", "main", "Plain")],
    ),
    "file_glob_per_file": (
        replication(
            {"file://./data/*.csv": None},
            source="LOCAL",
            defaults={"object": "raw.{stream_file_name}"},
        ),
        [
            ("file://./data/My Orders-2.v1.csv", "raw", "My_Orders_2_v1"),
            ("file://./data/customers.csv", "raw", "customers"),
        ],
    ),
    "file_glob_in_subfolders": (
        # As `sling conns discover` lists it: `**` here matches the folders below data/ only.
        replication(
            {"file://./data/**/*.csv": None},
            source="LOCAL",
            defaults={"object": "raw.{stream_file_folder}_{stream_file_name}"},
        ),
        [("file://./data/sub/deep.csv", "raw", "sub_deep")],
    ),
    "file_glob_as_one_stream": (
        # No per-file variable in the object: Sling reads the whole glob into one table, and
        # names it after the glob's folder (data, in pipe), with no extension.
        replication(
            {"file://./data/*.csv": {"object": "raw.{stream_file_folder}_all{stream_file_ext}"}},
            source="LOCAL",
        ),
        [("file://./data/*.csv", "raw", "pipe_all")],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_streams_land_where_sling_writes_them(folder: Path, case: str) -> None:
    config, expected = CASES[case]
    assert resolve(folder, config) == expected
    assert {(s, t) for _, s, t in expected} == sling_writes(folder, config)


@pytest.mark.slow
def test_the_target_connections_schema_is_target_schema_and_the_default(folder: Path) -> None:
    config = replication(
        {"main.products": {"object": "{target_schema}.t"}, "main.inv_items": {"object": "Plain"}}
    )
    own = {**SQLITE, "WAREHOUSE": {"type": "duckdb", "instance": "x.duckdb", "schema": "foo"}}
    specs = resolve_streams(config, folder, "r.yaml", own, {}, 30)
    assert [(s.schema, s.table) for s in specs] == [("foo", "t"), ("foo", "Plain")]
    assert sling_writes(folder, config, schema="foo") == {("foo", "t"), ("foo", "Plain")}


def test_a_stream_from_an_older_manifest_still_loads() -> None:
    stream = spec_from_dict(SlingStreamSpec, {"name": "main.t", "table": "t"})
    assert (stream.replication_key, stream.schema) == ("main.t", None)


def test_each_stream_remembers_its_pattern(folder: Path) -> None:
    specs = resolve_streams(
        replication({"main.*": {"object": "x.{stream_table}"}}), folder, "r.yaml", SQLITE, {}, 30
    )
    assert {(s.name, s.pattern) for s in specs} == {
        ("main.My-Orders", "main.*"),
        ("main.inv_items", "main.*"),
        ("main.products", "main.*"),
    }


def errors(folder: Path, config: dict, timeout: float = 30) -> list[tuple[str, str, str]]:
    with pytest.raises(ConfigException) as caught:
        resolve(folder, config, timeout)
    return [(e.path, e.field, e.message) for e in caught.value.errors]


def test_two_streams_into_one_table_name_both(folder: Path) -> None:
    config = replication({"main.products": {"object": "x.t"}, "main.inv_items": {"object": "X.T"}})
    ((path, field, message),) = errors(folder, config)
    assert (path, field) == ("pipe/replication.yaml", "streams.main.inv_items")
    assert "'main.inv_items' lands in table 'T'" in message and "'main.products'" in message


def test_a_wildcard_into_one_fixed_table_collides(folder: Path) -> None:
    ((_, field, message),) = errors(folder, replication({"main.*": {"object": "x.t"}}))
    assert field == "streams.main.*"
    assert "'main.inv_items' lands in table 't'" in message and "'main.My-Orders'" in message


def test_two_wildcards_into_different_tables_are_fine(folder: Path) -> None:
    config = replication(
        {"main.inv_*": None, "main.p*": None}, defaults={"object": "a.{stream_table}"}
    )
    assert resolve(folder, config) == [
        ("main.inv_items", "a", "inv_items"),
        ("main.products", "a", "products"),
    ]


def test_a_stream_config_must_be_a_mapping(folder: Path) -> None:
    ((_, field, message),) = errors(folder, replication({"main.products": ["x"]}))
    assert (field, message) == ("streams.main.products", "must be a mapping (or empty)")


def test_a_stream_needs_an_object(folder: Path) -> None:
    assert errors(folder, replication({"main.products": {"mode": "full-refresh"}})) == [
        ("pipe/replication.yaml", "streams.main.products.object", "required: Sling needs an object")
    ]


def test_file_streams_stay_in_the_pipeline_folder(folder: Path) -> None:
    (folder.parent / "secret.csv").write_text("id\n1\n")
    (folder / "data" / "link.csv").symlink_to(folder.parent / "secret.csv")
    outside = {"file://../secret.csv": {"object": "x.t"}}
    ((_, field, message),) = errors(folder, replication(outside, source="LOCAL"))
    assert (field, message) == (
        "streams.file://../secret.csv",
        "file://../secret.csv leaves the pipeline folder",
    )
    linked = {"file://./data/*.csv": {"object": "x.{stream_file_name}"}}
    ((_, field, message),) = errors(folder, replication(linked, source="LOCAL"))
    assert (
        field == "streams.file://./data/*.csv"
        and "link.csv is outside the pipeline folder" in message
    )


def test_an_unreachable_source_is_a_config_error_without_its_password(folder: Path) -> None:
    config = replication({"public.*": {"object": "x.{stream_table}"}}, source="PG")
    conn = {"type": "postgres", "url": "postgresql://u:s3cr3t-pass@127.0.0.1:9/db"}
    with pytest.raises(ConfigException) as caught:
        resolve_streams(config, folder, "r.yaml", {"PG": conn}, {}, 30)
    ((error),) = caught.value.errors
    assert (error.path, error.field) == ("r.yaml", "streams.public.*")
    assert "cannot list PG" in error.message and "s3cr3t-pass" not in error.message


def test_what_sling_says_is_redacted(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLING_BINARY", fake_sling(tmp_path, 'echo "bad conn $PG" >&2; exit 1'))
    conn = {"type": "postgres", "host": "127.0.0.1", "password": "${PG_PASSWORD}"}
    config = replication({"public.*": {"object": "x.{stream_table}"}}, source="PG")
    with pytest.raises(ConfigException) as caught:
        resolve_streams(config, folder, "r.yaml", {"PG": conn}, {"PG_PASSWORD": "hunter2-pw"}, 30)
    ((error),) = caught.value.errors
    assert '"password": "***"' in error.message and "hunter2-pw" not in error.message


def fake_sling(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake-sling"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_sling_gets_only_its_home_and_the_connection(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dump = tmp_path / "env.txt"
    rows = '{"fields":["#","Database","Schema","Name","Type"],"rows":[[1,"m","main","t","table"]]}'
    monkeypatch.setenv("SLING_BINARY", fake_sling(tmp_path, f"env > {dump}\necho '{rows}'"))
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_not_for_sling")
    environ = {"GITHUB_TOKEN": "ghp_not_for_sling", "OTHER": "x"}
    config = replication({"main.*": {"object": "x.{stream_table}"}})
    specs = resolve_streams(config, folder, "r.yaml", SQLITE, environ, 30)
    assert [(s.name, s.table) for s in specs] == [("main.t", "t")]
    seen = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert "ghp_not_for_sling" not in dump.read_text()
    assert set(seen) - {"PWD", "SHLVL", "_", "OLDPWD"} == {
        "HOME",
        "SLING_HOME_DIR",
        "DO_NOT_TRACK",
        "DUCKDB_PATH",
        "SLING_OUTPUT",
        "PATH",
        "SRC",
    }
    assert json.loads(seen["SRC"])["instance"] == str(folder / "src.sqlite")


def test_a_source_that_hangs_times_out(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLING_BINARY", fake_sling(tmp_path, "sleep 30"))
    ((_, field, message),) = errors(folder, replication({"main.*": {"object": "x.t"}}), 0.5)
    assert (field, message) == ("streams.main.*", "listing SRC timed out after 0.5s")


@pytest.mark.slow
def test_a_wildcard_pipeline_materializes_the_tables_its_assets_name(
    repo, settings_for, instance, folder: Path
) -> None:
    target = repo.folder("shop")
    target.parent.mkdir(parents=True)
    folder.rename(target)
    repo.write(
        "pipelines/shop/dagster.yaml",
        {"tool": "sling", "sling": {"connections": {"SRC": SQLITE["SRC"]}}},
    )
    repo.write(
        "pipelines/shop/replication.yaml",
        replication(
            # The object sits on the wildcard: each concrete stream must get its pattern's config.
            {"main.*": {"object": "new_schema.{stream_schema}_{stream_table}"}},
            defaults={"mode": "full-refresh"},
        ),
    )
    repo.commit()
    settings = settings_for(repo.url)
    manifest = refresh(settings).manifest
    assert manifest.errors == ()
    (assets,) = [a for a in build_definitions(manifest, settings).assets if hasattr(a, "op")]
    keys = {AssetKey(["shop", t]) for t in ("main_My_Orders", "main_inv_items", "main_products")}
    assert set(assets.keys) == keys

    def written() -> set[tuple[str, str]]:
        with duckdb.connect(str(settings.warehouse), read_only=True) as con:
            return set(
                con.execute("select schema_name, table_name from duckdb_tables()").fetchall()
            )

    # Selecting one asset runs that one stream.
    one = AssetKey(["shop", "main_products"])
    result = materialize(
        [assets], instance=instance, resources=build_resources(settings), selection=[one]
    )
    assert result.success and written() == {("new_schema", "main_products")}
    result = materialize([assets], instance=instance, resources=build_resources(settings))
    assert result.success
    assert written() == {("new_schema", key.path[1]) for key in keys}
    event = instance.get_latest_materialization_event(AssetKey(["shop", "main_My_Orders"]))
    metadata = event.asset_materialization.metadata
    assert metadata["dagster/table_name"].value.endswith(".new_schema.main_My_Orders")
    assert metadata["dagster/row_count"].value == 2


def test_absolute_file_streams_only_under_elt_local_roots(folder: Path, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "drop.csv").write_text("id\n1\n")
    config = replication({f"file://{landing}/drop.csv": {"object": "raw.drop"}}, source="LOCAL")
    with pytest.raises(ConfigException) as info:
        resolve_streams(config, folder, "pipe/replication.yaml", {}, {}, 30)
    assert "reads outside the pipeline folder" in str(info.value.errors[0])
    assert "ELT_LOCAL_ROOTS" in str(info.value.errors[0])
    specs = resolve_streams(config, folder, "pipe/replication.yaml", {}, {}, 30, None, (landing,))
    assert [(s.schema, s.table) for s in specs] == [("raw", "drop")]
    # A symlink under the root that points elsewhere does not count as under it.
    (landing / "passwd.csv").symlink_to("/etc/passwd")
    escape = replication({f"file://{landing}/passwd.csv": {"object": "raw.p"}}, source="LOCAL")
    with pytest.raises(ConfigException):
        resolve_streams(escape, folder, "pipe/replication.yaml", {}, {}, 30, None, (landing,))
