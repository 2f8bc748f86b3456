"""Partitions: time windows, and static keys kept as dynamic partitions on the instance."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import (
    AddDynamicPartitionsRequest,
    AssetExecutionContext,
    BackfillPolicy,
    DagsterInstance,
    DeleteDynamicPartitionsRequest,
    DynamicPartitionsDefinition,
    PartitionsDefinition,
    TimeWindowPartitionsDefinition,
)

from elt_repo.manifest import Manifest
from elt_repo.schemas import PartitionSpec, PipelineSpec
from elt_repo.schemas.fields import parse_date


def dynamic_partitions_name(pipeline: PipelineSpec) -> str:
    """The instance-level name of a pipeline's static keys."""
    return f"{pipeline.name}__keys"


def partitions_def(pipeline: PipelineSpec) -> PartitionsDefinition | None:
    """The partitions definition for a pipeline's assets, if it is partitioned."""
    part: PartitionSpec | None = pipeline.partitions
    if part is None:
        return None
    if part.type == "time" and part.time:
        t = part.time
        # Parsed here (fmt, else ISO 8601) so `start: "2024-01-01"` works with an hourly fmt too.
        return TimeWindowPartitionsDefinition(
            start=parse_date(t.start, t.fmt),
            end=parse_date(t.end, t.fmt) if t.end else None,
            cron_schedule=t.cron_schedule,
            timezone=t.timezone,
            fmt=t.fmt,
        )
    return DynamicPartitionsDefinition(name=dynamic_partitions_name(pipeline))


def backfill_policy(pipeline: PipelineSpec) -> BackfillPolicy | None:
    """Time windows backfill in one run (or `max_partitions_per_run` per run); static keys,
    and a run() that takes one partition_key, one key per run."""
    part = pipeline.partitions
    if part is None:
        return None
    one_key = part.type == "static" or (pipeline.dlt is not None and pipeline.dlt.style == "run")
    if one_key:
        return BackfillPolicy.multi_run(1)
    if part.max_partitions_per_run:
        return BackfillPolicy.multi_run(part.max_partitions_per_run)
    return BackfillPolicy.single_run()


def partition_values(context: AssetExecutionContext, pipeline: PipelineSpec) -> dict[str, Any]:
    """`partition_key`, `partition_start` and `partition_end` for the running partition(s)."""
    if pipeline.partitions is None:
        return {}
    if not (context.has_partition_key or context.has_partition_key_range):
        raise ValueError(f"{pipeline.name} is partitioned: launch it for a partition or a range")
    if pipeline.partitions.type == "time":
        window = context.partition_time_window
        fmt = pipeline.partitions.time.fmt if pipeline.partitions.time else "%Y-%m-%d"
        keys = context.partition_key_range
        return {
            "partition_key": keys.start if keys.start == keys.end else f"{keys.start}...{keys.end}",
            "partition_start": window.start,
            "partition_end": window.end,
            "partition_start_str": window.start.strftime(fmt),
            "partition_end_str": window.end.strftime(fmt),
        }
    return {"partition_key": context.partition_key}


def partition_kwargs(names: Mapping[str, str], values: Mapping[str, Any]) -> dict[str, Any]:
    """Map `partition_args` ({start: start_date, ...}) onto keyword arguments."""
    source = {"start": "partition_start", "end": "partition_end", "key": "partition_key"}
    return {kwarg: values[source[role]] for role, kwarg in names.items() if source[role] in values}


def _static_keys(manifest: Manifest | None) -> dict[str, list[str]]:
    """Dynamic partitions name -> the static keys the manifest asks for."""
    keys = {}
    for pipeline in manifest.pipelines if manifest else ():
        part = pipeline.partitions
        if part is not None and part.type == "static" and part.static is not None:
            keys[dynamic_partitions_name(pipeline)] = list(part.static.partition_keys)
    return keys


def dynamic_partition_requests(
    manifest: Manifest, instance: DagsterInstance, previous: Manifest | None = None
) -> list[AddDynamicPartitionsRequest | DeleteDynamicPartitionsRequest]:
    """Instance changes that make each pipeline's dynamic partitions match its static keys.

    The one diff that the repo sensor, `refresh.py --sync-partitions` and the demo all apply.
    Pipelines with static keys in `previous` but not in `manifest` (retired, or no longer
    statically partitioned) lose all their keys.
    """
    requests: list[AddDynamicPartitionsRequest | DeleteDynamicPartitionsRequest] = []
    wanted_by_name = _static_keys(manifest)
    for name in sorted(set(_static_keys(previous)) - set(wanted_by_name)):
        wanted_by_name[name] = []
    for name, wanted in wanted_by_name.items():
        existing = set(instance.get_dynamic_partitions(name))
        missing = [k for k in wanted if k not in existing]
        stale = sorted(existing - set(wanted))
        if missing:
            requests.append(
                AddDynamicPartitionsRequest(partitions_def_name=name, partition_keys=missing)
            )
        if stale:
            requests.append(
                DeleteDynamicPartitionsRequest(partitions_def_name=name, partition_keys=stale)
            )
    return requests


def apply_partition_requests(
    instance: DagsterInstance,
    requests: list[AddDynamicPartitionsRequest | DeleteDynamicPartitionsRequest],
) -> None:
    """Apply requests directly, as refresh.py and the demo do outside a sensor."""
    for request in requests:
        if isinstance(request, AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(
                request.partitions_def_name, list(request.partition_keys)
            )
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
