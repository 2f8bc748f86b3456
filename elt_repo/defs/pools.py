"""Concurrency pools: where a pipeline writes decides which of its steps may run at once.

One pool per DuckDB file (DuckDB allows a single writer process), else one per dlt pipeline
(two runs would race on its local state), one per Sling pipeline writing a Postgres warehouse,
or one per Sling target kind. The pools are created in the instance before runs need them
(`sync_pools`): two runs that first claim a pool Dagster has not seen yet can both be let
through while it sets up the pool's default limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from elt_repo.defs.assets import duckdb_pool
from elt_repo.discovery.sling_streams import WAREHOUSE
from elt_repo.manifest import Manifest
from elt_repo.schemas import PipelineSpec
from elt_repo.settings import Settings


def destination_kind(settings: Settings, pipeline: PipelineSpec) -> str:
    """A dlt pipeline's destination: the warehouse's kind unless its config names another."""
    return (pipeline.dlt.destination if pipeline.dlt else None) or settings.warehouse.kind


def loads_warehouse(settings: Settings, pipeline: PipelineSpec) -> bool:
    """Whether a dlt pipeline loads into the warehouse: its destination is the warehouse's kind."""
    return destination_kind(settings, pipeline) == settings.warehouse.kind


def target_kind(settings: Settings, pipeline: PipelineSpec) -> str:
    """A Sling pipeline's destination kind: the warehouse's, else its connection type."""
    target = pipeline.sling.target if pipeline.sling else WAREHOUSE
    if target == WAREHOUSE:
        return settings.warehouse.kind
    conn = {**settings.connections, **(pipeline.sling.connections if pipeline.sling else {})}
    return str(conn.get(target, {}).get("type", target)).lower()


def pipeline_pool(settings: Settings, pipeline: PipelineSpec) -> str:
    """The pool every step of the pipeline holds while it runs."""
    warehouse = settings.warehouse
    # One writer per DuckDB file; a Postgres warehouse takes many, so it has no pool of its own.
    file_pool = duckdb_pool(warehouse.file) if warehouse.is_duckdb else None
    if pipeline.tool == "sling":
        target = pipeline.sling.target if pipeline.sling else WAREHOUSE
        if target != WAREHOUSE:
            return f"sling_{target_kind(settings, pipeline)}"
        # Two runs of one replication at once would share the `<table>_tmp` tables Sling loads
        # through; other pipelines load in parallel.
        return file_pool or f"sling_{pipeline.name}"
    if pipeline.dlt is not None and pipeline.dlt.style == "run":
        # A reference-style run() loads into the warehouse by default.
        return file_pool or f"dlt_{pipeline.name}"
    if file_pool and destination_kind(settings, pipeline) == "duckdb":
        return file_pool
    return f"dlt_{pipeline.name}"


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
