"""The manifest of discovered pipelines, and its atomic, locked store."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from elt_repo.discovery import DisabledPipeline
from elt_repo.schemas import ConfigError, PipelineSpec, spec_from_dict, spec_to_dict

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


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

    def commit_for(self, pipeline: PipelineSpec) -> str | None:
        """The commit whose worktree a pipeline's runs use."""
        return self.pinned.get(pipeline.name, self.commit)

    def commits_in_use(self) -> set[str]:
        return {c for c in [self.commit, *self.pinned.values()] if c}

    def fingerprint(self) -> str:
        """A hash of everything but the discovery time: equal fingerprints build equal definitions."""
        data = self.to_dict()
        data.pop("discovered_at")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def with_errors(self, errors: tuple[ConfigError, ...]) -> Manifest:
        return replace(self, errors=errors)

    def to_dict(self) -> dict[str, Any]:
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
            pipelines=tuple(spec_from_dict(PipelineSpec, p) for p in data["pipelines"]),
            disabled=tuple(DisabledPipeline(**d) for d in data["disabled"]),
            errors=tuple(ConfigError(**e) for e in data["errors"]),
            pinned=dict(data.get("pinned", {})),
        )


class ManifestStore:
    """manifest.json written atomically under a file lock; the previous good one is kept."""

    def __init__(self, path: Path):
        self.path = path
        self.previous_path = path.with_name(path.stem + ".previous.json")
        self.lock_path = path.with_name(path.name + ".lock")

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
            return Manifest.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable manifest %s: %s", path, exc)
            return None

    def read(self) -> Manifest | None:
        """The current manifest, or the previous good one if the current cannot be read."""
        return self._read(self.path) or self._read(self.previous_path)

    def write(self, manifest: Manifest) -> None:
        """Write atomically (temp file + rename); call inside `lock()`."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._read(self.path) is not None:
            shutil.copyfile(self.path, self.previous_path)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".manifest.", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(manifest.to_dict(), indent=2, sort_keys=True))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
