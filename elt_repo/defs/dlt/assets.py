"""dlt pipelines as multi-assets: specs from the manifest, execution through dagster-dlt."""

import dataclasses
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    MaterializeResult,
    multi_asset,
)

from elt_repo.defs.assets import (
    BuildContext,
    Pinned,
    asset_key,
    multi_asset_args,
    pipeline_asset_spec,
)
from elt_repo.defs.dlt.figures import table_figures
from elt_repo.defs.failures import with_failure_details
from elt_repo.defs.partitions import (
    partition_kwargs,
    partition_values,
)
from elt_repo.defs.pools import destination_kind, loads_warehouse, pipeline_pool
from elt_repo.defs.run_metadata import with_metadata
from elt_repo.defs.table_counts import partition_slices
from elt_repo.discovery.dlt_inspect import (
    call_source,
    import_pipeline_module,
    pipeline_settings,
    table_name,
)
from elt_repo.discovery.pipeline_files import resolve_args
from elt_repo.schemas import ConfigError, PipelineSpec
from elt_repo.tool_env import without_own_secrets

# Measured on 1M rows: about 3x faster and 3x less memory than dlt's default insert format.
LOADER_FILE_FORMAT = "parquet"
# dlt loads parquet into Postgres only through an ADBC driver, which elt_repo[postgres] does not
# install: asked for parquet, it warns on every run and picks another format. Its own choice is
# insert_values for rows, and for Arrow tables a format written without touching the rows
# (200,000 rows: 1.5 s against 6.2 s in insert_values). Not csv for rows: dlt 1.31 then counts
# each row once per column, and elt/rows_loaded is that count.
LOADER_FILE_FORMATS = {"postgres": None}


def loader_file_format(destination: str) -> str | None:
    """The file format dlt loads `destination` with; None: dlt's own choice."""
    return LOADER_FILE_FORMATS.get(destination, LOADER_FILE_FORMAT)


def elt_translator(pipeline: PipelineSpec) -> Any:
    """A dagster-dlt translator that maps a dlt resource to the key the definitions were built
    with. Made at run time: loading the code location imports neither dlt nor dagster-dlt."""
    from dagster_dlt import DagsterDltTranslator
    from dagster_dlt.translator import DltResourceTranslatorData

    class EltDltTranslator(DagsterDltTranslator):
        def get_asset_spec(self, data: DltResourceTranslatorData) -> AssetSpec:
            return AssetSpec(key=asset_key(pipeline, table_name(data.resource)))

    return EltDltTranslator()


def _destination(ctx: BuildContext, pipeline: PipelineSpec) -> Any:
    """The warehouse as a dlt destination, or the name of the one the pipeline's config names.

    Resolved before pipeline code runs: a `${VAR}` of the warehouse URL may be one of
    elt_repo's own variables, which pipeline code never sees.
    """
    import dlt

    warehouse = ctx.settings.warehouse
    if not loads_warehouse(ctx.settings, pipeline):
        return destination_kind(ctx.settings, pipeline)
    if warehouse.is_duckdb:
        warehouse.file.parent.mkdir(parents=True, exist_ok=True)
        return dlt.destinations.duckdb(credentials=str(warehouse.file))
    return dlt.destinations.postgres(credentials=warehouse.resolved_url(os.environ))


def _source(folder: Path, pipeline: PipelineSpec, partition: dict[str, Any]) -> Any:
    """Import the pipeline's module (only now, at run time) and build its dlt source."""
    from dlt.extract.resource import DltResource
    from dlt.extract.source import DltSource

    assert pipeline.dlt is not None
    module = import_pipeline_module(folder, pipeline.dlt.source_file)
    func = getattr(module, pipeline.dlt.source_function)
    kwargs = resolve_args(pipeline.dlt.args, folder, os.environ)
    kwargs.update(partition_kwargs(pipeline.dlt.partition_args, partition))
    source = call_source(func, kwargs, list(pipeline.dlt.partition_args.values()))
    if isinstance(source, DltResource):
        import dlt

        source = DltSource(dlt.Schema(pipeline.name), pipeline.name, [source])
    return source


def declared_only(source: Any, pipeline: PipelineSpec) -> tuple[Any, list[str]]:
    """The source with only the resources the assets declare, and the tables of the others.

    A source that lists its tables when called (sql_database, rest_api) can have gained one
    since discovery; loading it would be a table with no asset, and Dagster fails a step that
    reports an asset it does not declare. The next discovery of the folder adds its asset.
    """
    assert pipeline.dlt is not None
    declared = {r.name for r in pipeline.dlt.resources}
    present = source.selected_resources
    extra = sorted(table_name(r) for name, r in present.items() if name not in declared)
    if extra:
        source = source.with_resources(*(n for n in present if n in declared))
    return source, extra


def dataset_error(ctx: BuildContext, pipeline: PipelineSpec) -> ConfigError | None:
    """A dlt dataset named like the warehouse file's stem: DuckDB cannot tell the catalog from
    the schema, and every run would fail with "Ambiguous reference to catalog or schema"."""
    warehouse = ctx.settings.warehouse
    if pipeline.dlt is None or not warehouse.is_duckdb:
        return None
    if destination_kind(ctx.settings, pipeline) != "duckdb":
        return None
    dataset = pipeline.dlt.dataset_name or pipeline.name
    if dataset != warehouse.file.stem:
        return None
    field = "dlt.dataset_name" if pipeline.dlt.dataset_name else "name"
    return ConfigError(
        f"{pipeline.folder}/dagster.yaml",
        field,
        f"the dlt dataset {dataset!r} has the name of the warehouse file "
        f"{warehouse.file.name}, which DuckDB cannot tell apart from it; set "
        "dlt.dataset_name to another name",
    )


def _load(
    ctx: BuildContext,
    context: AssetExecutionContext,
    pinned: Pinned,
    partition: dict[str, Any],
    built_from: PipelineSpec,
    destination: Any,
) -> tuple[list[Any], Any, list[str]]:
    """Build the source of the pinned commit and run it through dagster-dlt: the tool's
    materializations, the dlt pipeline and the tables no asset declares."""
    import dlt

    spec = pinned.pipeline
    assert spec.dlt is not None
    dlt_pipeline = dlt.pipeline(
        pipeline_name=spec.name,
        destination=destination,
        dataset_name=spec.dlt.dataset_name or spec.name,
        pipelines_dir=str(ctx.settings.dlt_dir),
    )
    source, undeclared = declared_only(_source(pinned.folder, spec, partition), spec)
    if undeclared:
        context.log.warning(
            f"{spec.name}: the source has tables no asset declares, not loaded: "
            f"{', '.join(undeclared)}. A refresh that discovers {spec.folder} again adds "
            "their assets (scripts/refresh.py --force)."
        )
    try:
        results = list(
            context.resources.dlt.run(
                context=context,
                dlt_source=source,
                dlt_pipeline=dlt_pipeline,
                dagster_dlt_translator=elt_translator(built_from),
                loader_file_format=loader_file_format(destination_kind(ctx.settings, spec)),
            )
        )
    except Exception:
        # dlt pickles the failed step's exception, unredacted, into its trace file.
        (Path(dlt_pipeline.working_dir) / "trace.pickle").unlink(missing_ok=True)
        raise
    return results, dlt_pipeline, undeclared


def build_dlt_assets(ctx: BuildContext, pipeline: PipelineSpec) -> AssetsDefinition:
    """One multi-asset per dlt pipeline, one asset per resource."""
    assert pipeline.dlt is not None
    dlt_spec = pipeline.dlt
    kind = destination_kind(ctx.settings, pipeline)
    specs = [
        pipeline_asset_spec(
            ctx,
            pipeline,
            asset_key(pipeline, resource.table_name),
            destination_kind=kind,
            entry_file=dlt_spec.source_file,
            extra_metadata={"elt/dlt_resource": resource.name},
        )
        for resource in dlt_spec.resources
    ]
    # One pool per DuckDB file (one writer), else one per pipeline: runs of one dlt pipeline
    # never overlap, because two runs would race on its local state (dagster#21022, dlt#1102).
    pool = pipeline_pool(ctx.settings, pipeline)

    def _run(context: AssetExecutionContext) -> Iterator[MaterializeResult]:
        pinned = ctx.pinned(context, pipeline)
        spec = pinned.pipeline
        partition = partition_values(context, spec)
        started = datetime.now(UTC)
        destination = _destination(ctx, spec)
        into_warehouse = loads_warehouse(ctx.settings, spec)
        catalog = ctx.settings.warehouse.catalog(os.environ) if into_warehouse else None
        # Its .dlt/*.toml, for the load and the counts; never elt_repo's own credentials.
        with pipeline_settings(pinned.folder), without_own_secrets():
            results, dlt_pipeline, undeclared = _load(
                ctx, context, pinned, partition, pipeline, destination
            )
            facts = ctx.run_facts(pinned, partition, started)
            part = spec.partitions
            figures, problem = table_figures(
                dlt_pipeline,
                [r.asset_key for r in results],
                catalog,
                part.column if part else None,
                partition_slices(context, spec),
            )
        if problem:
            context.log.warning(f"{spec.name}: the loaded tables could not be counted: {problem}")
        if undeclared:
            for key, own in figures.items():
                extra = {**own.metadata, "elt/undeclared_tables": ", ".join(undeclared)}
                figures[key] = dataclasses.replace(own, metadata=extra)
        yield from with_metadata(results, facts, figures, context)

    @multi_asset(**multi_asset_args(pipeline, specs, pool), required_resource_keys={"dlt"})
    def _assets(context: AssetExecutionContext) -> Iterator[MaterializeResult]:
        yield from with_failure_details(context, pipeline, _run(context))

    return _assets
