"""One metadata vocabulary for every materialization, whatever the tool.

Every materialization carries: `dagster/row_count`, the rows of the table after the run as the
warehouse holds them (for a partitioned asset: the rows of each partition, counted by the
pipeline's `partitions.column`, and no count without one); `elt/rows_loaded`, the rows this run
loaded; `elt/table_rows` for a partitioned asset, the whole table; `elt/rows_by_table`,
`elt/bytes` where the tool reports them, `elt/started_at`, `elt/finished_at` and
`elt/duration_seconds`, throughput (`elt/rows_per_second` of the rows loaded,
`elt/bytes_per_second`), `elt/commit` (and `elt/commit_url` for GitHub remotes), `elt/partition`
or `elt/partition_range`, `dagster/table_name` as `<database>.<schema>.<table>`,
`dagster/column_schema` where known, and `elt/config`: the pipeline's effective config with
secrets redacted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    MaterializeResult,
    MetadataValue,
)

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
    facts: RunFacts, loaded: int | None = None, written: int | None = None
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
    if loaded is not None:
        meta["elt/rows_loaded"] = MetadataValue.int(loaded)
        meta["elt/rows_per_second"] = round(loaded / seconds, 1)
    if written is not None:
        meta["elt/bytes"] = MetadataValue.int(written)
        meta["elt/bytes_per_second"] = round(written / seconds, 1)
    return meta


@dataclass(frozen=True)
class TableFigures:
    """What one asset's table says after the run, and what the run loaded into it."""

    rows_loaded: int | None = None
    bytes: int | None = None
    table_rows: int | None = None  # the whole table, read from the destination
    partition_rows: Mapping[str, int] = field(default_factory=dict)  # partition key -> rows
    metadata: Mapping[str, Any] = field(default_factory=dict)  # table name, columns, ...


def with_metadata(
    results: Iterable[MaterializeResult | AssetMaterialization],
    facts: RunFacts,
    figures: Mapping[AssetKey, TableFigures] | None = None,
    context: AssetExecutionContext | None = None,
) -> Iterator[MaterializeResult]:
    """The tool's materializations, with the run's facts and each asset's own figures.

    The tools' own `dagster/row_count` is dropped: dagster-dlt's is the rows loaded, and
    dagster-sling's is the table's total even for one partition. A run over several partitions
    records each partition's count on that partition's materialization (through `context`).
    """
    partitioned = facts.pipeline.partitions is not None
    run_key = str(facts.partition.get("partition_key", ""))
    for result in results:
        assert result.asset_key is not None
        own = (figures or {}).get(result.asset_key, TableFigures())
        metadata = {k: v for k, v in (result.metadata or {}).items() if k != "dagster/row_count"}
        counts: dict[str, Any] = {}
        if not partitioned:
            if own.table_rows is not None:
                counts["dagster/row_count"] = MetadataValue.int(own.table_rows)
        else:
            if own.table_rows is not None:
                counts["elt/table_rows"] = MetadataValue.int(own.table_rows)
            if set(own.partition_rows) == {run_key}:
                counts["dagster/row_count"] = MetadataValue.int(own.partition_rows[run_key])
            elif own.partition_rows:
                assert context is not None, "a range run needs its context for per-partition counts"
                for key, rows in own.partition_rows.items():
                    context.add_asset_metadata(
                        {"dagster/row_count": MetadataValue.int(rows)},
                        asset_key=result.asset_key,
                        partition_key=key,
                    )
        yield MaterializeResult(
            asset_key=result.asset_key,
            metadata={
                **metadata,
                **own.metadata,
                **counts,
                **run_metadata(facts, own.rows_loaded, own.bytes),
            },
        )
