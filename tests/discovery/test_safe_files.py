"""Reading a pipeline's files as untrusted input: every bad file is a ConfigError naming it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from elt_repo.discovery.safe_files import MAX_YAML_BYTES, confined, read_yaml
from elt_repo.schemas import ConfigException

REL = "pipelines/p/dagster.yaml"
BOMB = "\n".join(
    [f"a0: &a0 [{', '.join(['x'] * 10)}]"]
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
)


def error_of(folder: Path, name: str = "dagster.yaml") -> str:
    with pytest.raises(ConfigException) as info:
        read_yaml(folder / name, folder, REL, "<root>")
    (error,) = info.value.errors
    assert (error.path, error.field) == (REL, "<root>")
    return error.message


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "repo" / "pipelines" / "p"
    path.mkdir(parents=True)
    return path


CASES = {
    "latin1": (b"description: caf\xe9\n", "not UTF-8: byte 0xe9 at line 1"),
    "binary": (b"\x00\x01\x02\xff\xfe junk", "not UTF-8: byte 0xff at line 1"),
    "bom": (b"\xef\xbb\xbfenabled: true\n", "byte-order mark"),
    "duplicate_key": (b"tool: dlt\ngroup: a\ngroup: b\n", "duplicate key 'group' at line 3"),
    "deep": (b"a: " + b"[" * 10000 + b"]" * 10000, "nested deeper than 64 levels"),
    "alias_bomb": (BOMB.encode(), "expands to more than 100000 values"),
    "python_tag": (
        b"a: !!python/object/apply:os.system [ls]\n",
        "could not determine a constructor",
    ),
    "tabs": (b"dlt:\n\tsource: x\n", "found character '\\t'"),
    "too_big": (b"#" * (MAX_YAML_BYTES + 1), "larger than 1024 KiB"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_bad_yaml_file_is_an_error_naming_what_is_wrong(folder: Path, case: str) -> None:
    content, expected = CASES[case]
    (folder / "dagster.yaml").write_bytes(content)
    assert expected in error_of(folder)


def test_good_yaml_with_merge_keys_and_small_aliases_loads(folder: Path) -> None:
    (folder / "dagster.yaml").write_text("base: &b {x: 1}\nc:\n  <<: *b\n  y: 2\nd: [*b, *b]\n")
    loaded = read_yaml(folder / "dagster.yaml", folder, REL, "<root>")
    assert loaded == {"base": {"x": 1}, "c": {"x": 1, "y": 2}, "d": [{"x": 1}, {"x": 1}]}


def test_special_files_and_symlinks_are_errors(folder: Path, tmp_path: Path) -> None:
    os.mkfifo(folder / "fifo.yaml")
    assert "not a regular file (a FIFO)" in error_of(folder, "fifo.yaml")
    (folder / "dev.yaml").symlink_to("/dev/zero")
    assert "dev.yaml resolves outside the pipeline folder" in error_of(folder, "dev.yaml")
    (folder / "dangling.yaml").symlink_to(folder / "gone.yaml")
    assert "dangling.yaml is a symlink to nothing" in error_of(folder, "dangling.yaml")
    (folder / "loop.yaml").symlink_to(folder / "loop.yaml")
    assert "loop.yaml cannot be resolved" in error_of(folder, "loop.yaml")
    outside = tmp_path / "outside.yaml"
    outside.write_text("tool: dlt\n")
    (folder / "out.yaml").symlink_to(outside)
    assert "out.yaml resolves outside the pipeline folder" in error_of(folder, "out.yaml")
    # A symlink to another file of the same folder is fine.
    (folder / "real.yaml").write_text("tool: dlt\n")
    (folder / "alias.yaml").symlink_to("real.yaml")
    assert read_yaml(folder / "alias.yaml", folder, REL, "<root>") == {"tool": "dlt"}


def test_confined_names_the_path_that_leaves(folder: Path) -> None:
    (folder / "sub").mkdir()
    (folder / "sub" / "pipeline.py").symlink_to("../../other/pipeline.py")
    with pytest.raises(ConfigException) as info:
        confined(folder / "sub" / "pipeline.py", folder, REL, "dlt.source")
    assert "sub/pipeline.py is a symlink to nothing" in str(info.value.errors[0])
    (folder.parent / "other").mkdir()
    (folder.parent / "other" / "pipeline.py").write_text("def run(): pass\n")
    with pytest.raises(ConfigException) as info:
        confined(folder / "sub" / "pipeline.py", folder, REL, "dlt.source")
    assert "sub/pipeline.py resolves outside the pipeline folder" in str(info.value.errors[0])
