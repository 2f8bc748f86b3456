"""What every asset of a pipeline shares: key, group, owners, tags, kinds, metadata, automation."""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import traceback
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    Failure,
    MaterializeResult,
    MetadataValue,
)

from elt_repo.defs.automation import automation_condition
from elt_repo.defs.metadata import code_references, definition_metadata
from elt_repo.defs.partitions import backfill_policy, partitions_def
from elt_repo.defs.retries import retry_policy
from elt_repo.defs.run_metadata import RunFacts
from elt_repo.manifest import Manifest, ManifestStore
from elt_repo.redact import redact
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
        """
        commit = run_commit(context)
        if not commit and self.manifest.commit:
            commit = self.manifest.commit
            context.instance.add_run_tags(context.run.run_id, {COMMIT_TAG: commit})
        manifest = self.manifest
        if commit and commit != self.manifest.commit:
            manifest = ManifestStore(self.settings.manifest_path).read_at(commit) or manifest
        spec = next((p for p in manifest.pipelines if p.name == pipeline.name), None)
        if spec is None or manifest.commit != commit:
            context.log.warning(
                f"{pipeline.name}: no manifest of commit {commit} is kept; running the specs "
                f"of {self.manifest.commit}"
            )
            manifest, spec = self.manifest, pipeline
        code_commit = manifest.commit_for(spec)
        folder = self.worktree_folder(code_commit, spec)
        context.log.info(
            f"{spec.name}: commit {commit}, code from {code_commit}"
            + (f", partition {context.partition_key}" if context.has_partition_key else "")
        )
        return Pinned(spec, folder, commit, code_commit)


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


# Loggers of the tools whose last lines a failure carries (Sling's own output comes in its error).
TOOL_LOGGERS = ("dlt", "dagster_sling", "sling")
LOG_TAIL_LINES = 50
TRACEBACK_CHARS = 8000


class LogTail(logging.Handler):
    """Keeps the last lines the tools logged while a step ran."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: deque[str] = deque(maxlen=LOG_TAIL_LINES)

    def emit(self, record: logging.LogRecord) -> None:
        # A log line that cannot be formatted is not worth failing over.
        with suppress(Exception):
            self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")

    @contextmanager
    def attached(self) -> Iterator[LogTail]:
        loggers = [logging.getLogger(name) for name in TOOL_LOGGERS]
        for logger in loggers:
            logger.addHandler(self)
        try:
            yield self
        finally:
            for logger in loggers:
                logger.removeHandler(self)


def step_failure(
    context: AssetExecutionContext,
    pipeline: PipelineSpec,
    exc: Exception,
    log_lines: Iterable[str] = (),
) -> Failure:
    """A Failure that says which pipeline, partition and attempt failed, how, and the tool's
    last log lines; everything redacted."""
    attempt = context.retry_number + 1
    attempts = (pipeline.retry.max_retries if pipeline.retry else 0) + 1
    message = redact(str(exc.description if isinstance(exc, Failure) else exc).strip() or repr(exc))
    partition = ""
    if context.has_partition_key_range:
        keys = context.partition_key_range
        partition = keys.start if keys.start == keys.end else f"{keys.start}...{keys.end}"
    where = f" partition {partition}" if partition else ""
    tail = [*log_lines, *message.splitlines()][-LOG_TAIL_LINES:]
    metadata: dict[str, Any] = dict(exc.metadata) if isinstance(exc, Failure) else {}
    metadata.update(
        {
            "elt/pipeline": pipeline.name,
            "elt/error_type": type(exc).__name__,
            "elt/error": MetadataValue.text(message[:4000]),
            "elt/attempt": attempt,
            "elt/max_attempts": attempts,
            "elt/partition": partition,
            "elt/log_tail": MetadataValue.md("```\n" + redact("\n".join(tail)) + "\n```"),
            "elt/traceback": MetadataValue.text(
                redact("".join(traceback.format_exception(exc)))[-TRACEBACK_CHARS:]
            ),
        }
    )
    tables = sorted({j["table"] for j in getattr(metadata.get("failed_jobs"), "value", None) or []})
    if tables:
        metadata["elt/failed_tables"] = ", ".join(tables)
    return Failure(
        description=f"{pipeline.name}{where} failed on attempt {attempt} of {attempts}: "
        f"{type(exc).__name__}: {_summary(message) or type(exc).__name__}",
        metadata=metadata,
        allow_retries=exc.allow_retries if isinstance(exc, Failure) else True,
    )


def _summary(message: str) -> str:
    """A message's first line, and its last when there are more: tools often wrap the cause,
    as dlt's "... failed at `step=sync` with exception:" does, and the cause comes last."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if len(lines) > 1:
        return f"{lines[0][:300]} … {lines[-1][:300]}"
    return lines[0][:500] if lines else ""


def with_failure_details(
    context: AssetExecutionContext, pipeline: PipelineSpec, body: Iterator[MaterializeResult]
) -> Iterator[MaterializeResult]:
    """Run an asset body; any exception becomes a retryable Failure with the details."""
    with LogTail().attached() as tail:
        try:
            yield from body
        except Exception as exc:
            failure = step_failure(context, pipeline, exc, list(tail.lines))
            context.log.error(f"{failure.description} (commit {run_commit(context) or '?'})")
            # `from None`: the original exception, with its unredacted message, would be
            # stored in the event log; its redacted traceback goes into the metadata instead.
            raise failure from None
