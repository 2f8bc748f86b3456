"""Concurrency pools: where a pipeline writes decides which of its steps may run at once.

One pool per DuckDB file (DuckDB allows a single writer process), else one per dlt pipeline
(two runs would race on its local state) or per Sling target kind. The pools are created in the
instance before runs need them (`sync_pools`): two runs that first claim a pool Dagster has not
seen yet can both be let through while it sets up the pool's default limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from elt_repo.defs.assets import duckdb_pool
from elt_repo.discovery.sling_streams import WAREHOUSE
from elt_repo.manifest import Manifest
from elt_repo.schemas import PipelineSpec
from elt_repo.settings import Settings


def destination_kind(pipeline: PipelineSpec) -> str:
    """A dlt pipeline's destination: duckdb (the warehouse) unless its config names another."""
    return (pipeline.dlt.destination if pipeline.dlt else None) or "duckdb"


def target_kind(settings: Settings, pipeline: PipelineSpec) -> str:
    """A Sling pipeline's destination kind: duckdb for the warehouse, else its connection type."""
    target = pipeline.sling.target if pipeline.sling else WAREHOUSE
    if target == WAREHOUSE:
        return "duckdb"
    conn = {**settings.connections, **(pipeline.sling.connections if pipeline.sling else {})}
    return str(conn.get(target, {}).get("type", target)).lower()


def pipeline_pool(settings: Settings, pipeline: PipelineSpec) -> str:
    """The pool every step of the pipeline holds while it runs."""
    warehouse = duckdb_pool(settings.warehouse)
    if pipeline.tool == "sling":
        target = pipeline.sling.target if pipeline.sling else WAREHOUSE
        return warehouse if target == WAREHOUSE else f"sling_{target_kind(settings, pipeline)}"
    if pipeline.dlt is not None and pipeline.dlt.style == "run":
        return warehouse  # a reference-style run() loads into the warehouse by default
    return warehouse if destination_kind(pipeline) == "duckdb" else f"dlt_{pipeline.name}"


def sync_pools(instance: Any, manifest: Manifest, settings: Settings) -> list[str]:
    """Create the pools of the manifest's pipelines that the instance does not know yet, with
    its default limit; returns their names."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    pools: Iterable[str] = {pipeline_pool(settings, p) for p in manifest.pipelines}
    new = sorted(set(pools) - set(storage.get_concurrency_keys()))
    for pool in new:
        storage.initialize_concurrency_limit_to_default(pool)
    return new
