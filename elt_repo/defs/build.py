"""Assembling the Definitions: pure, from a manifest; no network, no pipeline code."""

from __future__ import annotations

import logging

from dagster import AssetsDefinition, Definitions, ScheduleDefinition

from elt_repo.defs.assets import COMMIT_TAG, BuildContext
from elt_repo.defs.automation import automation_sensors, pipeline_schedule
from elt_repo.defs.dlt.assets import build_dlt_assets, dataset_error
from elt_repo.defs.dlt.run_assets import build_dlt_run_asset
from elt_repo.defs.health import health_definitions
from elt_repo.defs.sling.assets import build_sling_assets
from elt_repo.manifest import Manifest
from elt_repo.schemas import ConfigError, PipelineSpec
from elt_repo.settings import Settings

log = logging.getLogger(__name__)


def build_pipeline_assets(ctx: BuildContext, pipeline: PipelineSpec) -> AssetsDefinition:
    """The assets of one pipeline, by tool."""
    if pipeline.tool == "dlt" and pipeline.dlt and pipeline.dlt.style == "run":
        return build_dlt_run_asset(ctx, pipeline)
    if pipeline.tool == "dlt":
        return build_dlt_assets(ctx, pipeline)
    return build_sling_assets(ctx, pipeline)


def build_definitions(manifest: Manifest, settings: Settings) -> Definitions:
    """Assets, automation sensors and error placeholders for every pipeline in the manifest."""
    ctx = BuildContext(manifest=manifest, settings=settings)
    run_tags = {COMMIT_TAG: manifest.commit} if manifest.commit else {}
    built: list[tuple[PipelineSpec, AssetsDefinition]] = []
    schedules: list[ScheduleDefinition] = []
    errors = list(manifest.errors)
    for pipeline in manifest.pipelines:
        problem = dataset_error(ctx, pipeline)
        if problem is not None:
            errors.append(problem)
            continue
        try:
            assets_def = build_pipeline_assets(ctx, pipeline)
        except Exception as exc:  # one pipeline never takes down the code location
            log.exception("cannot build %s", pipeline.name)
            errors.append(ConfigError(f"{pipeline.folder}/dagster.yaml", "<build>", str(exc)))
            continue
        built.append((pipeline, assets_def))
        if pipeline.schedule is not None and pipeline.schedule.mode == "schedule":
            schedules.append(pipeline_schedule(pipeline, assets_def, run_tags))
    health_specs, checks = health_definitions(manifest, errors)
    return Definitions(
        assets=[*(a for _, a in built), *health_specs],
        asset_checks=checks,
        sensors=automation_sensors(built, settings.automation_interval, run_tags),
        schedules=schedules,
    )
