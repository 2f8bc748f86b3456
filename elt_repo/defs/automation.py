"""Declarative automation from `schedule` and `automation`, and classic schedules for mode: schedule.

Every pipeline asset with a condition is covered by one of two automation-condition sensors:
`elt_repo_automation` (running by default) or `elt_repo_automation_stopped` (for pipelines whose
`schedule.default_status` is STOPPED). A pipeline with `schedule.mode: schedule` gets a
partition-aware `ScheduleDefinition` over a job of its assets instead of an on_cron condition.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime

from dagster import (
    AssetKey,
    AssetsDefinition,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    DynamicPartitionsDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    TimeWindowPartitionsDefinition,
    define_asset_job,
    partition_loading_context,
    schedule,
)

from elt_repo.schemas import AutomationSpec, PipelineSpec

AUTOMATION_SENSOR = "elt_repo_automation"
STOPPED_AUTOMATION_SENSOR = "elt_repo_automation_stopped"


def _condition_name(pipeline: PipelineSpec) -> str:
    """The configured condition, or the default: on_cron for a schedule in automation mode."""
    spec = pipeline.automation or AutomationSpec()
    if spec.condition is not None:
        return spec.condition
    schedule_ = pipeline.schedule
    return "on_cron" if schedule_ is not None and schedule_.mode == "automation" else "none"


def automation_condition(pipeline: PipelineSpec) -> AutomationCondition | None:
    """The condition every asset of the pipeline carries; None when nothing automates it."""
    name = _condition_name(pipeline)
    condition: AutomationCondition | None = None
    if name == "on_cron" and pipeline.schedule is not None:
        sched = pipeline.schedule
        timezone = sched.execution_timezone or sched.timezone
        condition = AutomationCondition.on_cron(sched.cron_schedule, timezone)
    elif name == "eager":
        condition = AutomationCondition.eager()
    elif name == "on_missing":
        condition = AutomationCondition.on_missing()
    if pipeline.automation is not None and pipeline.automation.on_code_change:
        # A pipeline changed in Git re-runs by itself: once, and only its latest time window.
        changed = (
            AutomationCondition.in_latest_time_window()
            & AutomationCondition.code_version_changed()
            & ~AutomationCondition.in_progress()
        ).with_label("on_code_change")
        if condition is not None:
            label = f"{condition.get_label()} or on_code_change"
            changed = (condition | changed).with_label(label)
        condition = changed
    return condition


def automation_sensors(
    pipelines: Sequence[tuple[PipelineSpec, AssetsDefinition]],
    interval: int,
    run_tags: Mapping[str, str],
) -> list[AutomationConditionSensorDefinition]:
    """One running sensor for the automated pipelines, one stopped for those that ask for it.

    `run_tags` (the commit the definitions were built from) go on every run they launch.
    """
    running: list[AssetKey] = []
    stopped: list[AssetKey] = []
    for pipeline, assets_def in pipelines:
        if automation_condition(pipeline) is None:
            continue
        status = pipeline.schedule.default_status if pipeline.schedule else "RUNNING"
        (stopped if status == "STOPPED" else running).extend(assets_def.keys)
    sensors = []
    for name, keys, status in (
        (AUTOMATION_SENSOR, running, DefaultSensorStatus.RUNNING),
        (STOPPED_AUTOMATION_SENSOR, stopped, DefaultSensorStatus.STOPPED),
    ):
        if keys:
            sensors.append(
                AutomationConditionSensorDefinition(
                    name=name,
                    target=AssetSelection.assets(*keys),
                    default_status=status,
                    minimum_interval_seconds=interval,
                    run_tags=dict(run_tags),
                    description="Evaluates the automation conditions of the pipelines' assets "
                    "(schedule and automation in each dagster.yaml).",
                )
            )
    return sensors


def pipeline_schedule(
    pipeline: PipelineSpec, assets_def: AssetsDefinition, run_tags: Mapping[str, str]
) -> ScheduleDefinition:
    """`schedule.mode: schedule`: a cron schedule over a job of the pipeline's assets.

    Each tick requests the latest complete time window, or one run per static key, or one
    unpartitioned run.
    """
    sched = pipeline.schedule
    assert sched is not None
    partitions_def = assets_def.partitions_def
    job = define_asset_job(
        f"{pipeline.name}__job",
        selection=AssetSelection.assets(*assets_def.keys),  # partitions come from the assets
        description=f"Every asset of {pipeline.name}, for its schedule",
    )

    @schedule(
        name=f"{pipeline.name}__schedule",
        cron_schedule=sched.cron_schedule,
        execution_timezone=sched.execution_timezone or sched.timezone,
        job=job,
        default_status=DefaultScheduleStatus[sched.default_status],
        description=f"{pipeline.name} on {sched.cron_schedule} ({sched.timezone})",
    )
    def _schedule(context: ScheduleEvaluationContext) -> Iterator[RunRequest | SkipReason]:
        tick = context.scheduled_execution_time or datetime.now(UTC)
        stamp = tick.isoformat()
        if isinstance(partitions_def, TimeWindowPartitionsDefinition):
            with partition_loading_context(effective_dt=tick):
                key = partitions_def.get_last_partition_key()
            if key is None:
                yield SkipReason(f"no complete partition of {pipeline.name} at {stamp}")
                return
            yield RunRequest(run_key=f"{key}@{stamp}", partition_key=key, tags=run_tags)
        elif isinstance(partitions_def, DynamicPartitionsDefinition):
            keys = context.instance.get_dynamic_partitions(partitions_def.name or "")
            if not keys:
                yield SkipReason(f"{pipeline.name} has no partition keys on this instance yet")
            for key in keys:
                yield RunRequest(run_key=f"{key}@{stamp}", partition_key=key, tags=run_tags)
        else:
            yield RunRequest(run_key=stamp, tags=run_tags)

    return _schedule
