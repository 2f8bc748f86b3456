"""One automation-condition sensor per scheduled pipeline, carrying its default status."""

from __future__ import annotations

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus

from elt_repo.schemas import PipelineSpec


def automation_sensor(
    pipeline: PipelineSpec, assets: AssetSelection
) -> AutomationConditionSensorDefinition | None:
    """Evaluates the pipeline's on_cron conditions; `schedule.default_status` sets it on or off."""
    if pipeline.schedule is None:
        return None
    return AutomationConditionSensorDefinition(
        name=f"{pipeline.name}__automation",
        target=assets,
        default_status=DefaultSensorStatus[pipeline.schedule.default_status],
        description=f"Declarative automation for {pipeline.name}: {pipeline.schedule.cron_schedule}",
    )
