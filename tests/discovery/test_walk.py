"""Discovery turns each pipeline folder into a spec or errors, and one broken folder stays alone."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from elt_repo.discovery.walk import discover
from elt_repo.settings import EXAMPLES_DIR

GOOD_DLT = """
import dlt

@dlt.resource(write_disposition="append")
def numbers():
    yield from ({"n": i} for i in range(3))

@dlt.resource(table_name="letters_table")
def letters():
    yield {"l": "a"}

@dlt.source
def src(limit: int = 3):
    return numbers, letters
"""


def write_pipeline(
    base: Path, name: str, config: dict | str, files: dict[str, str] | None = None
) -> Path:
    folder = base / "pipelines" / name
    folder.mkdir(parents=True)
    text = config if isinstance(config, str) else yaml.safe_dump(config)
    (folder / "dagster.yaml").write_text(text)
    for rel, content in (files or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(content)
    return folder


def good_dlt(base: Path, folder: str = "good", **extra: object) -> Path:
    config = {"dlt": {"source": "pipeline.py:src"}, **extra}
    return write_pipeline(base, folder, config, {"pipeline.py": GOOD_DLT})


def run(base: Path, timeout: float = 30):
    return discover(base, "pipelines", dict(os.environ), timeout)


def fields(result) -> dict[str, tuple[str, str]]:
    return {e.path: (e.field, e.message) for e in result.errors}


def test_examples(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES_DIR, tmp_path / "pipelines")
    result = run(tmp_path)
    assert result.errors == ()
    by_name = {p.name: p for p in result.pipelines}
    assert sorted(by_name) == [
        "csv_orders",
        "github_issues",
        "shop_events",
        "shop_sqlite",
        "store_sales",
    ]
    assert [d.name for d in result.disabled] == ["legacy_export"]
    assert [r.table_name for r in by_name["github_issues"].dlt.resources] == ["issues", "comments"]
    assert [s.table for s in by_name["csv_orders"].sling.streams] == ["customers", "orders"]
    assert by_name["shop_sqlite"].sling.source == "SHOP_DB"
    assert by_name["shop_sqlite"].sling.target == "WAREHOUSE"
    assert all(len(p.code_version) == 16 for p in result.pipelines)


def test_dlt_resources_are_listed_without_importing_here(tmp_path: Path) -> None:
    good_dlt(tmp_path)
    before = set(sys.modules)
    result = run(tmp_path)
    (spec,) = result.pipelines
    assert [(r.name, r.table_name, r.write_disposition) for r in spec.dlt.resources] == [
        ("numbers", "numbers", "append"),
        ("letters", "letters_table", "append"),
    ]
    assert not [m for m in set(sys.modules) - before if m.startswith("elt_pipeline")]


def test_defaults_name_and_tool_from_folder(tmp_path: Path) -> None:
    write_pipeline(
        tmp_path,
        "sling/my-orders",
        {},
        {
            "replication.yaml": "source: LOCAL\ntarget: WAREHOUSE\nstreams:\n  file://./a.csv: {object: raw.a}\n"
        },
    )
    (spec,) = run(tmp_path).pipelines
    assert (spec.name, spec.tool, spec.folder) == (
        "my_orders",
        "sling",
        "pipelines/sling/my-orders",
    )


def test_any_depth(tmp_path: Path) -> None:
    good_dlt(tmp_path, "team_a/ingest/deep")
    assert [p.folder for p in run(tmp_path).pipelines] == ["pipelines/team_a/ingest/deep"]


def test_code_version_follows_content(tmp_path: Path) -> None:
    folder = good_dlt(tmp_path)
    first = run(tmp_path).pipelines[0].code_version
    assert run(tmp_path).pipelines[0].code_version == first
    (folder / "pipeline.py").write_text(GOOD_DLT + "\n# changed\n")
    assert run(tmp_path).pipelines[0].code_version != first


BROKEN = {
    "bad_yaml": ("enabled: [true\n", {}, "<root>", "invalid YAML at line"),
    "bad_field": (
        {"retries": "lots", "dlt": {"source": "pipeline.py:src"}},
        {"pipeline.py": GOOD_DLT},
        "retries",
        "Not a valid integer",
    ),
    "no_source_file": (
        {"dlt": {"source": "missing.py:src"}},
        {},
        "dlt.source",
        "file not found: missing.py:src",
    ),
    "no_function": (
        {"dlt": {"source": "pipeline.py:nope"}},
        {"pipeline.py": GOOD_DLT},
        "dlt.source",
        "has no function 'nope'",
    ),
    "import_error": (
        {"dlt": {"source": "pipeline.py:src"}},
        {"pipeline.py": "import not_a_module_xyz\n"},
        "dlt.source",
        "ModuleNotFoundError: No module named 'not_a_module_xyz'",
    ),
    "crash": (
        {"dlt": {"source": "pipeline.py:src"}},
        {"pipeline.py": "import os\nos._exit(7)\n"},
        "dlt.source",
        "crashed",
    ),
    "hang": (
        {"dlt": {"source": "pipeline.py:src"}},
        {"pipeline.py": "import time\ntime.sleep(120)\n"},
        "dlt.source",
        "timed out after 3s",
    ),
    "not_a_source": (
        {"dlt": {"source": "pipeline.py:src"}},
        {"pipeline.py": "def src():\n    return 42\n"},
        "dlt.source",
        "returned int, not a dlt source",
    ),
    "missing_env": (
        {"dlt": {"source": "pipeline.py:src", "args": {"limit": "${NOT_SET_ANYWHERE}"}}},
        {"pipeline.py": GOOD_DLT},
        "dlt.source",
        "NOT_SET_ANYWHERE is not set",
    ),
    "partition_arg_not_a_parameter": (
        {"dlt": {"source": "pipeline.py:src", "partition_args": {"start": "since"}}},
        {"pipeline.py": GOOD_DLT},
        "dlt.partition_args.start",
        "'since' is not a parameter of src() (it takes limit)",
    ),
    "no_dlt_section": ({"tool": "dlt"}, {}, "dlt", "needs a dlt: section"),
    "no_replication": ({"tool": "sling"}, {}, "sling.replication", "replication file not found"),
    "bad_replication": (
        {"tool": "sling"},
        {"replication.yaml": "source: A\ntarget: B\nstreams: [x]\n"},
        "streams",
        "needs a 'streams' mapping",
    ),
    "no_target": (
        {"tool": "sling"},
        {"replication.yaml": "source: A\nstreams: {x: {}}\n"},
        "target",
        "required",
    ),
    "same_table": (
        {"tool": "sling"},
        {
            "replication.yaml": "source: A\ntarget: B\nstreams:\n  s1.t: {object: x.t}\n  s2.t: {object: x.t}\n"
        },
        "streams.s2.t",
        "lands in table 't'",
    ),
    "unknown_tool": ({"description": "?"}, {}, "tool", "cannot infer the tool"),
}


def test_each_broken_pipeline_is_an_error_and_the_rest_load(tmp_path: Path) -> None:
    good_dlt(tmp_path, "good")
    for name, (config, files, _, _) in BROKEN.items():
        write_pipeline(tmp_path, name, config, files)
    result = run(tmp_path, timeout=3)
    assert [p.name for p in result.pipelines] == ["good"]
    found = fields(result)
    for name, (_, _, field, message) in BROKEN.items():
        path = next(p for p in found if p.startswith(f"pipelines/{name}/"))
        assert found[path][0] == field, (name, found[path])
        assert message in found[path][1], (name, found[path])


def test_duplicate_names(tmp_path: Path) -> None:
    good_dlt(tmp_path, "a", name="same")
    good_dlt(tmp_path, "b", name="same")
    result = run(tmp_path)
    assert [p.folder for p in result.pipelines] == ["pipelines/a"]
    (error,) = result.errors
    assert (error.path, error.field) == ("pipelines/b/dagster.yaml", "name")
    assert "duplicate pipeline name 'same', already used by pipelines/a" in error.message


def test_disabled_pipeline_is_listed_not_built(tmp_path: Path) -> None:
    write_pipeline(tmp_path, "off", {"enabled": False, "tool": "sling"})
    result = run(tmp_path)
    assert result.pipelines == () and result.errors == ()
    assert [(d.name, d.path) for d in result.disabled] == [("off", "pipelines/off")]


@pytest.mark.parametrize("layout", ["missing", "file"])
def test_missing_pipelines_dir(tmp_path: Path, layout: str) -> None:
    if layout == "file":
        (tmp_path / "pipelines").write_text("not a folder")
    (error,) = run(tmp_path).errors
    assert (error.path, error.field) == ("pipelines", "ELT_PIPELINES_DIR")
    assert "folder 'pipelines' not found in the repository" in error.message
