"""Runs are pinned to their commit: steps use that commit's specs and code, whatever came since."""

from __future__ import annotations

import shutil

import duckdb
import pytest
from dagster import AssetKey, AssetsDefinition, materialize

from elt_repo.defs import manifest_copies
from elt_repo.defs.assets import COMMIT_TAG
from elt_repo.defs.build import build_definitions
from elt_repo.defs.resources import build_resources
from elt_repo.refresh import refresh
from tests.conftest import PipelinesRepo

pytestmark = pytest.mark.slow

VERSIONED = """
import dlt

@dlt.source
def src(label: str):
    @dlt.resource(write_disposition="append")
    def rows():
        yield {{"code_version": {version}, "label": label}}
    return rows
"""


def commit_version(repo: PipelinesRepo, version: int) -> str:
    repo.write("pipelines/pinme/pipeline.py", VERSIONED.format(version=version))
    repo.write(
        "pipelines/pinme/dagster.yaml",
        {"dlt": {"source": "pipeline.py:src", "args": {"label": f"config {version}"}}},
    )
    return repo.commit(f"version {version}")


def test_a_run_uses_the_commit_it_is_tagged_with(
    repo: PipelinesRepo, settings_for, instance
) -> None:
    settings = settings_for(repo.url)
    first = commit_version(repo, 1)
    refresh(settings)
    second = commit_version(repo, 2)
    current = refresh(settings).manifest
    assert current.commit == second
    # The step's definitions come from the newest manifest, as a run worker's would.
    (assets_def,) = [
        a for a in build_definitions(current, settings).assets if isinstance(a, AssetsDefinition)
    ]

    def run(**kwargs):
        result = materialize(
            [assets_def], instance=instance, resources=build_resources(settings), **kwargs
        )
        assert result.success
        return result

    pinned = run(tags={COMMIT_TAG: first})  # e.g. queued before the second commit arrived
    untagged = run()
    assert instance.get_run_by_id(untagged.run_id).tags[COMMIT_TAG] == second
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        rows = con.sql(
            "select code_version, label from pinme.rows order by code_version"
        ).fetchall()
    assert rows == [(1, "config 1"), (2, "config 2")]
    event = instance.get_latest_materialization_event(AssetKey(["pinme", "rows"]))
    assert event.asset_materialization.metadata["elt/commit"].value == second
    first_event = [
        e
        for e in pinned.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key == AssetKey(["pinme", "rows"])
    ]
    assert first_event[0].event_specific_data.materialization.metadata["elt/commit"].value == first


def only_asset(manifest, settings) -> AssetsDefinition:
    (assets_def,) = [
        a for a in build_definitions(manifest, settings).assets if isinstance(a, AssetsDefinition)
    ]
    return assets_def


def test_a_run_of_a_commit_with_no_manifest_kept_fails_naming_it(
    repo: PipelinesRepo, settings_for, instance
) -> None:
    settings = settings_for(repo.url)
    commit_version(repo, 1)
    current = refresh(settings).manifest
    gone = "f" * 40  # pruned long ago, or never this repo's
    result = materialize(
        [only_asset(current, settings)],
        instance=instance,
        resources=build_resources(settings),
        tags={COMMIT_TAG: gone},
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert not [e for e in result.all_events if e.is_step_up_for_retry]  # it cannot come back
    message = failure.step_failure_data.error.message
    assert f"no manifest of commit {gone} is kept" in message
    with duckdb.connect(str(settings.warehouse)) as con:  # nothing ran in its place
        assert con.sql(
            "select count(*) from information_schema.tables where table_schema = 'pinme'"
        ).fetchone() == (0,)


def test_a_run_in_a_new_container_takes_the_instance_copy_and_fetches_its_commit(
    repo: PipelinesRepo, settings_for, instance
) -> None:
    settings = settings_for(repo.url)
    first = commit_version(repo, 1)
    manifest_copies.publish(instance, refresh(settings).manifest, manifest_copies.location_name())
    commit_version(repo, 2)
    current = refresh(settings).manifest
    # What a new container lacks: the commit's manifest file and its worktree.
    (settings.manifest_path.parent / "manifests" / f"{first}.json").unlink()
    shutil.rmtree(settings.repo_state_dir / "worktrees" / first)

    result = materialize(
        [only_asset(current, settings)],
        instance=instance,
        resources=build_resources(settings),
        tags={COMMIT_TAG: first},
    )
    assert result.success
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        assert con.sql("select code_version, label from pinme.rows").fetchall() == [(1, "config 1")]
    assert (settings.repo_state_dir / "worktrees" / first / "pipelines/pinme").is_dir()
