"""Shared code in the pipelines repo: importable by every pipeline, and nothing from outside it.

Two dlt pipelines import a `pipelines/common/` package, one as `common`, one as
`pipelines.common`; both are discovered and really run into DuckDB. A change to the shared
code reaches the next refresh. A helper symlinked outside the repo is refused, never run.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from dagster import Definitions

from elt_repo.cli.demo import materialize_all
from elt_repo.defs.build import build_definitions
from elt_repo.defs.resources import build_resources
from elt_repo.refresh import refresh
from tests.conftest import PipelinesRepo

pytestmark = pytest.mark.slow

COMMON = """
import dlt

TABLE = "{table}"


def resource_of(name):
    @dlt.resource(name=name, table_name=f"{{name}}_{{TABLE}}")
    def rows():
        yield from ({{"id": i, "kind": name}} for i in range(3))

    return rows
"""


def shared_code_repo(repo: PipelinesRepo, table: str) -> None:
    repo.write("pipelines/common/__init__.py", COMMON.format(table=table))
    repo.write("pipelines/common/names.py", "ORDERS = 'orders'\nCUSTOMERS = 'customers'\n")
    repo.write(
        "pipelines/orders/pipeline.py",
        "from common import resource_of\nfrom common.names import ORDERS\n\n"
        "def src():\n    return resource_of(ORDERS)\n",
    )
    repo.write(
        "pipelines/customers/pipeline.py",
        "from pipelines.common import resource_of\nfrom pipelines.common.names import CUSTOMERS\n"
        "\ndef src():\n    return resource_of(CUSTOMERS)\n",
    )
    for name in ("orders", "customers"):
        repo.write(
            f"pipelines/{name}/dagster.yaml",
            {"dlt": {"source": "pipeline.py:src", "dataset_name": f"{name}_data"}},
        )


def tables(manifest) -> dict[str, list[str]]:
    return {p.name: [r.table_name for r in p.dlt.resources] for p in manifest.pipelines}


def test_pipelines_share_a_common_package_and_see_its_changes(
    repo: PipelinesRepo, settings_for, instance
) -> None:
    shared_code_repo(repo, "v1")
    repo.commit("two pipelines, one shared package")
    settings = settings_for(repo.url)
    manifest = refresh(settings).manifest
    assert manifest.errors == ()
    assert tables(manifest) == {"customers": ["customers_v1"], "orders": ["orders_v1"]}

    defs = Definitions.merge(
        build_definitions(manifest, settings), Definitions(resources=build_resources(settings))
    )
    outcomes = materialize_all(defs, manifest, instance)
    assert [(o.op, o.success) for o in outcomes] == [
        ("customers__dlt", True),
        ("orders__dlt", True),
    ]
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        for name in ("orders", "customers"):
            rows = con.sql(
                f"select kind, count(*) from {name}_data.{name}_v1 group by 1"
            ).fetchall()
            assert rows == [(name, 3)]

    # The shared code changes: the warm discovery workers import the new commit's version.
    repo.write("pipelines/common/__init__.py", COMMON.format(table="v2"))
    repo.commit("shared package changes its table names")
    manifest = refresh(settings).manifest
    assert manifest.errors == ()
    assert tables(manifest) == {"customers": ["customers_v2"], "orders": ["orders_v2"]}


def test_a_helper_symlinked_outside_the_repo_is_refused_and_never_run(
    repo: PipelinesRepo, settings_for, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "helpers.py").write_text("raise SystemExit('code from outside the repo ran')\n")
    shared_code_repo(repo, "v1")
    repo.write("pipelines/evil/pipeline.py", "import helpers\n\ndef src():\n    pass\n")
    repo.write("pipelines/evil/dagster.yaml", {"dlt": {"source": "pipeline.py:src"}})
    (repo.path / "pipelines/evil/helpers.py").symlink_to(outside / "helpers.py")
    repo.commit("a pipeline whose helper is a symlink out of the repo")
    manifest = refresh(settings_for(repo.url)).manifest
    assert sorted(p.name for p in manifest.pipelines) == ["customers", "orders"]
    (error,) = manifest.errors
    assert error.path == "pipelines/evil/dagster.yaml", error
    assert "helpers.py resolves outside the pipelines repo" in error.message, error
    assert "ran" not in error.message
    assert not error.retry  # the repo's fault: not tried again until it changes
