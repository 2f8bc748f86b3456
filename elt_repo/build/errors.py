"""Config errors made visible in the UI: one placeholder asset per broken pipeline or repo problem."""

from __future__ import annotations

import re
from collections import defaultdict

from dagster import AssetKey, AssetSpec, MetadataValue

from elt_repo.schemas import ConfigError

ERROR_GROUP = "elt_config_errors"


def _slug(path: str) -> str:
    parts = [p for p in path.split("/") if p and not p.endswith((".yaml", ".yml", ".py"))]
    slug = re.sub(r"[^A-Za-z0-9_]", "_", parts[-1] if parts else path).strip("_")
    return slug or "repo"


def error_specs(errors: tuple[ConfigError, ...], kept: set[str]) -> list[AssetSpec]:
    """A placeholder asset per broken folder, its description listing each `path: field: message`."""
    by_slug: dict[str, list[ConfigError]] = defaultdict(list)
    for error in errors:
        by_slug[_slug(error.path)].append(error)
    specs = []
    for slug, items in sorted(by_slug.items()):
        lines = "\n".join(f"- `{e.path}`: **{e.field}**: {e.message}" for e in items)
        note = "\n\nThe last good version keeps running." if slug in kept else ""
        specs.append(
            AssetSpec(
                key=AssetKey([ERROR_GROUP, slug]),
                group_name=ERROR_GROUP,
                description=f"Configuration error(s):\n{lines}{note}",
                metadata={
                    "elt/errors": MetadataValue.md(lines),
                    "elt/error_count": len(items),
                },
                tags={"elt/config_error": "true"},
            )
        )
    return specs
