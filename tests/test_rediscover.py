"""Discovery that follows the source: a table created in Postgres becomes an asset with no
commit, after ELT_REDISCOVER_INTERVAL, within the sensor tick's budget."""

from __future__ import annotations

import time

import pytest
from dagster import build_sensor_context

from elt_repo.defs.sensors import repo_sensor
from elt_repo.manifest import ManifestStore
from elt_repo.refresh import refresh
from tests.conftest import PipelinesRepo

pytestmark = pytest.mark.slow

SCHEMA = "rd_shop"
REPLICATION = {
    "source": "SHOP_PG",
    "target": "WAREHOUSE",
    "defaults": {"mode": "full-refresh", "object": "shop_copy.{stream_table}"},
    "streams": {f"{SCHEMA}.*": {}},
}
# As dlt's docs write it: sql_database reflects the schema's tables when it is called, and
# finds its credentials under sources.sql_database.
SQL_DATABASE = """
from dlt.sources.sql_database import sql_database


def shop():
    return sql_database(schema="rd_shop")
"""


@pytest.fixture
def shop_pg(postgres):
    postgres.execute(f"drop schema if exists {SCHEMA} cascade")
    postgres.execute(f"create schema {SCHEMA}")
    postgres.execute(f"create table {SCHEMA}.orders (id int primary key)")
    postgres.execute(f"insert into {SCHEMA}.orders values (1), (2)")
    yield postgres
    postgres.execute(f"drop schema if exists {SCHEMA} cascade")


@pytest.fixture
def pg_repo(repo: PipelinesRepo, shop_pg, monkeypatch: pytest.MonkeyPatch) -> PipelinesRepo:
    monkeypatch.setenv("SHOP_PG_URL", f"{shop_pg.url}?sslmode=disable")
    monkeypatch.setenv("SOURCES__SQL_DATABASE__CREDENTIALS", shop_pg.url)
    repo.write(
        "pipelines/shop_pg_sling/dagster.yaml",
        {
            "tool": "sling",
            "sling": {
                "replication": "replication.yaml",
                "connections": {"SHOP_PG": {"type": "postgres", "url": "${SHOP_PG_URL}"}},
            },
        },
    )
    repo.write("pipelines/shop_pg_sling/replication.yaml", REPLICATION)
    repo.write("pipelines/shop_pg_dlt/pipeline.py", SQL_DATABASE)
    repo.write(
        "pipelines/shop_pg_dlt/dagster.yaml",
        {"dlt": {"source": "pipeline.py:shop", "dataset_name": "shop_dlt"}},
    )
    # Its streams are named, not a wildcard: never resolved again without a commit.
    repo.write("pipelines/fixed/data/rows.csv", "id\n1\n")
    repo.write("pipelines/fixed/dagster.yaml", {"tool": "sling"})
    repo.write(
        "pipelines/fixed/replication.yaml",
        {
            "source": "LOCAL",
            "target": "WAREHOUSE",
            "streams": {"file://./data/rows.csv": {"object": "fixed.rows"}},
        },
    )
    repo.commit("pipelines reading Postgres")
    return repo


def tables(manifest) -> dict[str, list[str]]:
    out = {}
    for p in manifest.pipelines:
        if p.sling:
            out[p.name] = sorted(s.table for s in p.sling.streams)
        else:
            out[p.name] = sorted(r.table_name for r in p.dlt.resources)
    return out


def sensor_tick(settings, instance, cursor: str):
    sensor = repo_sensor(settings, loaded=None)
    return sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=cursor))


def test_a_new_source_table_is_an_asset_after_the_interval_with_no_commit(
    pg_repo, settings_for, instance, shop_pg
) -> None:
    settings = settings_for(pg_repo.url, ELT_REDISCOVER_INTERVAL="0")
    first = refresh(settings).manifest
    assert not first.errors, first.errors
    assert tables(first) == {
        "shop_pg_sling": ["orders"],
        "shop_pg_dlt": ["orders"],
        "fixed": ["rows"],
    }
    shop_pg.execute(f"create table {SCHEMA}.coupons (code text primary key)")

    result = sensor_tick(settings, instance, first.commit)
    manifest = ManifestStore(settings.manifest_path).read()
    assert manifest.commit == first.commit  # no commit, no fetch needed
    assert tables(manifest) == {
        "shop_pg_sling": ["coupons", "orders"],
        "shop_pg_dlt": ["coupons", "orders"],
        "fixed": ["rows"],
    }
    assert manifest.fingerprint() != first.fingerprint()  # a change: the location reloads
    # The tick says what it resolved again: the source-driven folders, not `fixed`.
    assert "resolved again from their sources: " in result.skip_message
    again = result.skip_message.split("resolved again from their sources: ")[1]
    assert set(again.split(";")[0].split(", ")) == {
        "pipelines/shop_pg_dlt",
        "pipelines/shop_pg_sling",
    }

    # Resolving again and finding the same tables is no change, so no reload.
    same = refresh(settings, known_commit=first.commit, deadline=time.monotonic() + 40)
    assert not same.skipped and set(same.resolved_again) == {
        "pipelines/shop_pg_dlt",
        "pipelines/shop_pg_sling",
    }
    assert not same.changed and same.manifest.fingerprint() == manifest.fingerprint()


def test_before_the_interval_a_tick_with_no_commit_skips(
    pg_repo, settings_for, instance, shop_pg
) -> None:
    settings = settings_for(pg_repo.url)  # the default: an hour
    first = refresh(settings).manifest
    shop_pg.execute(f"create table {SCHEMA}.coupons (code text primary key)")
    result = sensor_tick(settings, instance, first.commit)
    assert result.skip_message.startswith("no new commit")
    assert "coupons" not in tables(ManifestStore(settings.manifest_path).read())["shop_pg_sling"]
    # scripts/refresh.py --force resolves everything now.
    assert "coupons" in tables(refresh(settings, force=True).manifest)["shop_pg_sling"]


def test_a_source_that_cannot_be_listed_keeps_its_tables_and_shows_why(
    pg_repo, settings_for, instance, shop_pg, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(pg_repo.url, ELT_REDISCOVER_INTERVAL="0")
    first = refresh(settings).manifest
    monkeypatch.setenv("SHOP_PG_URL", shop_pg.url.replace(str(shop_pg.port), "9"))
    monkeypatch.setenv("SOURCES__SQL_DATABASE__CREDENTIALS", "postgresql://nobody@127.0.0.1:9/x")
    down = refresh(settings, known_commit=first.commit, deadline=time.monotonic() + 40)
    assert tables(down.manifest)["shop_pg_sling"] == ["orders"]  # the last resolution, kept
    (error,) = [e for e in down.manifest.errors if e.pipeline == "shop_pg_sling"]
    assert error.retry and "replication.yaml" in error.path
    assert shop_pg.password not in str(error)

    # The source is back: the next tick (no commit) resolves it again and the error is gone.
    monkeypatch.setenv("SHOP_PG_URL", f"{shop_pg.url}?sslmode=disable")
    monkeypatch.setenv("SOURCES__SQL_DATABASE__CREDENTIALS", shop_pg.url)
    shop_pg.execute(f"create table {SCHEMA}.coupons (code text primary key)")
    back = refresh(settings, known_commit=first.commit, deadline=time.monotonic() + 40)
    assert tables(back.manifest)["shop_pg_sling"] == ["coupons", "orders"]
    assert not [e for e in back.manifest.errors if e.pipeline == "shop_pg_sling"]


def test_a_tick_with_no_time_left_resolves_nothing(pg_repo, settings_for, shop_pg) -> None:
    settings = settings_for(pg_repo.url, ELT_REDISCOVER_INTERVAL="0")
    first = refresh(settings).manifest
    shop_pg.execute(f"create table {SCHEMA}.coupons (code text primary key)")
    late = refresh(settings, known_commit=first.commit, deadline=time.monotonic() + 5)
    assert late.skipped and late.manifest.fingerprint() == first.fingerprint()


def test_more_due_folders_than_a_tick_takes_are_resolved_across_ticks(
    pg_repo, settings_for, shop_pg, monkeypatch: pytest.MonkeyPatch
) -> None:
    import elt_repo.refresh as refresh_module

    settings = settings_for(pg_repo.url, ELT_REDISCOVER_INTERVAL="0")
    first = refresh(settings).manifest
    monkeypatch.setattr(refresh_module, "REDISCOVER_BATCH", 1)
    ticks = [
        refresh(settings, known_commit=first.commit, deadline=time.monotonic() + 40)
        for _ in range(3)
    ]
    # The longest-unresolved first, one per tick: each folder in turn, never the same twice.
    resolved = [t.resolved_again for t in ticks]
    assert all(len(r) == 1 for r in resolved), resolved
    assert {resolved[0][0], resolved[1][0]} == {"pipelines/shop_pg_dlt", "pipelines/shop_pg_sling"}
    assert resolved[2] == resolved[0]
