"""Which folders are pipelines, and of which tool: our layout and the reference project's.

A folder is a pipeline when it has a `dagster.yaml`, a `replication.yaml`, or a `pipeline.py`
that defines `run` (found by parsing, never by importing). Folders at any depth count; a
pipeline's own subfolders are its data.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from elt_repo.schemas import config_error

CONFIG_FILE = "dagster.yaml"
REPLICATION_FILE = "replication.yaml"
RUN_FILE = "pipeline.py"
_SKIP = {"__pycache__", "node_modules"}
MAX_PYTHON_BYTES = 5 * 1024 * 1024


def defines_run(path: Path) -> bool:
    """Whether a Python file binds the name `run` at module level (def, assignment or import).

    Only a regular file inside its folder, of at most MAX_PYTHON_BYTES, is read: a symlink to
    /dev/zero or outside the repo is no pipeline."""
    try:
        resolved = path.resolve(strict=True)
        if path.parent.resolve() not in resolved.parents or not resolved.is_file():
            return False
        if resolved.stat().st_size > MAX_PYTHON_BYTES:
            return False
        tree = ast.parse(resolved.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError, RuntimeError, RecursionError, MemoryError):
        return False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "run":
            return True
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "run" for t in targets):
                return True
        if isinstance(node, ast.Import | ast.ImportFrom) and any(
            (a.asname or a.name) == "run" for a in node.names
        ):
            return True
    return False


def is_pipeline_folder(folder: Path, filenames: list[str]) -> bool:
    """A dagster.yaml, a replication.yaml, or a pipeline.py with a run function."""
    if CONFIG_FILE in filenames or REPLICATION_FILE in filenames:
        return True
    return RUN_FILE in filenames and defines_run(folder / RUN_FILE)


def find_pipeline_folders(base: Path) -> Iterator[Path]:
    """Every pipeline folder at any depth under `base`."""
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP)
        if is_pipeline_folder(Path(dirpath), filenames):
            dirnames[:] = []
            yield Path(dirpath)


def default_name(folder: Path) -> str:
    """The folder name made a valid Dagster name."""
    # ASCII only: Dagster refuses any other letter in a name.
    name = "".join(c if (c.isascii() and c.isalnum()) or c == "_" else "_" for c in folder.name)
    return name if not name[:1].isdigit() else f"_{name}"


def _tool_from_files(config: Mapping[str, Any], folder: Path) -> str | None:
    for tool in ("dlt", "sling"):
        if config.get(tool) is not None:
            return tool
    if (folder / REPLICATION_FILE).is_file():
        return "sling"
    if (folder / RUN_FILE).is_file() and defines_run(folder / RUN_FILE):
        return "dlt"
    return None


def infer_tool(config: Mapping[str, Any], folder: Path, config_path: str) -> str:
    """`tool:` if set; else from the files, which a parent folder named dlt or sling must agree with."""
    if config.get("tool"):
        return config["tool"]
    found = _tool_from_files(config, folder)
    parent = folder.parent.name if folder.parent.name in ("dlt", "sling") else None
    if found and parent and found != parent:
        raise config_error(
            config_path, "tool", f"the files say {found} but the folder is under {parent}/"
        )
    if found or parent:
        return found or parent  # type: ignore[return-value]
    raise config_error(config_path, "tool", "cannot infer the tool: set tool: dlt or tool: sling")
