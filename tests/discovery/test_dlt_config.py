"""dlt config and secrets under the keys a pipeline's author uses running `python pipeline.py`."""

from __future__ import annotations

import os
import subprocess
import sys

import duckdb
import pytest
from dagster import AssetsDefinition, Definitions, materialize

from elt_repo.defs.build import build_definitions
from elt_repo.defs.resources import build_resources
from elt_repo.refresh import refresh
from tests.conftest import PipelinesRepo

pytestmark = pytest.mark.slow

# As dlt's docs write a source: its secret comes from dlt.secrets, not from an argument.
PIPELINE = """
import dlt


@dlt.source
def shop_api(api_key: str = dlt.secrets.value, page_size: int = dlt.config.value):
    @dlt.resource(write_disposition="replace")
    def orders():
        if api_key != "k-123":
            raise ValueError("wrong api key")
        yield [{"id": n} for n in range(page_size)]

    return orders


if __name__ == "__main__":
    pipeline = dlt.pipeline("shop", destination="duckdb", dataset_name="shop_data")
    print(pipeline.run(shop_api()).has_failed_jobs)
"""
# dlt's section for a source in pipeline.py is the module name: `pipeline`.
CONFIG = {"SOURCES__PIPELINE__SHOP_API__API_KEY": "k-123", "SOURCES__PIPELINE__PAGE_SIZE": "4"}


def test_the_authors_config_keys_reach_discovery_and_the_run(
    repo: PipelinesRepo, settings_for, instance, tmp_path, monkeypatch
) -> None:
    folder = repo.folder("shop")
    repo.write("pipelines/shop/pipeline.py", PIPELINE)
    repo.write(
        "pipelines/shop/dagster.yaml",
        {"dlt": {"source": "pipeline.py:shop_api", "dataset_name": "shop_data"}},
    )
    repo.commit("shop api")
    # The author's own run, from the folder, finds both keys.
    alone = subprocess.run(
        [sys.executable, "pipeline.py"],
        cwd=folder,
        env={**os.environ, **CONFIG, "DLT_DATA_DIR": str(tmp_path / "dlt")},
        capture_output=True,
        text=True,
    )
    assert alone.returncode == 0 and alone.stdout.strip() == "False", alone.stderr[-2000:]

    for key, value in CONFIG.items():
        monkeypatch.setenv(key, value)
    settings = settings_for(repo.url)
    manifest = refresh(settings).manifest
    assert manifest.errors == ()
    (pipeline,) = manifest.pipelines
    assert [r.table_name for r in pipeline.dlt.resources] == ["orders"]
    defs = Definitions.merge(
        build_definitions(manifest, settings), Definitions(resources=build_resources(settings))
    )
    assets = [a for a in defs.assets if isinstance(a, AssetsDefinition) and a.is_executable]
    result = materialize(assets, resources=defs.resources, instance=instance)
    assert result.success
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        assert con.execute("select count(*) from shop_data.orders").fetchone() == (4,)


def test_each_pipeline_reads_its_own_dot_dlt_folder_and_no_other(
    repo: PipelinesRepo, settings_for, instance, tmp_path
) -> None:
    # As dlt's docs set it up: config.toml and secrets.toml in .dlt/ beside pipeline.py.
    repo.write("pipelines/shop/pipeline.py", PIPELINE)
    repo.write("pipelines/shop/.dlt/config.toml", "[sources.pipeline]\npage_size = 5\n")
    repo.write(
        "pipelines/shop/.dlt/secrets.toml", '[sources.pipeline.shop_api]\napi_key = "k-123"\n'
    )
    repo.write(
        "pipelines/shop/dagster.yaml",
        {"dlt": {"source": "pipeline.py:shop_api", "dataset_name": "shop_data"}},
    )
    # The same code with no .dlt/ of its own: it must not find the other folder's.
    repo.write("pipelines/bare/pipeline.py", PIPELINE)
    repo.write(
        "pipelines/bare/dagster.yaml",
        {"dlt": {"source": "pipeline.py:shop_api", "dataset_name": "bare_data"}},
    )
    repo.commit("two folders, one .dlt")
    alone = subprocess.run(
        [sys.executable, "pipeline.py"],
        cwd=repo.folder("shop"),
        env={**os.environ, "DLT_DATA_DIR": str(tmp_path / "dlt")},
        capture_output=True,
        text=True,
    )
    assert alone.returncode == 0 and alone.stdout.strip() == "False", alone.stderr[-2000:]

    settings = settings_for(repo.url)
    # One worker lists both, whichever comes first, as a long-lived code server does.
    for _ in range(2):
        manifest = refresh(settings, force=True).manifest
        assert [p.name for p in manifest.pipelines] == ["shop"]
        (error,) = manifest.errors
        assert error.path == "pipelines/bare/dagster.yaml" and "api_key" in error.message
    defs = Definitions.merge(
        build_definitions(manifest, settings), Definitions(resources=build_resources(settings))
    )
    assets = [a for a in defs.assets if isinstance(a, AssetsDefinition) and a.is_executable]
    assert materialize(assets, resources=defs.resources, instance=instance).success
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        assert con.execute("select count(*) from shop_data.orders").fetchone() == (5,)
