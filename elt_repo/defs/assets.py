"""What every asset of a pipeline shares (key, group, owners, tags, kinds, metadata, automation),
and the commit a run executes."""

from __future__ import annotations

import functools
import hashlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, AssetKey, AssetSpec, Failure

from elt_repo.defs import manifest_copies
from elt_repo.defs.automation import automation_condition
from elt_repo.defs.metadata import code_references, definition_metadata
from elt_repo.defs.partitions import backfill_policy, partitions_def
from elt_repo.defs.retries import retry_policy
from elt_repo.defs.run_metadata import RunFacts
from elt_repo.git.urls import GitSourceError
from elt_repo.manifest import Manifest, ManifestStore
from elt_repo.schemas import PipelineSpec
from elt_repo.settings import Settings

COMMIT_TAG = "elt_repo/commit"


@dataclass(frozen=True)
class Pinned:
    """What one run executes: the spec and folder of the commit the run is tagged with."""

    pipeline: PipelineSpec
    folder: Path
    commit: str | None  # the manifest commit the run is pinned to
    code_commit: str | None  # the commit whose worktree holds the code (older if kept last good)


def run_commit(context: AssetExecutionContext) -> str | None:
    """The run's `elt_repo/commit` tag, read fresh: a step may have added it since the run began."""
    run = context.instance.get_run_by_id(context.run.run_id)
    return run.tags.get(COMMIT_TAG) if run else None


@dataclass(frozen=True)
class BuildContext:
    """The manifest and settings that one build of the definitions works from."""

    manifest: Manifest
    settings: Settings
    # (pipeline name, entry file) -> the metadata and automation condition of its every asset
    shared_parts: dict[tuple[str, str], tuple[dict[str, Any], Any]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def commit(self, pipeline: PipelineSpec) -> str | None:
        return self.manifest.commit_for(pipeline)

    def folder(self, pipeline: PipelineSpec) -> Path:
        """The pipeline's folder inside the worktree of the commit its runs are pinned to."""
        return self.worktree_folder(self.commit(pipeline), pipeline)

    def worktree_folder(self, commit: str | None, pipeline: PipelineSpec) -> Path:
        """The pipeline's folder inside the worktree of `commit`."""
        return self.settings.repo_state_dir / "worktrees" / (commit or "none") / pipeline.folder

    def run_facts(
        self, pinned: Pinned, partition: Mapping[str, Any], started: datetime
    ) -> RunFacts:
        """What the metadata of a run that started at `started` and ends now says of it."""
        return RunFacts(
            pinned.pipeline, pinned.commit, self.manifest.url, partition, started, datetime.now(UTC)
        )

    def pinned(self, context: AssetExecutionContext, pipeline: PipelineSpec) -> Pinned:
        """The spec and code a run uses: those of the commit in its `elt_repo/commit` tag.

        A run launched by elt_repo's sensors or schedules is tagged when it is submitted; any
        other run is tagged by its first step with the commit these definitions were built
        from. Either way every step of the run then reads the same commit, even when newer
        commits have arrived and the code location has been reloaded since.

        The spec comes from the manifest of that commit: the one loaded, the copy kept in the
        state dir, or the copy kept in the Dagster instance (a run in a new container). The
        code comes from that commit's worktree, fetched by itself when this state dir has none.
        Nothing else ever stands in: a commit whose manifest or code cannot be had fails the
        step, naming the commit, and is not retried.
        """
        commit = run_commit(context)
        if not commit and self.manifest.commit:
            commit = self.manifest.commit
            context.instance.add_run_tags(context.run.run_id, {COMMIT_TAG: commit})
        manifest = self.manifest if commit == self.manifest.commit else None
        if manifest is None and commit:
            manifest = ManifestStore(self.settings.manifest_path).read_at(commit)
            if manifest is None:
                manifest = manifest_copies.read(
                    context.instance, manifest_copies.location_name(), commit
                )
        if manifest is None:
            raise _not_retried(
                f"{pipeline.name}: no manifest of commit {commit} is kept, in "
                f"{self.settings.state_dir} or in the Dagster instance; a run pinned to it "
                "cannot run (launch a new one)"
            )
        spec = next((p for p in manifest.pipelines if p.name == pipeline.name), None)
        if spec is None:
            raise _not_retried(f"{pipeline.name} is not a pipeline of commit {commit}")
        code_commit = manifest.commit_for(spec)
        folder = self.worktree_folder(code_commit, spec)
        if code_commit and not folder.is_dir():  # a new container: fetch just that commit
            folder = self._fetch(context, code_commit) / spec.folder
        context.log.info(
            f"{spec.name}: commit {commit}, code from {code_commit}"
            + (f", partition {context.partition_key}" if context.has_partition_key else "")
        )
        return Pinned(spec, folder, commit, code_commit)

    def _fetch(self, context: AssetExecutionContext, commit: str) -> Path:
        """The worktree of `commit`, fetched by itself (a run in a new container)."""
        from elt_repo.refresh import git_source

        started = time.monotonic()
        try:
            path = git_source(self.settings).commit_worktree(commit)
        except GitSourceError as exc:
            if exc.field == "elt_repo/commit":  # the remote does not have it: no retry helps
                raise _not_retried(str(exc)) from None
            raise Failure(description=str(exc)) from None
        context.log.info(f"fetched commit {commit} in {time.monotonic() - started:.2f}s")
        return path


def _not_retried(message: str) -> Failure:
    return Failure(description=message, allow_retries=False)


def asset_key(pipeline: PipelineSpec, table: str) -> AssetKey:
    """Assets are keyed [pipeline_name, table]."""
    return AssetKey([pipeline.name, table])


def duckdb_pool(path: Path) -> str:
    """One concurrency pool per DuckDB file: DuckDB allows a single writer process."""
    return _duckdb_pool(str(path))


@functools.cache
def _duckdb_pool(path: str) -> str:  # resolve() costs syscalls, and every pipeline asks
    resolved = str(Path(path).resolve())
    stem = re.sub(r"[^A-Za-z0-9_]", "_", Path(path).stem)
    return f"duckdb_{stem}_{hashlib.sha1(resolved.encode()).hexdigest()[:8]}"


def pipeline_asset_spec(
    ctx: BuildContext,
    pipeline: PipelineSpec,
    key: AssetKey,
    *,
    destination_kind: str,
    entry_file: str,
    extra_metadata: dict[str, Any] | None = None,
) -> AssetSpec:
    """The AssetSpec for one asset (usually one table) of a pipeline."""
    shared = ctx.shared_parts.get((pipeline.name, entry_file))
    if shared is None:  # what every asset of the pipeline has in common, computed once
        commit = ctx.commit(pipeline)
        metadata = definition_metadata(pipeline, commit)
        metadata["elt/repo"] = ctx.manifest.url  # shown without credentials
        metadata["dagster/code_references"] = code_references(
            pipeline, str(ctx.folder(pipeline)), entry_file, ctx.manifest.url, commit
        )
        shared = ctx.shared_parts[(pipeline.name, entry_file)] = (
            metadata,
            automation_condition(pipeline),
        )
    metadata, condition = shared
    table = key.path[-1]
    description = pipeline.description or f"{pipeline.tool} pipeline {pipeline.name}: {table}"
    return AssetSpec(
        key=key,
        description=description,
        group_name=pipeline.group_name,
        owners=list(pipeline.owners),
        tags=dict(pipeline.tags),
        kinds={pipeline.tool, destination_kind, *pipeline.kinds},
        code_version=pipeline.code_version,
        automation_condition=condition,
        metadata={**metadata, **(extra_metadata or {})},
    )


def multi_asset_args(pipeline: PipelineSpec, specs: list[AssetSpec], pool: str) -> dict[str, Any]:
    """The multi_asset arguments every pipeline shares, whatever its tool."""
    return {
        "name": f"{pipeline.name}__{pipeline.tool}",
        "specs": specs,
        "can_subset": True,
        "partitions_def": partitions_def(pipeline),
        "backfill_policy": backfill_policy(pipeline),
        "retry_policy": retry_policy(pipeline.retry),
        "pool": pool,
        "op_tags": {"elt/pipeline": pipeline.name},
    }
