"""Reference-project dlt pipelines: `run(partition_key=None)` runs dlt itself; one asset each."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    multi_asset,
)

from elt_repo.defs.assets import (
    BuildContext,
    multi_asset_args,
    pipeline_asset_spec,
)
from elt_repo.defs.dlt.load_info import load_info_metadata, other_result_metadata, rows_loaded
from elt_repo.defs.failures import with_failure_details
from elt_repo.defs.pools import pipeline_pool
from elt_repo.defs.run_metadata import TableFigures, with_metadata
from elt_repo.discovery.dlt_inspect import import_pipeline_module, pipeline_settings
from elt_repo.schemas import PipelineSpec
from elt_repo.tool_env import without_own_secrets
from elt_repo.warehouse import Warehouse


def run_asset_key(pipeline: PipelineSpec) -> AssetKey:
    """Tables are unknown until run() runs, so the asset is the pipeline itself."""
    return AssetKey([pipeline.name])


@contextmanager
def run_environment(warehouse: Warehouse) -> Iterator[None]:
    """Unless configured otherwise, dlt's destination of the warehouse's kind (duckdb or
    postgres) is the warehouse during run()."""
    var = f"DESTINATION__{warehouse.kind.upper()}__CREDENTIALS"
    added = not any(k == var or k.startswith(f"{var}__") for k in os.environ)
    if added:
        if warehouse.is_duckdb:
            warehouse.file.parent.mkdir(parents=True, exist_ok=True)
            os.environ[var] = str(warehouse.file)
        else:
            os.environ[var] = warehouse.resolved_url(os.environ)
    try:
        yield
    finally:
        if added:
            os.environ.pop(var, None)


def build_dlt_run_asset(ctx: BuildContext, pipeline: PipelineSpec) -> AssetsDefinition:
    """One asset for a `run()` pipeline, loading wherever its own dlt code says (a destination
    of the warehouse's kind: the warehouse)."""
    assert pipeline.dlt is not None
    spec = pipeline_asset_spec(
        ctx,
        pipeline,
        run_asset_key(pipeline),
        destination_kind=ctx.settings.warehouse.kind,
        entry_file=pipeline.dlt.source_file,
        extra_metadata={"elt/style": "run()"},
    )
    accepts_key = pipeline.dlt.accepts_partition_key

    def _run(context: AssetExecutionContext) -> Iterator[MaterializeResult]:
        pinned = ctx.pinned(context, pipeline)
        partition_key = context.partition_key if pipeline.partitions else None
        module = import_pipeline_module(pinned.folder, pipeline.dlt.source_file)
        kwargs = {"partition_key": partition_key} if accepts_key else {}
        started = datetime.now(UTC)
        with (
            run_environment(ctx.settings.warehouse),
            pipeline_settings(pinned.folder),
            without_own_secrets(),
        ):
            result = module.run(**kwargs)
        figures = {}
        if hasattr(result, "load_packages") and hasattr(result, "loads_ids"):
            metadata = load_info_metadata(result)
            # The asset is the pipeline, not one table: no table's count is its row count.
            figures[spec.key] = TableFigures(rows_loaded=rows_loaded(result))
        else:
            metadata = other_result_metadata(result)
        partition = {} if partition_key is None else {"partition_key": partition_key}
        facts = ctx.run_facts(pinned, partition, started)
        results = [MaterializeResult(asset_key=spec.key, metadata=metadata)]
        yield from with_metadata(results, facts, figures, context)

    @multi_asset(**multi_asset_args(pipeline, [spec], pipeline_pool(ctx.settings, pipeline)))
    def _asset(context: AssetExecutionContext) -> Iterator[MaterializeResult]:
        yield from with_failure_details(context, pipeline, _run(context))

    return _asset
