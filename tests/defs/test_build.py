"""build_definitions: one snapshot of every example asset spec, and the rules behind them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, AssetsDefinition, AssetSpec, Backoff, Definitions, Jitter

from elt_repo.defs.assets import duckdb_pool
from elt_repo.defs.build import build_definitions
from elt_repo.defs.health import MANIFEST_KEY
from elt_repo.discovery.walk import discover
from elt_repo.manifest import Manifest
from elt_repo.schemas import ConfigError
from elt_repo.settings import EXAMPLES_DIR
from tests.conftest import PROJECT_DIR, make_settings

SNAPSHOT = PROJECT_DIR / "tests" / "snapshots" / "example_asset_specs.json"
COMMIT = "c0ffee" + "0" * 34


@pytest.fixture
def example_manifest(tmp_path: Path) -> Manifest:
    shutil.copytree(EXAMPLES_DIR, tmp_path / "checkout" / "pipelines")
    found = discover(tmp_path / "checkout", "pipelines", dict(os.environ))
    return Manifest(
        commit=COMMIT,
        branch="main",
        url="https://github.com/acme/pipelines.git",
        pipelines_dir="pipelines",
        discovered_at="t",
        pipelines=found.pipelines,
        disabled=found.disabled,
        errors=found.errors,
    )


@pytest.fixture
def example_defs(tmp_path: Path, example_manifest: Manifest) -> Definitions:
    return build_definitions(example_manifest, make_settings(tmp_path, "x"))


def _assets(defs: Definitions) -> list[AssetsDefinition]:
    return [a for a in defs.assets if isinstance(a, AssetsDefinition)]


def placeholders(defs: Definitions) -> list[AssetSpec]:
    return [a for a in defs.assets if isinstance(a, AssetSpec) and a.key != MANIFEST_KEY]


def spec_snapshot(defs: Definitions) -> dict:
    """Every asset spec with what users see; run-specific paths left out."""
    out = {}
    for assets_def in _assets(defs):
        for spec in assets_def.specs:
            meta = {k: str(getattr(v, "value", v)) for k, v in spec.metadata.items()}
            meta.pop("dagster/code_references")
            retry = assets_def.op.retry_policy
            out[spec.key.to_user_string()] = {
                "op": assets_def.op.name,
                "group": spec.group_name,
                "description": spec.description,
                "owners": list(spec.owners),
                "tags": dict(sorted(spec.tags.items())),
                "kinds": sorted(spec.kinds),
                "code_version": spec.code_version,
                "deps": sorted(d.asset_key.to_user_string() for d in spec.deps),
                "metadata": dict(sorted(meta.items())),
                "automation_condition": spec.automation_condition.get_label()
                if spec.automation_condition
                else None,
                "partitions": str(assets_def.partitions_def) if assets_def.partitions_def else None,
                "retry_policy": [
                    retry.max_retries,
                    retry.delay,
                    retry.backoff.value,
                    retry.jitter.value,
                ]
                if retry
                else None,
                "pool": assets_def.op.pool.split("_")[0] if assets_def.op.pool else None,
            }
    return dict(sorted(out.items()))


def test_example_asset_specs_snapshot(example_defs: Definitions) -> None:
    current = spec_snapshot(example_defs)
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert SNAPSHOT.exists(), f"no snapshot at {SNAPSHOT}: run with UPDATE_SNAPSHOTS=1 once"
    assert current == json.loads(SNAPSHOT.read_text()), (
        "asset specs changed; if intended, rerun with UPDATE_SNAPSHOTS=1 and review the diff"
    )


def test_keys_are_pipeline_and_table(example_defs: Definitions) -> None:
    keys = {k for a in _assets(example_defs) for k in a.keys}
    assert keys == {
        AssetKey(["csv_orders", "customers"]),
        AssetKey(["csv_orders", "orders"]),
        AssetKey(["github_issues", "issues"]),
        AssetKey(["github_issues", "comments"]),
        AssetKey(["shop_sqlite", "products"]),
        AssetKey(["shop_events", "events"]),
        AssetKey(["shop_sqlite", "inventory"]),
        AssetKey(["store_sales", "daily_sales"]),
        AssetKey(["store_sales", "stores"]),
    }


def test_retry_policy_is_exponential_with_jitter(example_defs: Definitions) -> None:
    (gh,) = [a for a in _assets(example_defs) if a.op.name == "github_issues__dlt"]
    policy = gh.op.retry_policy
    assert (policy.max_retries, policy.delay, policy.backoff, policy.jitter) == (
        3,
        30,
        Backoff.EXPONENTIAL,
        Jitter.PLUS_MINUS,
    )


def test_every_writer_of_the_warehouse_shares_one_pool(
    tmp_path: Path, example_defs: Definitions
) -> None:
    pools = {a.op.pool for a in _assets(example_defs)}
    assert pools == {duckdb_pool(tmp_path / "warehouse.duckdb")}
    assert duckdb_pool(tmp_path / "other.duckdb") not in pools


def test_one_running_automation_sensor_covers_every_scheduled_pipeline(
    example_defs: Definitions,
) -> None:
    (sensor,) = example_defs.sensors
    assert (sensor.name, sensor.default_status.value) == ("elt_repo_automation", "RUNNING")
    covered = sensor.asset_selection.resolve(_assets(example_defs))
    assert covered == {
        k for a in _assets(example_defs) for k in a.keys if a.op.name != "csv_orders__sling"
    }


def test_manifest_errors_become_visible_placeholders(
    tmp_path: Path, example_manifest: Manifest
) -> None:
    error = ConfigError("pipelines/broken/dagster.yaml", "retries", "Not a valid integer.")
    defs = build_definitions(example_manifest.with_errors((error,)), make_settings(tmp_path, "x"))
    (spec,) = [s for s in placeholders(defs) if s.key == AssetKey(["elt_config_errors", "broken"])]
    assert "**retries**: Not a valid integer." in spec.description
    assert spec.group_name == "elt_config_errors"


def test_a_pipeline_that_cannot_build_does_not_take_down_the_rest(
    tmp_path: Path, example_manifest: Manifest
) -> None:
    from dataclasses import replace

    broken = replace(example_manifest.pipelines[0], tags={"x": "has space"})  # AssetSpec rejects it
    manifest = replace(example_manifest, pipelines=(broken, *example_manifest.pipelines[1:]))
    defs = build_definitions(manifest, make_settings(tmp_path, "x"))
    built = {a.op.name for a in _assets(defs) if a.is_executable}
    assert broken.name + "__sling" not in built and len(built) == 4
    (spec,) = placeholders(defs)
    assert spec.key == AssetKey(["elt_config_errors", broken.folder.rsplit("/", 1)[-1]])
    assert "Invalid tag value" in spec.description


def test_a_dlt_dataset_named_like_the_warehouse_file_is_a_config_error(
    tmp_path: Path, example_manifest: Manifest
) -> None:
    from dataclasses import replace

    (github,) = [p for p in example_manifest.pipelines if p.name == "github_issues"]
    assert github.dlt is not None
    clash = replace(github, dlt=replace(github.dlt, dataset_name="warehouse"))
    others = [p for p in example_manifest.pipelines if p is not github]
    defs = build_definitions(
        replace(example_manifest, pipelines=(clash, *others)), make_settings(tmp_path, "x")
    )
    assert "github_issues__dlt" not in {a.op.name for a in _assets(defs)}
    (spec,) = placeholders(defs)
    assert "pipelines/github_issues/dagster.yaml" in spec.description
    assert "**dlt.dataset_name**" in spec.description and "warehouse.duckdb" in spec.description


def test_github_urls_become_code_references(example_defs: Definitions) -> None:
    spec = next(iter(_assets(example_defs)[0].specs))
    refs = spec.metadata["dagster/code_references"].code_references
    urls = [r.url for r in refs if hasattr(r, "url")]
    assert urls == [
        f"https://github.com/acme/pipelines/blob/{COMMIT}/pipelines/csv_orders/replication.yaml"
    ]


def test_loading_definitions_imports_no_pipeline_code_nor_dlt_or_duckdb(
    tmp_path: Path, examples_repo
) -> None:
    """In a fresh interpreter: refresh, then import the code location and list loaded modules."""
    env = {
        **os.environ,
        "ELT_REPO_URL": examples_repo.url,
        "ELT_STATE_DIR": str(tmp_path / "state"),
        "ELT_WAREHOUSE": str(tmp_path / "w.duckdb"),
    }
    subprocess.run(
        [sys.executable, "scripts/refresh.py"],
        cwd=PROJECT_DIR,
        env=env,
        check=True,
        capture_output=True,
    )
    probe = (
        "import sys, elt_repo.definitions as d; "
        "print(len(d.defs.resolve_asset_graph().get_all_asset_keys())); "
        "print(sorted(m for m in sys.modules if m.startswith('elt_pipeline') or m.startswith('dlt.sources.rest'))); "
        "print(sorted(m for m in ('dlt', 'dagster_dlt', 'duckdb') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=PROJECT_DIR,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    assert int(out[0]) == 10 and out[1] == "[]"  # 9 example assets and elt_repo/manifest
    # dlt, dagster-dlt and duckdb are imported by runs only: about 60 MiB and 0.35 s saved per
    # code-server process (bench/bench_definitions.py).
    assert out[2] == "[]", out[2]


def test_definitions_validate_cli(tmp_path: Path, examples_repo) -> None:
    env = {
        **os.environ,
        "ELT_REPO_URL": examples_repo.url,
        "ELT_STATE_DIR": str(tmp_path / "state"),
        "DAGSTER_HOME": str(tmp_path),
    }
    (tmp_path / "dagster.yaml").write_text("telemetry: {enabled: false}\n")
    dagster = Path(sys.executable).parent / "dagster"

    def validate() -> subprocess.CompletedProcess:
        cmd = [str(dagster), "definitions", "validate", "-w", "workspace.yaml"]
        return subprocess.run(cmd, cwd=PROJECT_DIR, env=env, capture_output=True, text=True)

    without_manifest = validate()
    assert without_manifest.returncode == 0, without_manifest.stderr[-2000:]
    examples_repo.write("pipelines/broken/dagster.yaml", "retries: [\n")
    examples_repo.commit("broken")
    subprocess.run(
        [sys.executable, "scripts/refresh.py"], cwd=PROJECT_DIR, env=env, capture_output=True
    )
    with_errors = validate()
    assert with_errors.returncode == 0, with_errors.stderr[-2000:]
    assert "Validation successful" in with_errors.stderr + with_errors.stdout


def test_instance_config_queues_runs_and_limits_each_pool_to_one(instance) -> None:
    config = instance.get_concurrency_config()
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    assert config.pool_config.pool_granularity.value == "op"
    assert config.pool_config.default_pool_limit == 1
    assert config.run_queue_config.max_concurrent_runs == 4
    assert instance.telemetry_enabled is False
