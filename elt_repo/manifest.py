"""The manifest of discovered pipelines, and its atomic, locked store."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from elt_repo.discovery.walk import DisabledPipeline, FolderRecord, Prior
from elt_repo.schemas import ConfigError, PipelineSpec, spec_from_manifest, spec_to_dict

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
# Bump when discovery would find something different in an unchanged folder: a manifest written
# by another version is never reused folder by folder.
DISCOVERY_VERSION = 4  # 3: Sling streams resolved by Sling's rules; 4: source-driven folders


@dataclass(frozen=True)
class Manifest:
    """Everything build_definitions needs, with no secret in it."""

    commit: str | None
    branch: str
    url: str  # redacted
    pipelines_dir: str
    discovered_at: str
    pipelines: tuple[PipelineSpec, ...] = ()
    disabled: tuple[DisabledPipeline, ...] = ()
    errors: tuple[ConfigError, ...] = ()
    # pipeline name -> commit its spec was built from, when older than `commit` (kept last good)
    pinned: dict[str, str] = field(default_factory=dict)
    # Every pipeline folder's tree hash and load errors: what incremental discovery reuses.
    folders: dict[str, FolderRecord] = field(default_factory=dict)
    discovery_version: int = DISCOVERY_VERSION

    def prior(self, again: Iterable[str] = ()) -> Prior:
        """Per folder, what discovery may reuse while its tree hash is unchanged; the folders in
        `again` (due for rediscovery) are resolved again."""
        if self.discovery_version != DISCOVERY_VERSION:
            return {}
        specs = {p.folder: p for p in self.pipelines if p.name not in self.pinned}
        skip = set(again)
        prior: dict[str, tuple[FolderRecord, PipelineSpec | tuple[ConfigError, ...]]] = {}
        for folder, record in self.folders.items():
            if folder in skip or any(e.retry for e in record.errors):
                continue  # due, or the environment failed: discover the folder again
            if record.errors:
                prior[folder] = (record, record.errors)
            elif folder in specs:
                prior[folder] = (record, specs[folder])
        return prior

    def due_folders(self, interval: float, now: float) -> list[str]:
        """Folders to resolve again with no new commit, the longest-unresolved first: those
        whose tables come from their source, `interval` seconds after they were last resolved,
        and those whose last discovery failed because of the environment."""
        due = [
            (record.resolved_at, folder)
            for folder, record in self.folders.items()
            if (record.source_driven and now - record.resolved_at >= interval)
            or any(e.retry for e in record.errors)
        ]
        return [folder for _, folder in sorted(due)]

    def commit_for(self, pipeline: PipelineSpec) -> str | None:
        """The commit whose worktree a pipeline's runs use."""
        return self.pinned.get(pipeline.name, self.commit)

    def commits_in_use(self) -> set[str]:
        return {c for c in [self.commit, *self.pinned.values()] if c}

    def fingerprint(self) -> str:
        """A hash of everything but the discovery time: equal fingerprints build equal definitions."""
        return self._fingerprint

    @functools.cached_property
    def _fingerprint(self) -> str:
        data = self.to_dict()
        data.pop("discovered_at")
        for record in data["folders"].values():  # resolving again and finding the same: no change
            record.pop("resolved_at")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def with_errors(self, errors: tuple[ConfigError, ...]) -> Manifest:
        return replace(self, errors=errors)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (a fresh top level over cached contents: do not mutate below it)."""
        return dict(self._dict)

    @functools.cached_property
    def _dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "commit": self.commit,
            "branch": self.branch,
            "url": self.url,
            "pipelines_dir": self.pipelines_dir,
            "discovered_at": self.discovered_at,
            "pipelines": [spec_to_dict(p) for p in self.pipelines],
            "disabled": [{"name": d.name, "path": d.path} for d in self.disabled],
            "errors": [e.to_dict() for e in self.errors],
            "pinned": dict(self.pinned),
            "folders": {
                folder: {
                    "tree": r.tree,
                    "errors": [e.to_dict() for e in r.errors],
                    "source_driven": r.source_driven,
                    "resolved_at": r.resolved_at,
                }
                for folder, r in self.folders.items()
            },
            "discovery_version": self.discovery_version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported manifest format {data.get('format')!r}")
        return cls(
            commit=data["commit"],
            branch=data["branch"],
            url=data["url"],
            pipelines_dir=data["pipelines_dir"],
            discovered_at=data["discovered_at"],
            pipelines=tuple(spec_from_manifest(p) for p in data["pipelines"]),
            disabled=tuple(DisabledPipeline(**d) for d in data["disabled"]),
            errors=tuple(ConfigError(**e) for e in data["errors"]),
            pinned=dict(data.get("pinned", {})),
            folders={
                folder: FolderRecord(
                    r["tree"],
                    tuple(ConfigError(**e) for e in r["errors"]),
                    bool(r.get("source_driven", False)),
                    float(r.get("resolved_at", 0.0)),
                )
                for folder, r in data.get("folders", {}).items()
            },
            discovery_version=data.get("discovery_version", 0),
        )


# path -> (identity of the file read, the manifest read from it); see ManifestStore._read.
_read_cache: dict[Path, tuple[tuple[int, ...], Manifest]] = {}


class ManifestStore:
    """manifest.json written atomically under a file lock; the previous good one is kept."""

    def __init__(self, path: Path):
        self.path = path
        self.previous_path = path.with_name(path.stem + ".previous.json")
        self.lock_path = path.with_name(path.name + ".lock")
        # One copy per commit, so a run pinned to a commit finds the specs it was launched with.
        self.by_commit_dir = path.with_name("manifests")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive lock shared by every writer (sensor ticks, refresh.py)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read(self, path: Path) -> Manifest | None:
        try:
            with open(path, "rb") as handle:
                # Files are only ever replaced by a rename, so an unchanged inode, size and
                # mtime means an unchanged manifest: a no-change sensor tick parses nothing.
                key = _identity(os.fstat(handle.fileno()))
                cached = _read_cache.get(path)
                if cached is not None and cached[0] == key:
                    return cached[1]
                manifest = Manifest.from_dict(json.loads(handle.read()))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable manifest %s: %s", path, exc)
            return None
        _remember(path, key, manifest)
        return manifest

    def read(self) -> Manifest | None:
        """The current manifest, or the previous good one if the current cannot be read."""
        return self._read(self.path) or self._read(self.previous_path)

    def read_at(self, commit: str) -> Manifest | None:
        """The manifest that was current at `commit`, if it is still kept."""
        return self._read(self.by_commit_dir / f"{commit}.json")

    def write(self, manifest: Manifest) -> None:
        """Write atomically (temp file + rename); call inside `lock()`.

        A write that fails (a full disk, a crash) leaves the current manifest as it was.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Temp files of a writer killed mid-write: under lock(), no other writer owns them.
        for folder in (self.path.parent, self.by_commit_dir):
            _remove_temp_files(folder)
        text = json.dumps(manifest.to_dict(), indent=2, sort_keys=True)
        if manifest.commit:
            self.by_commit_dir.mkdir(exist_ok=True)
            _write_atomic(self.by_commit_dir / f"{manifest.commit}.json", text)
        current = _readable_json(self.path)
        if current is not None:  # keep the one being replaced as the previous good manifest
            _write_atomic(self.previous_path, current)
        _write_atomic(self.path, text)
        # Under lock(), so no other writer can have replaced it since: the next read is free.
        _remember(self.path, _identity(self.path.stat()), manifest)

    def prune(self, keep: set[str]) -> None:
        """Drop the per-commit copies of commits no longer kept (their worktrees are gone)."""
        if not self.by_commit_dir.is_dir():
            return
        for path in self.by_commit_dir.glob("*.json"):
            if path.stem not in keep:
                path.unlink(missing_ok=True)


def _identity(stat: os.stat_result) -> tuple[int, ...]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _remember(path: Path, key: tuple[int, ...], manifest: Manifest) -> None:
    _read_cache.pop(path, None)
    _read_cache[path] = (key, manifest)
    while len(_read_cache) > 8:  # per-commit copies read by runs: keep only the latest few
        _read_cache.pop(next(iter(_read_cache)))


def _readable_json(path: Path) -> str | None:
    """The file's text if it is a manifest of this format (a cheap check: JSON only)."""
    try:
        text = path.read_text()
        return text if json.loads(text).get("format") == FORMAT_VERSION else None
    except (OSError, ValueError, AttributeError):
        return None


def _remove_temp_files(folder: Path) -> None:
    """Remove the temp files _write_atomic() leaves when its process is killed (kill -9)."""
    if folder.is_dir():
        for tmp in folder.glob(".*.json.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _write_atomic(path: Path, text: str) -> None:
    """Write to a temp file beside `path`, fsync, rename over it; clean up on any failure."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
