"""Where pipeline code imports from: its folder, shared code in its repo, and nothing outside.

A dlt pipeline imports its own helpers (`from helpers import TABLE`) and shared code kept in the
same repo: a `pipelines/common/` package (`from common import fetch`), or the repo as a
package (`from pipelines.common import fetch`). Its folder goes first on `sys.path`; the folders
above it, up to the repo's root, go last, so that shared code never hides an installed library.

Every module found under the repo must resolve, symlinks followed, inside the repo: a helper
symlinked to a file elsewhere on the host is an ImportError naming it, and is never run.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

_roots: set[tuple[str, str]] = set()  # repo roots (as given, resolved): modules stay inside
_lock = threading.Lock()


class OutsideRepoImport(ImportError):
    """A module under the repo that resolves outside it: the repo's fault, not the host's."""


def repo_root(folder: Path) -> Path:
    """The checkout that holds `folder`: the nearest folder above it with a `.git` (a worktree
    has a `.git` file), or `folder` itself when none has."""
    folder = folder.absolute()
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return folder


def search_path(folder: Path, root: Path) -> tuple[list[str], list[str]]:
    """What goes first on `sys.path` (the folder) and last (the folders above it, to `root`)."""
    folder, root = folder.absolute(), root.absolute()
    above = [str(p) for p in folder.parents if p == root or root in p.parents]
    return [str(folder)], above


def add_to_path(folder: Path, root: Path) -> None:
    """Put `folder` first and its repo's folders last on `sys.path`, and confine what is
    found there to `root`."""
    first, last = search_path(folder, root)
    for entry in reversed(first):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    for entry in last:
        if entry not in sys.path:
            sys.path.append(entry)
    confine(root)


def confine(root: Path) -> None:
    """From now on, a module found under `root` must resolve inside it."""
    with _lock:
        _roots.add((str(root.absolute()), os.path.realpath(root)))
        if not any(isinstance(f, _ConfinedFinder) for f in sys.meta_path):
            at = next(
                (i for i, f in enumerate(sys.meta_path) if f is importlib.machinery.PathFinder),
                len(sys.meta_path),
            )
            sys.meta_path.insert(at, _ConfinedFinder())


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


class _ConfinedFinder:
    """Python's own PathFinder, which also refuses a module found under a confined repo whose
    file resolves outside it (a symlink to elsewhere on the host)."""

    @staticmethod
    def find_spec(name: str, path: Sequence[str] | None = None, target: Any = None) -> Any:
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None:
            return spec
        places = [spec.origin] if spec.has_location and spec.origin else []
        places += list(spec.submodule_search_locations or [])
        for place in places:
            absolute = os.path.abspath(place)
            for given, real in tuple(_roots):
                under = _inside(absolute, given) or _inside(absolute, real)
                if under and not _inside(os.path.realpath(absolute), real):
                    shown = os.path.relpath(absolute, given if _inside(absolute, given) else real)
                    raise OutsideRepoImport(
                        f"{shown} resolves outside the pipelines repo; pipeline code may import "
                        "only what is inside the repo or installed",
                        name=name,
                    )
        return spec

    @staticmethod
    def invalidate_caches() -> None:
        importlib.machinery.PathFinder.invalidate_caches()


def shared_code_key(trees: Mapping[str, str], pipelines_dir: str, folders: Sequence[str]) -> str:
    """One hash of the repo's shared code: every folder under `pipelines_dir` that is neither a
    pipeline folder, nor inside one, nor above one (`pipelines/common/`), from `trees` (folder
    -> Git tree hash). A dlt pipeline that imports it is listed again when it changes.
    """
    pipelines = set(folders)
    above = {str(PurePosixPath(f).parents[i]) for f in folders for i in range(f.count("/"))}
    shared = sorted(
        f"{rel}={tree}"
        for rel, tree in trees.items()
        if rel != pipelines_dir
        and rel not in pipelines
        and rel not in above
        and not any(rel.startswith(p + "/") for p in pipelines)
    )
    return hashlib.sha1("\n".join(shared).encode()).hexdigest()[:12]
