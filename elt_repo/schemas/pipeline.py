"""marshmallow schemas for a pipeline's `dagster.yaml` (the contract in DESIGN.md)."""

from __future__ import annotations

import json
from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    pre_load,
    validate,
    validates_schema,
)

from elt_repo.schemas import fields as check

_PARTITION_ARG_KEYS = ("start", "end", "key")
_CONDITIONS = ("on_cron", "eager", "on_missing", "none")
_SCHEDULE_MODES = ("automation", "schedule")
# Dagster allows ten kinds per asset; the tool and the destination take two.
MAX_EXTRA_KINDS = 8


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class TimePartitionSchema(_Strict):
    start = fields.String(required=True)
    end = fields.String(load_default=None, allow_none=True)
    cron_schedule = fields.String(load_default="0 0 * * *", validate=check.cron)
    timezone = fields.String(load_default="UTC", validate=check.timezone)
    fmt = fields.String(load_default="%Y-%m-%d")

    @validates_schema
    def _window(self, data: dict[str, Any], **_: Any) -> None:
        fmt = data.get("fmt", "%Y-%m-%d")
        try:
            start = check.parse_date(data["start"], fmt)
        except ValidationError as exc:
            raise ValidationError(exc.messages, "start") from None
        if data.get("end") is not None:
            try:
                end = check.parse_date(data["end"], fmt)
            except ValidationError as exc:
                raise ValidationError(exc.messages, "end") from None
            if end <= start:
                raise ValidationError(
                    f"end {data['end']!r} must be after start {data['start']!r}", "end"
                )
        cron, timezone = data.get("cron_schedule", "0 0 * * *"), data.get("timezone", "UTC")
        try:
            check.fmt_round_trips(data["start"], fmt, cron, timezone)
        except ValidationError as exc:
            raise ValidationError(exc.messages, "fmt") from None


class StaticPartitionSchema(_Strict):
    partition_keys = fields.List(
        fields.String(validate=[validate.Length(max=255), check.partition_key]),
        required=True,
        validate=validate.Length(min=1),
    )

    @validates_schema
    def _unique(self, data: dict[str, Any], **_: Any) -> None:
        keys = data.get("partition_keys", [])
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValidationError(f"duplicate partition keys: {', '.join(dupes)}", "partition_keys")


class PartitionsSchema(_Strict):
    enabled = fields.Boolean(load_default=True)
    type = fields.String(validate=validate.OneOf(["time", "static"]))
    time = fields.Nested(TimePartitionSchema)
    static = fields.Nested(StaticPartitionSchema)
    # Backfills of time partitions run in one run unless this caps the partitions per run.
    max_partitions_per_run = fields.Integer(
        load_default=None, allow_none=True, validate=validate.Range(min=1)
    )
    # The column whose value places a row in its partition (a date or timestamp for time
    # partitions, the key for static ones): dagster/row_count then counts each partition's rows.
    column = fields.String(load_default=None, validate=validate.Length(min=1, max=128))

    @validates_schema
    def _matching_section(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("enabled", True):
            return
        kind = data.get("type")
        if kind is None:
            raise ValidationError("required when partitions are enabled: time or static", "type")
        if kind not in data:
            raise ValidationError(f"required when type is {kind!r}", kind)
        if kind == "static" and data.get("max_partitions_per_run") is not None:
            raise ValidationError(
                "only for time partitions: each static key always runs on its own",
                "max_partitions_per_run",
            )


class ScheduleSchema(_Strict):
    enabled = fields.Boolean(load_default=True)
    cron_schedule = fields.String(validate=check.cron)
    timezone = fields.String(load_default="UTC", validate=check.timezone)
    default_status = fields.String(
        load_default="RUNNING", validate=validate.OneOf(["RUNNING", "STOPPED"])
    )
    execution_timezone = fields.String(load_default=None, validate=check.timezone)
    # automation: a declarative on_cron condition; schedule: a classic ScheduleDefinition.
    mode = fields.String(load_default="automation", validate=validate.OneOf(_SCHEDULE_MODES))

    @validates_schema
    def _cron_required(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("enabled", True) and not data.get("cron_schedule"):
            raise ValidationError("required when the schedule is enabled", "cron_schedule")


class AutomationSchema(_Strict):
    """`automation: eager`, or `automation: {condition: eager, on_code_change: true}`."""

    condition = fields.String(load_default=None, validate=validate.OneOf(_CONDITIONS))
    on_code_change = fields.Boolean(load_default=False)


class RetryPolicySchema(_Strict):
    max_retries = fields.Integer(required=True, validate=validate.Range(min=0, max=100))
    delay = fields.Float(load_default=0, validate=validate.Range(min=0))
    backoff = fields.String(
        load_default="EXPONENTIAL", validate=validate.OneOf(["LINEAR", "EXPONENTIAL"])
    )
    jitter = fields.String(
        load_default="PLUS_MINUS", allow_none=True, validate=validate.OneOf(["FULL", "PLUS_MINUS"])
    )


_METADATA_TYPES = ("text", "url", "path", "md", "json", "int", "float")


class MetadataEntrySchema(_Strict):
    key = fields.String(required=True, validate=validate.Length(min=1))
    value = fields.Raw(required=True, allow_none=False)
    type = fields.String(load_default="text", validate=validate.OneOf(_METADATA_TYPES))

    @validates_schema
    def _value_fits_type(self, data: dict[str, Any], **_: Any) -> None:
        kind, value = data.get("type", "text"), data.get("value")
        if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            if not (isinstance(value, str) and value.lstrip("-").isdigit()):
                raise ValidationError(f"{value!r} is not an integer (type: int)", "value")
        elif kind == "float":
            try:
                if isinstance(value, bool):
                    raise ValueError
                float(value)
            except (TypeError, ValueError):
                raise ValidationError(f"{value!r} is not a number (type: float)", "value") from None
        elif kind == "json" and isinstance(value, str):
            try:
                json.loads(value)
            except ValueError as exc:
                raise ValidationError(f"not valid JSON (type: json): {exc}", "value") from None
        elif kind in ("text", "url", "path", "md") and not isinstance(value, str | int | float):
            raise ValidationError(f"must be a string for type {kind}", "value")
        if kind == "url" and not str(value).startswith(("http://", "https://", "mailto:")):
            raise ValidationError(f"{value!r} is not an http(s) URL (type: url)", "value")


class DltSchema(_Strict):
    source = fields.String(required=True, validate=check.source_ref)
    args = fields.Dict(keys=fields.String(), load_default=dict)
    destination = fields.String(load_default=None)
    dataset_name = fields.String(load_default=None, validate=check.name)
    partition_args = fields.Dict(
        keys=fields.String(validate=validate.OneOf(_PARTITION_ARG_KEYS)),
        values=fields.String(validate=check.name),
        load_default=dict,
    )


class SlingConnectionSchema(Schema):
    """A Sling connection: `type` plus whatever properties Sling takes for it."""

    class Meta:
        unknown = "include"

    type = fields.String(required=True, validate=validate.Length(min=1))


class SlingSchema(_Strict):
    replication = fields.String(load_default="replication.yaml", validate=check.relative_path)
    connections = fields.Dict(
        keys=fields.String(validate=check.name),
        values=fields.Nested(SlingConnectionSchema),
        load_default=dict,
    )


class PipelineConfigSchema(_Strict):
    """One pipeline's `dagster.yaml`."""

    enabled = fields.Boolean(load_default=True)
    name = fields.String(validate=check.name)
    tool = fields.String(validate=validate.OneOf(["dlt", "sling"]))
    description = fields.String(load_default=None)
    group = fields.String(load_default=None, validate=check.name)
    group_name = fields.String(validate=check.name)  # the reference project's name for `group`
    owners = fields.List(fields.String(validate=check.owner), load_default=list)
    tags = fields.Dict(
        keys=fields.String(), values=fields.String(), load_default=dict, validate=check.tags
    )
    partitions = fields.Nested(PartitionsSchema, load_default=None)
    schedule = fields.Nested(ScheduleSchema, load_default=None)
    automation = fields.Nested(AutomationSchema, load_default=None)
    retries = fields.Integer(load_default=None, validate=validate.Range(min=0, max=100))
    retry_delay = fields.Float(load_default=None, validate=validate.Range(min=0))
    retry_policy = fields.Nested(RetryPolicySchema, load_default=None)
    kinds = fields.List(
        fields.String(validate=validate.Length(min=1, max=63)),
        load_default=list,
        validate=validate.Length(max=MAX_EXTRA_KINDS),
    )
    metadata = fields.List(fields.Nested(MetadataEntrySchema), load_default=list)
    dlt = fields.Nested(DltSchema, load_default=None)
    sling = fields.Nested(SlingSchema, load_default=None)

    @pre_load
    def _automation_shorthand(self, data: Any, **_: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("automation"), str):
            return {**data, "automation": {"condition": data["automation"]}}
        return data

    @validates_schema
    def _automation_fits_schedule(self, data: dict[str, Any], **_: Any) -> None:
        condition = (data.get("automation") or {}).get("condition")
        schedule = data.get("schedule") or {}
        scheduled = bool(schedule) and schedule.get("enabled", True)
        if condition == "on_cron" and not scheduled:
            raise ValidationError(
                "on_cron needs an enabled schedule with a cron_schedule", "automation.condition"
            )
        if condition == "on_cron" and schedule.get("mode") == "schedule":
            raise ValidationError(
                "on_cron and schedule.mode 'schedule' would both run the pipeline on its cron; "
                "pick one",
                "automation.condition",
            )
        ignoring = condition in ("eager", "on_missing", "none")
        if ignoring and scheduled and schedule.get("mode", "automation") == "automation":
            raise ValidationError(
                f"{condition!r} ignores schedule.cron_schedule {schedule.get('cron_schedule')!r}: "
                "use condition on_cron, set schedule.enabled: false, or schedule.mode: schedule "
                "to keep both",
                "automation.condition",
            )

    @validates_schema
    def _one_group(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("group") and data.get("group_name"):
            raise ValidationError("set group or group_name, not both", "group_name")

    @validates_schema
    def _tool_sections(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("dlt") and data.get("sling"):
            raise ValidationError(
                "a pipeline has either a dlt or a sling section, not both", "sling"
            )
        tool = data.get("tool")
        for section in ("dlt", "sling"):
            if tool and data.get(section) and tool != section:
                raise ValidationError(
                    f"only allowed when tool is {section!r}, not {tool!r}", section
                )
        if (
            data.get("retry_delay") is not None
            and data.get("retries") is None
            and not data.get("retry_policy")
        ):
            raise ValidationError("needs retries (or use retry_policy)", "retry_delay")
