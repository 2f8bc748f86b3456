"""Definition metadata: custom entries from config, pipeline facts, and code references."""

from __future__ import annotations

import json
import warnings
from typing import Any

from dagster import (
    BetaWarning,
    CodeReferencesMetadataValue,
    LocalFileCodeReference,
    MetadataValue,
    UrlCodeReference,
)

from elt_repo.schemas import MetadataEntrySpec, PipelineSpec


def custom_value(entry: MetadataEntrySpec) -> Any:
    """A config `metadata` entry rendered with its declared type."""
    value = entry.value
    if entry.type == "url":
        return MetadataValue.url(str(value))
    if entry.type == "path":
        return MetadataValue.path(str(value))
    if entry.type == "md":
        return MetadataValue.md(str(value))
    if entry.type == "json":
        return MetadataValue.json(json.loads(value) if isinstance(value, str) else value)
    if entry.type == "int":
        return MetadataValue.int(int(value))
    if entry.type == "float":
        return MetadataValue.float(float(value))
    return MetadataValue.text(str(value))


def web_url(repo_url: str, commit: str | None, path: str) -> str | None:
    """A browsable link to a file at a commit, for GitHub and GitLab https remotes."""
    if not commit or not repo_url.startswith("https://"):
        return None
    base = repo_url.removesuffix(".git").rstrip("/")
    if "github.com" in base:
        return f"{base}/blob/{commit}/{path}"
    if "gitlab" in base:
        return f"{base}/-/blob/{commit}/{path}"
    return None


def code_references(
    pipeline: PipelineSpec, folder_path: str, entry_file: str, repo_url: str, commit: str | None
) -> CodeReferencesMetadataValue:
    """Where the pipeline's code lives: the local worktree file, and the remote at the commit."""
    with warnings.catch_warnings():
        # Code references are beta in 1.13; they are what the UI's "open source" link reads.
        warnings.simplefilter("ignore", BetaWarning)
        return _code_references(pipeline, folder_path, entry_file, repo_url, commit)


def _code_references(
    pipeline: PipelineSpec, folder_path: str, entry_file: str, repo_url: str, commit: str | None
) -> CodeReferencesMetadataValue:
    refs: list[LocalFileCodeReference | UrlCodeReference] = [
        LocalFileCodeReference(file_path=f"{folder_path}/{entry_file}", label=entry_file)
    ]
    url = web_url(repo_url, commit, f"{pipeline.folder}/{entry_file}")
    if url:
        refs.append(
            UrlCodeReference(
                url=url, label=f"{entry_file} @ {commit[:8]}" if commit else entry_file
            )
        )
    return CodeReferencesMetadataValue(code_references=refs)


def definition_metadata(pipeline: PipelineSpec, commit: str | None) -> dict[str, Any]:
    """Metadata every asset of a pipeline carries in its definition."""
    meta: dict[str, Any] = {
        "elt/pipeline": pipeline.name,
        "elt/tool": pipeline.tool,
        "elt/folder": MetadataValue.path(pipeline.folder),
        "elt/commit": commit or "",
    }
    if pipeline.partitions is not None:
        meta["elt/partitions"] = pipeline.partitions.type
    if pipeline.schedule is not None:
        sched = pipeline.schedule
        meta["elt/schedule"] = f"{sched.cron_schedule} ({sched.timezone}), {sched.mode}"
    for entry in pipeline.metadata:
        meta[entry.key] = custom_value(entry)
    return meta
