"""Pipeline health in the UI: broken pipelines stay visible, and the manifest is an asset.

- A pipeline whose config is invalid appears as a non-executable asset `[name]` in its own
  group (or `elt_config_errors` when even that is unknown), with the errors in its description.
- Every broken pipeline gets a failing asset check `valid_config` that names the file, the
  field and the message. It sits on the placeholder, or on the first asset of a pipeline whose
  last good version keeps running. The repo sensor records its evaluation on each refresh, so
  the check shows failed without anyone running it; running it evaluates it again.
- Errors that belong to no pipeline (the repo cannot be fetched, a duplicate name) are
  placeholders `elt_config_errors/<slug>`.
- `elt_repo/manifest` is observed on each refresh: commit, pipelines per tool, disabled ones,
  and a Markdown table of the errors.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    AssetObservation,
    AssetSpec,
    MetadataValue,
    asset_check,
)

from elt_repo.manifest import Manifest
from elt_repo.schemas import ConfigError, PipelineSpec

ERROR_GROUP = "elt_config_errors"
CHECK_NAME = "valid_config"
MANIFEST_KEY = AssetKey(["elt_repo", "manifest"])


@dataclass(frozen=True)
class Broken:
    """The errors of one broken pipeline (or repo-level problem) and where the UI shows them."""

    key: AssetKey  # the asset the check sits on
    label: str  # pipeline name, or the slug of a repo-level problem
    errors: tuple[ConfigError, ...]
    placeholder: bool  # whether `key` is a placeholder asset (no real asset to sit on)
    group: str = ERROR_GROUP


def _slug(path: str) -> str:
    parts = [p for p in path.split("/") if p and not p.endswith((".yaml", ".yml", ".py"))]
    slug = re.sub(r"[^A-Za-z0-9_]", "_", parts[-1] if parts else path).strip("_")
    return slug or "repo"


def pipeline_keys(pipeline: PipelineSpec) -> list[AssetKey]:
    """The asset keys a pipeline's definitions have, computed from its spec alone."""
    if pipeline.dlt is not None and pipeline.dlt.style == "run":
        return [AssetKey([pipeline.name])]
    if pipeline.dlt is not None:
        return [AssetKey([pipeline.name, r.table_name]) for r in pipeline.dlt.resources]
    streams = pipeline.sling.streams if pipeline.sling else ()
    return [AssetKey([pipeline.name, s.table]) for s in streams]


def broken(manifest: Manifest, errors: Iterable[ConfigError] | None = None) -> list[Broken]:
    """Every broken pipeline and repo problem of a manifest, with the asset it shows on."""
    errors = tuple(manifest.errors if errors is None else errors)
    built = {p.name: pipeline_keys(p) for p in manifest.pipelines}
    taken = {k for keys in built.values() for k in keys}
    by_pipeline: dict[str, list[ConfigError]] = defaultdict(list)
    by_slug: dict[str, list[ConfigError]] = defaultdict(list)
    for error in errors:
        if error.pipeline and (error.pipeline in built or AssetKey([error.pipeline]) not in taken):
            by_pipeline[error.pipeline].append(error)
        else:
            by_slug[_slug(error.path)].append(error)
    found = []
    for name, items in sorted(by_pipeline.items()):
        if built.get(name):  # its last good version keeps running: the check sits on its asset
            found.append(Broken(built[name][0], name, tuple(items), placeholder=False))
        else:
            group = next((e.group for e in items if e.group), None) or ERROR_GROUP
            found.append(Broken(AssetKey([name]), name, tuple(items), True, group))
    for slug, items in sorted(by_slug.items()):
        found.append(Broken(AssetKey([ERROR_GROUP, slug]), slug, tuple(items), placeholder=True))
    return found


def _lines(errors: Sequence[ConfigError]) -> str:
    return "\n".join(f"- `{e.path}`: **{e.field}**: {e.message}" for e in errors)


def _check_metadata(item: Broken) -> dict[str, object]:
    first = item.errors[0]
    return {
        "elt/file": MetadataValue.path(first.path),
        "elt/field": first.field,
        "elt/message": first.message,
        "elt/errors": MetadataValue.md(_lines(item.errors)),
        "elt/error_count": len(item.errors),
    }


def _check_description(item: Broken) -> str:
    first = item.errors[0]
    more = f" (and {len(item.errors) - 1} more)" if len(item.errors) > 1 else ""
    return f"{first.path}: {first.field}: {first.message}{more}"


def check_evaluation(item: Broken) -> AssetCheckEvaluation:
    """The failing `valid_config` evaluation the repo sensor records for a broken pipeline."""
    return AssetCheckEvaluation(
        asset_key=item.key,
        check_name=CHECK_NAME,
        passed=False,
        severity=AssetCheckSeverity.ERROR,
        description=_check_description(item),
        metadata=_check_metadata(item),
    )


def _check(item: Broken) -> AssetChecksDefinition:
    @asset_check(
        asset=item.key,
        name=CHECK_NAME,
        description=f"The config of {item.label} is valid. Fails with the file, field and message.",
    )
    def _valid_config() -> AssetCheckResult:
        return AssetCheckResult(
            passed=False,
            severity=AssetCheckSeverity.ERROR,
            description=_check_description(item),
            metadata=_check_metadata(item),
        )

    return _valid_config


def health_definitions(
    manifest: Manifest, errors: Iterable[ConfigError] | None = None
) -> tuple[list[AssetSpec], list[AssetChecksDefinition]]:
    """Placeholder assets and failing checks for what is broken, and the manifest asset."""
    specs = [
        AssetSpec(
            key=MANIFEST_KEY,
            group_name="elt_repo",
            description="The manifest of discovered pipelines, observed on each refresh: "
            "commit, pipelines per tool, disabled pipelines and errors.",
            kinds={"git"},
        )
    ]
    checks = []
    kept = set(manifest.pinned)
    for item in broken(manifest, errors):
        if item.placeholder:
            note = "\n\nThe last good version keeps running." if item.label in kept else ""
            specs.append(
                AssetSpec(
                    key=item.key,
                    group_name=item.group,
                    description=f"Configuration error(s):\n{_lines(item.errors)}{note}",
                    metadata={
                        "elt/errors": MetadataValue.md(_lines(item.errors)),
                        "elt/error_count": len(item.errors),
                    },
                    tags={"elt/config_error": "true"},
                )
            )
        checks.append(_check(item))
    return specs, checks


def manifest_observation(manifest: Manifest, reused: int | None = None) -> AssetObservation:
    """What a refresh found, as an observation of `elt_repo/manifest`."""
    per_tool: dict[str, int] = defaultdict(int)
    for pipeline in manifest.pipelines:
        per_tool[pipeline.tool] += 1
    rows = "\n".join(
        f"| `{e.path}` | {e.field} | {e.message.replace('|', '/')} |" for e in manifest.errors
    )
    table = f"| file | field | message |\n|---|---|---|\n{rows}" if rows else "No errors."
    metadata: dict[str, object] = {
        "elt/commit": manifest.commit or "",
        "elt/repo": manifest.url,
        "elt/branch": manifest.branch,
        "elt/pipelines": len(manifest.pipelines),
        "elt/pipelines_per_tool": MetadataValue.json(dict(sorted(per_tool.items()))),
        "elt/disabled": ", ".join(d.name for d in manifest.disabled) or "none",
        "elt/error_count": len(manifest.errors),
        "elt/errors": MetadataValue.md(table),
        "elt/discovered_at": manifest.discovered_at,
    }
    if reused is not None:
        metadata["elt/folders_unchanged"] = reused
    return AssetObservation(asset_key=MANIFEST_KEY, metadata=metadata)
