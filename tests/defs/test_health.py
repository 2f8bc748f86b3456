"""Broken pipelines stay visible: placeholder assets, failing checks, and the manifest asset."""

from __future__ import annotations

from pathlib import Path

from dagster import AssetCheckKey, AssetKey, AssetsDefinition, DagsterInstance, build_sensor_context

from elt_repo.defs.build import build_definitions
from elt_repo.defs.health import CHECK_NAME, MANIFEST_KEY
from elt_repo.defs.sensors import repo_sensor
from elt_repo.refresh import refresh
from tests.conftest import PipelinesRepo, make_settings


def broken_repo(repo: PipelinesRepo) -> None:
    repo.copy_example("csv_orders")
    repo.copy_example("store_sales")
    repo.write(
        "pipelines/orders_api/dagster.yaml",
        {"tool": "sling", "group": "shop", "retries": "lots"},
    )
    repo.write("pipelines/orders_api/replication.yaml", "source: A\ntarget: B\nstreams: {x: {}}\n")


def test_a_broken_pipeline_is_an_asset_in_its_group_with_a_failing_check(
    repo: PipelinesRepo, tmp_path: Path
) -> None:
    broken_repo(repo)
    repo.commit("one broken")
    settings = make_settings(tmp_path, repo.url)
    manifest = refresh(settings).manifest
    (error,) = manifest.errors
    assert (error.pipeline, error.group) == ("orders_api", "shop")
    defs = build_definitions(manifest, settings)
    specs = {s.key: s for s in defs.assets if not isinstance(s, AssetsDefinition)}
    placeholder = specs[AssetKey(["orders_api"])]
    assert placeholder.group_name == "shop"
    assert "**retries**: Not a valid integer." in placeholder.description
    assert MANIFEST_KEY in specs
    (check,) = defs.asset_checks
    assert check.check_keys == {AssetCheckKey(AssetKey(["orders_api"]), CHECK_NAME)}


def test_a_kept_pipeline_carries_the_failing_check_on_its_own_asset(
    repo: PipelinesRepo, tmp_path: Path
) -> None:
    repo.copy_example("csv_orders")
    repo.commit("good")
    settings = make_settings(tmp_path, repo.url)
    refresh(settings)
    config = repo.folder("csv_orders") / "dagster.yaml"
    config.write_text(config.read_text().replace("retries: 2", "retries: many"))
    repo.commit("csv_orders broken")
    manifest = refresh(settings).manifest
    assert "csv_orders" in manifest.pinned
    defs = build_definitions(manifest, settings)
    placeholders = [s.key for s in defs.assets if not isinstance(s, AssetsDefinition)]
    assert placeholders == [MANIFEST_KEY]  # no placeholder: its assets are still there
    (check,) = defs.asset_checks
    (key,) = check.check_keys
    assert key.asset_key.path[0] == "csv_orders" and key.name == CHECK_NAME


def test_the_sensor_records_the_manifest_and_the_failing_check(
    repo: PipelinesRepo, tmp_path: Path, instance: DagsterInstance
) -> None:
    broken_repo(repo)
    commit = repo.commit("one broken")
    settings = make_settings(tmp_path, repo.url)
    result = repo_sensor(settings, loaded=None).evaluate_tick(
        build_sensor_context(instance=instance, cursor=None)
    )
    observation, evaluation = result.asset_events
    meta = {k: v.value for k, v in observation.metadata.items()}
    assert observation.asset_key == MANIFEST_KEY
    assert meta["elt/commit"] == commit and meta["elt/pipelines"] == 2
    assert meta["elt/pipelines_per_tool"] == {"dlt": 1, "sling": 1}
    assert (
        "| `pipelines/orders_api/dagster.yaml` | retries | Not a valid integer. |"
        in meta["elt/errors"]
    )
    assert (evaluation.asset_key, evaluation.check_name, evaluation.passed) == (
        AssetKey(["orders_api"]),
        CHECK_NAME,
        False,
    )
    check_meta = {k: v.value for k, v in evaluation.metadata.items()}
    assert (check_meta["elt/file"], check_meta["elt/field"], check_meta["elt/message"]) == (
        "pipelines/orders_api/dagster.yaml",
        "retries",
        "Not a valid integer.",
    )


def test_a_duplicate_name_is_a_repo_level_placeholder(repo: PipelinesRepo, tmp_path: Path) -> None:
    repo.copy_example("csv_orders")
    repo.copy_example("csv_orders", as_name="csv_orders_copy")
    config = repo.folder("csv_orders_copy") / "dagster.yaml"
    config.write_text(config.read_text() + "name: csv_orders\n")
    repo.commit("duplicate")
    settings = make_settings(tmp_path, repo.url)
    manifest = refresh(settings).manifest
    defs = build_definitions(manifest, settings)
    keys = {s.key for s in defs.assets if not isinstance(s, AssetsDefinition)}
    assert AssetKey(["elt_config_errors", "csv_orders_copy"]) in keys
