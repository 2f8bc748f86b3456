"""One metadata vocabulary for every materialization, whatever the tool.

Every materialization carries: `dagster/row_count` (the tool's own count) and
`elt/rows_by_table`, `elt/bytes` where the tool reports them, `elt/started_at`,
`elt/finished_at` and `elt/duration_seconds`, throughput (`elt/rows_per_second`,
`elt/bytes_per_second`), `elt/commit` (and `elt/commit_url` for GitHub remotes), `elt/partition`
or `elt/partition_range`, `dagster/table_name` as `<database>.<schema>.<table>`,
`dagster/column_schema` where known, and `elt/config`: the pipeline's effective config with
secrets redacted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dagster import AssetKey, AssetMaterialization, MaterializeResult, MetadataValue

from elt_repo.redact import MASK, redact
from elt_repo.schemas import PipelineSpec, spec_to_dict

_SECRET_KEY = re.compile(r"pass(word|wd)?|token|secret|api_?key|credential|private_key", re.I)


@dataclass(frozen=True)
class RunFacts:
    """What is true of the whole run, for every asset it materializes."""

    pipeline: PipelineSpec
    commit: str | None
    repo_url: str
    partition: Mapping[str, Any]
    started: datetime
    finished: datetime


def commit_url(repo_url: str, commit: str | None) -> str | None:
    """A link to the commit, for GitHub https remotes."""
    if not commit or not repo_url.startswith("https://github.com/"):
        return None
    return f"{repo_url.removesuffix('.git').rstrip('/')}/commit/{commit}"


def redacted_config(value: Any) -> Any:
    """The config with secret-named keys masked, and URL credentials and secret values removed."""
    if isinstance(value, Mapping):
        return {
            k: MASK if _SECRET_KEY.search(str(k)) and v not in (None, "") else redacted_config(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redacted_config(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    return value


def effective_config(pipeline: PipelineSpec) -> dict[str, Any]:
    """The pipeline as it runs: its validated spec, redacted."""
    return redacted_config(spec_to_dict(pipeline))


def run_metadata(
    facts: RunFacts, rows: int | None = None, written: int | None = None
) -> dict[str, Any]:
    """The part of the vocabulary that comes from the run, not from the tool's table."""
    seconds = max((facts.finished - facts.started).total_seconds(), 1e-6)
    meta: dict[str, Any] = {
        "elt/started_at": MetadataValue.timestamp(facts.started),
        "elt/finished_at": MetadataValue.timestamp(facts.finished),
        "elt/duration_seconds": round(seconds, 3),
        "elt/commit": facts.commit or "",
        "elt/config": MetadataValue.json(effective_config(facts.pipeline)),
    }
    if url := commit_url(facts.repo_url, facts.commit):
        meta["elt/commit_url"] = MetadataValue.url(url)
    key = str(facts.partition.get("partition_key", ""))
    if "..." in key:
        meta["elt/partition_range"] = key
    elif key:
        meta["elt/partition"] = key
    if rows is not None:
        meta["dagster/row_count"] = MetadataValue.int(rows)
        meta["elt/rows_per_second"] = round(rows / seconds, 1)
    if written is not None:
        meta["elt/bytes"] = MetadataValue.int(written)
        meta["elt/bytes_per_second"] = round(written / seconds, 1)
    return meta


def with_metadata(
    results: Iterable[MaterializeResult | AssetMaterialization],
    facts: RunFacts,
    per_asset: Mapping[AssetKey, Mapping[str, Any]] | None = None,
) -> Iterator[MaterializeResult]:
    """The tool's materializations, with the run's facts and each asset's own figures."""
    for result in results:
        assert result.asset_key is not None
        own = dict((per_asset or {}).get(result.asset_key, {}))
        rows, written = own.pop("rows", None), own.pop("bytes", None)
        if rows is None and "dagster/row_count" in (result.metadata or {}):
            rows = _number(result.metadata["dagster/row_count"])
        yield MaterializeResult(
            asset_key=result.asset_key,
            metadata={**(result.metadata or {}), **own, **run_metadata(facts, rows, written)},
        )


def _number(value: Any) -> int | None:
    raw = getattr(value, "value", value)
    return int(raw) if isinstance(raw, int | float) else None
