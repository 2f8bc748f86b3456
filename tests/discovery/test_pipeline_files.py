"""Pure helpers over pipeline folders: hashes, relative paths, Sling placeholders.

Which table a Sling stream lands in is tested against real Sling in test_sling_streams.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from elt_repo.discovery.pipeline_files import (
    content_hash,
    fill_partition_vars,
    resolve_args,
    resolve_stream_name,
)
from elt_repo.settings import SettingsError


def test_only_our_three_placeholders_are_filled() -> None:
    config = {
        "streams": {
            "file://./in/{partition_key}.csv": {"object": "raw.{stream_file_name}_{partition_key}"}
        },
        "defaults": {
            "sql": "where d >= '{partition_start}' and d < '{partition_end}' -- {stream_table} {other}"
        },
    }
    filled = fill_partition_vars(
        config,
        {"partition_key": "us", "partition_start": "2024-01-01", "partition_end": "2024-01-02"},
    )
    assert filled == {
        "streams": {"file://./in/us.csv": {"object": "raw.{stream_file_name}_us"}},
        "defaults": {
            "sql": "where d >= '2024-01-01' and d < '2024-01-02' -- {stream_table} {other}"
        },
    }


def test_unpartitioned_runs_leave_placeholders_alone() -> None:
    assert fill_partition_vars("x_{partition_key}", {}) == "x_{partition_key}"


def test_relative_paths_resolve_against_the_folder(tmp_path: Path) -> None:
    assert resolve_stream_name("file://./data/x.csv", tmp_path) == f"file://{tmp_path}/data/x.csv"
    assert resolve_stream_name("file:///abs/x.csv", tmp_path) == "file:///abs/x.csv"
    assert resolve_stream_name("main.products", tmp_path) == "main.products"
    args = resolve_args(
        {"f": "./d/a.jsonl", "up": "../b", "n": 3, "t": "${TOKEN}"}, tmp_path, {"TOKEN": "s"}
    )
    assert args == {
        "f": f"{tmp_path}/d/a.jsonl",
        "up": str(tmp_path.parent / "b"),
        "n": 3,
        "t": "s",
    }
    with pytest.raises(SettingsError, match="dlt.args: environment variable TOKEN is not set"):
        resolve_args({"t": "${TOKEN}"}, tmp_path, {})


def test_content_hash_ignores_bytecode(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    first = content_hash(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    assert content_hash(tmp_path) == first
    (tmp_path / "b.yaml").write_text("k: v\n")
    assert content_hash(tmp_path) != first
