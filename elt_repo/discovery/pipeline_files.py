"""Pure helpers over a pipeline folder: content hashes, relative paths, Sling placeholders."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from elt_repo.settings import interpolate_tree

_SKIP_DIRS = {"__pycache__", ".git", ".dlt", ".pytest_cache"}
# Only these three are ours; Sling's own `{stream_table}` etc. must pass through untouched.
_PARTITION_VARS = re.compile(r"\{(partition_key|partition_start|partition_end)\}")
_LOCAL_FILE = re.compile(r"^file://(\.{1,2}/)")


def content_hash(folder: Path) -> str:
    """A stable hash of every file under a pipeline folder (names and bytes)."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(folder):  # symlinked folders are not entered
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        links = [d for d in dirnames if (Path(dirpath) / d).is_symlink()]
        for filename in sorted([*filenames, *links]):
            if filename.endswith(".pyc"):
                continue
            path = Path(dirpath) / filename
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
            # A symlink by its target, never followed (it may be dangling, or /dev/zero); a
            # special file by its kind; a regular file in chunks (it may be a 100 MB blob).
            if path.is_symlink():
                digest.update(b"symlink:" + os.fsencode(os.readlink(path)))
            elif not path.is_file():
                digest.update(b"special")
            else:
                with open(path, "rb") as f:
                    for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                        digest.update(chunk)
            digest.update(b"\0")
    return digest.hexdigest()[:16]


def resolve_local(value: Any, folder: Path) -> Any:
    """Resolve `./x` and `../x` strings against the pipeline folder; other values pass through."""
    if isinstance(value, str) and value.startswith(("./", "../")):
        return str((folder / value).resolve())
    return value


def resolve_args(
    args: Mapping[str, Any], folder: Path, environ: Mapping[str, str]
) -> dict[str, Any]:
    """dlt source kwargs for a run: `${VAR}` filled in, relative paths resolved."""
    filled = interpolate_tree(dict(args), environ, "dlt.args: ")
    return {k: resolve_local(v, folder) for k, v in filled.items()}


def resolve_stream_name(name: str, folder: Path) -> str:
    """`file://./data/x.csv` becomes an absolute file:// URL inside the folder."""
    match = _LOCAL_FILE.match(name)
    if not match:
        return name
    return "file://" + str((folder / name[len("file://") :]).resolve())


def fill_partition_vars(value: Any, variables: Mapping[str, str]) -> Any:
    """Fill `{partition_key}`, `{partition_start}` and `{partition_end}` anywhere in a config."""
    if isinstance(value, str):
        return _PARTITION_VARS.sub(lambda m: variables.get(m.group(1), m.group(0)), value)
    if isinstance(value, Mapping):
        return {
            fill_partition_vars(k, variables): fill_partition_vars(v, variables)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [fill_partition_vars(v, variables) for v in value]
    return value
