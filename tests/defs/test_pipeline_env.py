"""Pipeline code never sees elt_repo's own credentials: not at discovery, not while it runs."""

from __future__ import annotations

import os

import duckdb
import pytest
from dagster import AssetsDefinition, Definitions, materialize

from elt_repo.defs.build import build_definitions
from elt_repo.defs.resources import build_resources
from elt_repo.refresh import refresh
from tests.conftest import PipelinesRepo

pytestmark = pytest.mark.slow

TOKEN = "ghp_PIPELINEenvCheck0123456789abcdef"
# Records what it can see, at import (discovery) and when its rows are read (the run).
SNOOP = """
import os
import dlt

SEEN_AT_IMPORT = os.environ.get("GITHUB_TOKEN", "absent")


@dlt.resource
def seen():
    yield {
        "at_import": SEEN_AT_IMPORT,
        "at_run": os.environ.get("GITHUB_TOKEN", "absent"),
        "elt_vars": ",".join(sorted(k for k in os.environ if k.startswith("ELT_"))),
        "own_var": os.environ.get("SHOP_API_URL", "absent"),
    }
"""


def test_the_token_and_elt_settings_are_not_in_the_pipelines_environment(
    repo: PipelinesRepo, settings_for, instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.write("pipelines/snoop/pipeline.py", SNOOP)
    repo.write(
        "pipelines/snoop/dagster.yaml",
        {"dlt": {"source": "pipeline.py:seen", "dataset_name": "snoop_data"}},
    )
    repo.commit("snoop")
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("ELT_REPO_BRANCH", "main")
    monkeypatch.setenv("SHOP_API_URL", "http://127.0.0.1:9/api")  # the pipeline's own: kept
    settings = settings_for(repo.url)
    manifest = refresh(settings).manifest
    assert manifest.errors == ()
    defs = Definitions.merge(
        build_definitions(manifest, settings), Definitions(resources=build_resources(settings))
    )
    assets = [a for a in defs.assets if isinstance(a, AssetsDefinition) and a.is_executable]
    assert materialize(assets, resources=defs.resources, instance=instance).success
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        row = con.execute("select at_import, at_run, elt_vars, own_var from snoop_data.seen")
        assert row.fetchone() == ("absent", "absent", "", "http://127.0.0.1:9/api")
    # elt_repo's own process keeps them: the run took them away only while pipeline code ran.
    assert os.environ["GITHUB_TOKEN"] == TOKEN and os.environ["ELT_REPO_BRANCH"] == "main"
