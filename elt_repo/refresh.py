"""The one refresh both manifest writers call: the repo-polling sensor and scripts/refresh.py."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import git

from elt_repo.discovery.inspector_pool import shared_pool
from elt_repo.discovery.sandbox import Limits
from elt_repo.discovery.sling_streams import connection_configs
from elt_repo.discovery.walk import INSPECT_WORKERS, Discovery, discover
from elt_repo.git.example_repo import ensure_example_repo
from elt_repo.git.source import GitSource, GitSourceError, redact_url
from elt_repo.manifest import Manifest, ManifestStore
from elt_repo.redact import redact
from elt_repo.schemas import ConfigError
from elt_repo.settings import Settings
from elt_repo.tool_env import configure_process, pipeline_environ

log = logging.getLogger(__name__)
# With no new commit, a sensor tick resolves at most this many due folders (one wave of
# discovery's threads); the rest are resolved on the next ticks.
REDISCOVER_BATCH = 8
WRITE_MARGIN_SECONDS = 5.0


class StateError(Exception):
    """elt_repo could not write its own state (a full disk, a file size limit): one line that
    says what ran out and where. The previous manifest is kept, and no temp file is left."""


def _write(store: ManifestStore, manifest: Manifest) -> None:
    try:
        store.write(manifest)
    except OSError as exc:
        what = exc.strerror or type(exc).__name__
        raise StateError(
            f"cannot write the manifest in {store.path.parent}: {what}; the previous manifest is "
            "kept, and the next refresh writes it once there is room"
        ) from None


@dataclass(frozen=True)
class RefreshResult:
    """What a refresh did: the manifest now in force and whether it changed."""

    manifest: Manifest
    previous: Manifest | None
    changed: bool
    skipped: bool = False
    error: ConfigError | None = None
    reused: int = 0  # pipeline folders whose tree hash was unchanged, so not parsed again
    # folders resolved again with an unchanged tree: their tables come from their source
    resolved_again: tuple[str, ...] = ()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def display_url(settings: Settings) -> str:
    """The repo URL as shown to people: redacted, and named for the embedded example."""
    if settings.uses_example_repo:
        return f"example repo ({settings.example_repo_dir})"
    return redact_url(settings.repo_url)


def git_source(settings: Settings) -> GitSource:
    """The GitSource for the configured repo."""
    return GitSource(
        settings.effective_repo_url,
        settings.repo_branch,
        settings.repo_state_dir,
        token=settings.github_token,
        grace=settings.worktree_grace,
    )


def folder_trees(checkout: Path, pipelines_dir: str) -> dict[str, str]:
    """Every folder under `pipelines_dir` at the checkout's HEAD -> its Git tree hash."""
    out = git.Repo(checkout).git.ls_tree("-r", "-d", "-z", "HEAD", "--", pipelines_dir)
    trees = {}
    for entry in filter(None, out.split("\0")):
        meta, _, path = entry.partition("\t")
        trees[path] = meta.split()[2]
    return trees


def keep_last_good(
    discovery: Discovery, previous: Manifest | None
) -> tuple[Discovery, dict[str, str]]:
    """A pipeline that loaded before and is broken now keeps its last good spec and commit."""
    if previous is None or not discovery.errors:
        return discovery, {}
    found = {p.name for p in discovery.pipelines}
    broken_folders = {e.path.rsplit("/", 1)[0] for e in discovery.errors}
    kept, pinned = [], {}
    for old in previous.pipelines:
        if old.folder in broken_folders and old.name not in found:
            kept.append(old)
            pinned[old.name] = previous.commit_for(old) or ""
    if not kept:
        return discovery, {}
    return replace(discovery, pipelines=discovery.pipelines + tuple(kept)), pinned


def _new_manifest(settings: Settings, commit: str | None, **found: Any) -> Manifest:
    """A manifest of this repo and branch, discovered now."""
    return Manifest(
        commit=commit,
        branch=settings.repo_branch,
        url=display_url(settings),
        pipelines_dir=settings.pipelines_dir,
        discovered_at=_now(),
        **found,
    )


def _build_manifest(
    settings: Settings, commit: str, discovery: Discovery, pinned: dict[str, str]
) -> Manifest:
    """The manifest for a discovery of `commit`."""
    return _new_manifest(
        settings,
        commit,
        pipelines=discovery.pipelines,
        disabled=discovery.disabled,
        errors=discovery.errors,
        pinned=pinned,
        folders=dict(discovery.folders),
    )


def refresh(
    settings: Settings,
    *,
    known_commit: str | None = None,
    keep: Iterable[str] = (),
    deadline: float | None = None,
    force: bool = False,
) -> RefreshResult:
    """Fetch, discover and store a new manifest; skip cheaply when the remote is at `known_commit`.

    `keep`: commits that queued or running runs are pinned to; their worktrees stay.
    `deadline`: a time.monotonic() by which git must be done, retries included (a sensor tick).
    Only folders whose Git tree hash changed since the previous manifest are parsed again, and
    those whose errors came from the environment; `force` parses every folder again.
    """
    configure_process(settings)
    store = ManifestStore(settings.manifest_path)
    with store.lock():
        previous = store.read()
        due = (
            []
            if previous is None
            else previous.due_folders(settings.rediscover_interval, time.time())
        )
        timeout = settings.discovery_timeout
        try:
            if settings.uses_example_repo:
                ensure_example_repo(settings.example_repo_dir, settings.pipelines_dir)
            source = git_source(settings)
            source.set_deadline(deadline)
            # A manifest still carrying a failed fetch is refreshed even at the same commit.
            fetch_failed = previous is not None and any(
                e.path == display_url(settings) for e in previous.errors
            )
            unchanged = known_commit and previous and not fetch_failed
            if unchanged and source.remote_commit() == known_commit:
                assert previous is not None
                checkout = source.current()
                left = _seconds_left(deadline, settings.discovery_timeout)
                if not due or checkout is None or checkout.commit != previous.commit or left < 2:
                    return RefreshResult(previous, previous, changed=False, skipped=True)
                # No new commit, but pipelines whose tables come from their source are due: a
                # batch of them, the longest-unresolved first, in what is left of the tick.
                due, timeout = due[:REDISCOVER_BATCH], left
                env, pool = _discovery_pool(settings)
            else:
                env, pool = _discovery_pool(settings)
                if previous is None or any(p.tool == "dlt" for p in previous.pipelines):
                    # A new commit: its changed dlt pipelines will need a worker with dlt.
                    pool.warm()
                in_use = previous.commits_in_use() if previous else set()
                checkout = source.sync(keep={*in_use, *keep})
            trees = folder_trees(checkout.path, settings.pipelines_dir)
        except GitSourceError as exc:
            error = ConfigError(display_url(settings), exc.field, exc.message)
            log.error("refresh failed: %s", error)
            kept = previous or _new_manifest(settings, None)
            manifest = kept.with_errors((error, *(e for e in kept.errors if e.path != error.path)))
            _write(store, manifest)
            return RefreshResult(manifest, previous, changed=False, error=error)
        discovery = discover(
            checkout.path,
            settings.pipelines_dir,
            env,
            timeout,
            trees=trees,
            prior=previous.prior(again=due) if previous and not force else None,
            pool=pool,
            connections=shared_connections(settings),
            local_roots=settings.local_roots,
        )
        discovery, pinned = keep_last_good(discovery, previous)
        manifest = _build_manifest(settings, checkout.commit, discovery, pinned)
        _write(store, manifest)
        store.prune({p.name for p in (settings.repo_state_dir / "worktrees").iterdir()})
        changed = previous is None or previous.fingerprint() != manifest.fingerprint()
        log.info(
            "refreshed %s at %s: %d pipelines (%d folders unchanged), %d errors",
            manifest.url,
            manifest.commit,
            len(manifest.pipelines),
            discovery.reused,
            len(manifest.errors),
        )
        for error in manifest.errors:
            log.warning(
                "%s at %s: %s", error.pipeline or "repo", manifest.commit, redact(str(error))
            )
        return RefreshResult(
            manifest,
            previous,
            changed=changed,
            reused=discovery.reused,
            resolved_again=tuple(f for f in due if f in manifest.folders),
        )


def _discovery_pool(settings: Settings) -> tuple[dict[str, str], Any]:
    """The environment pipeline code is listed in (never elt_repo's own credentials), and the
    shared inspector pool for it; only for a refresh that discovers, not a skipped tick."""
    env = pipeline_environ(os.environ)
    limits = worker_limits(settings)
    pool = shared_pool(
        env, settings.discovery_timeout, INSPECT_WORKERS, settings.inspector_idle, limits
    )
    return env, pool


def worker_limits(settings: Settings) -> Limits:
    """What a discovery worker may use, and how it is sandboxed (ELT_DISCOVERY_*)."""
    return Limits(
        settings.discovery_memory_mb, settings.discovery_cpu_seconds, settings.discovery_sandbox
    )


def _seconds_left(deadline: float | None, timeout: float) -> float:
    """How long discovery may take: `timeout`, or less when a tick's deadline is nearer (less a
    margin for writing the manifest)."""
    if deadline is None:
        return timeout
    return min(timeout, deadline - time.monotonic() - WRITE_MARGIN_SECONDS)


def first_refresh(settings: Settings, timeout: float) -> Manifest:
    """The manifest for a first load with none cached: one refresh, bounded by `timeout`.

    Never raises. A refresh that fails or takes too long gives a manifest with no pipelines and
    the error, so the code location still loads and shows it; the repo sensor keeps trying.
    """
    outcome: list[RefreshResult | BaseException] = []

    def _run() -> None:
        try:
            outcome.append(refresh(settings, deadline=time.monotonic() + timeout))
        except BaseException as exc:  # reported below, never raised at load
            outcome.append(exc)

    worker = threading.Thread(target=_run, name="elt-first-refresh", daemon=True)
    worker.start()
    worker.join(timeout)
    if outcome and isinstance(outcome[0], RefreshResult):
        return outcome[0].manifest
    if outcome:
        message = f"first refresh failed: {type(outcome[0]).__name__}: {outcome[0]}"
        field = "ELT_REPO_URL"
    else:
        message = (
            f"first refresh did not finish within {timeout:g}s; the code location loaded "
            "without pipelines and the repo sensor keeps trying"
        )
        field = "ELT_FIRST_LOAD_TIMEOUT"
    log.error(message)
    return _new_manifest(
        settings, None, errors=(ConfigError(display_url(settings), field, redact(message)),)
    )


def validate_folder(folder: Path, pipelines_dir: str, settings: Settings) -> Discovery:
    """Discover a local folder without Git or the manifest: what `refresh.py --validate` runs.

    `folder` is a repo checkout that holds `pipelines_dir`, or the pipelines folder itself.
    """
    configure_process(settings)
    root = folder.resolve()
    if not (root / pipelines_dir).is_dir():
        root, pipelines_dir = root.parent, root.name
    env, timeout = pipeline_environ(os.environ), settings.discovery_timeout
    return discover(
        root,
        pipelines_dir,
        env,
        timeout,
        pool=shared_pool(env, timeout, INSPECT_WORKERS, limits=worker_limits(settings)),
        connections=shared_connections(settings),
        local_roots=settings.local_roots,
    )


def shared_connections(settings: Settings) -> dict[str, Any]:
    """The Sling connections every pipeline may name: the warehouse and the settings' ones."""
    return connection_configs({}, settings.connections, settings.warehouse)
