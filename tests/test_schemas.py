"""Every way a dagster.yaml can be wrong names the file and the field."""

from __future__ import annotations

import json

import pytest

from elt_repo.schemas import (
    ConfigException,
    DltResourceSpec,
    PipelineSpec,
    RetrySpec,
    load_pipeline_config,
    spec_from_config,
    spec_from_dict,
    spec_to_dict,
)

PATH = "pipelines/p/dagster.yaml"
DLT = {"source": "pipeline.py:src"}


def errors_of(raw: object) -> list[tuple[str, str]]:
    with pytest.raises(ConfigException) as info:
        load_pipeline_config(raw, PATH)
    assert all(e.path == PATH for e in info.value.errors)
    assert PATH in str(info.value)
    return [(e.field, e.message) for e in info.value.errors]


def timed(max_partitions_per_run: int | None = None, **time: str) -> dict:
    """A config with daily time partitions from 2024-01-01, changed by `time`."""
    partitions: dict = {"type": "time", "time": {"start": "2024-01-01", **time}}
    if max_partitions_per_run is not None:
        partitions["max_partitions_per_run"] = max_partitions_per_run
    return {"partitions": partitions}


def static(*keys: str, **extra: object) -> dict:
    return {"partitions": {"type": "static", "static": {"partition_keys": list(keys)}, **extra}}


BAD = [
    ({"bogus": 1}, "bogus", "Unknown field"),
    ({"enabled": "maybe"}, "enabled", "boolean"),
    ({"name": "has space"}, "name", "not a valid name"),
    ({"name": "9lives"}, "name", "not a valid name"),
    ({"tool": "airbyte"}, "tool", "Must be one of"),
    ({"group": "a-b"}, "group", "not a valid name"),
    ({"group": "a", "group_name": "b"}, "group_name", "set group or group_name, not both"),
    ({"owners": ["not an owner"]}, "owners.0", "email address or 'team:<name>'"),
    ({"owners": "a@b.com"}, "owners", "Not a valid list"),
    ({"tags": {"k": "has space"}}, "tags", "values must be"),
    ({"tags": {"bad key!": "v"}}, "tags", "tag key"),
    ({"tags": {"k": 3}}, "tags.k.value", "Not a valid string"),
    ({"partitions": {"type": "weekly"}}, "partitions.type", "Must be one of"),
    ({"partitions": {"enabled": True}}, "partitions.type", "required when partitions are enabled"),
    ({"partitions": {"type": "time"}}, "partitions.time", "required when type is 'time'"),
    ({"partitions": {"type": "static"}}, "partitions.static", "required when type is 'static'"),
    ({"partitions": {"type": "time", "time": {}}}, "partitions.time.start", "required"),
    (
        {"partitions": {"type": "time", "time": {"start": "2024-13-45"}}},
        "partitions.time.start",
        "does not match format",
    ),
    (
        {"partitions": {"type": "time", "time": {"start": "2024-02-01", "end": "2024-01-01"}}},
        "partitions.time.end",
        "must be after start",
    ),
    (
        {
            "partitions": {
                "type": "time",
                "time": {"start": "2024-01-01", "cron_schedule": "61 * * * *"},
            }
        },
        "partitions.time.cron_schedule",
        "not a valid 5-field cron",
    ),
    (
        {"partitions": {"type": "time", "time": {"start": "2024-01-01", "timezone": "Mars/Base"}}},
        "partitions.time.timezone",
        "not a known IANA timezone",
    ),
    (
        {"partitions": {"type": "time", "time": {"start": "2024-01-01", "extra": 1}}},
        "partitions.time.extra",
        "Unknown field",
    ),
    (
        {"partitions": {"type": "static", "static": {"partition_keys": []}}},
        "partitions.static.partition_keys",
        "Shorter than minimum",
    ),
    (
        {"partitions": {"type": "static", "static": {"partition_keys": ["a", "a"]}}},
        "partitions.static.partition_keys",
        "duplicate partition keys: a",
    ),
    (
        timed(cron_schedule="0 0 30 2 *"),
        "partitions.time.cron_schedule",
        "'0 0 30 2 *' never fires",
    ),
    ({"schedule": {"cron_schedule": "0 0 31 4 *"}}, "schedule.cron_schedule", "never fires"),
    (
        timed(fmt="%Y-%m"),
        "partitions.time.fmt",
        "'%Y-%m' does not round-trip: the window starting 2024-01-02 00:00 becomes key '2024-01'",
    ),
    (
        timed(cron_schedule="0 * * * *"),
        "partitions.time.fmt",
        "needs every field down to the schedule's period ('0 * * * *')",
    ),
    (timed(fmt="daily"), "partitions.time.fmt", "has no strftime directives"),
    (static("us", ""), "partitions.static.partition_keys.1", "must not be empty"),
    (static("a...b"), "partitions.static.partition_keys.0", "contains ..., which Dagster refuses"),
    (static("a\nb"), "partitions.static.partition_keys.0", "contains '\\n', which Dagster refuses"),
    (static(" us"), "partitions.static.partition_keys.0", "starts or ends with whitespace"),
    (
        static("a", max_partitions_per_run=3),
        "partitions.max_partitions_per_run",
        "only for time partitions",
    ),
    (
        timed(max_partitions_per_run=0),
        "partitions.max_partitions_per_run",
        "greater than or equal to 1",
    ),
    ({"automation": "sometimes"}, "automation.condition", "Must be one of"),
    ({"automation": {"on_code_change": "yes please"}}, "automation.on_code_change", "boolean"),
    ({"automation": "on_cron"}, "automation.condition", "needs an enabled schedule"),
    (
        {"automation": "on_cron", "schedule": {"cron_schedule": "0 2 * * *", "mode": "schedule"}},
        "automation.condition",
        "pick one",
    ),
    *(
        (
            {"automation": condition, "schedule": {"cron_schedule": "0 2 * * *"}},
            "automation.condition",
            f"{condition!r} ignores schedule.cron_schedule '0 2 * * *'",
        )
        for condition in ("eager", "on_missing", "none")
    ),
    (
        {"schedule": {"cron_schedule": "0 2 * * *", "mode": "cron"}},
        "schedule.mode",
        "Must be one of",
    ),
    (
        {"schedule": {"enabled": True}},
        "schedule.cron_schedule",
        "required when the schedule is enabled",
    ),
    (
        {"schedule": {"cron_schedule": "every day"}},
        "schedule.cron_schedule",
        "not a valid 5-field cron",
    ),
    (
        {"schedule": {"cron_schedule": "0 2 * * *", "timezone": "Nowhere"}},
        "schedule.timezone",
        "timezone",
    ),
    (
        {"schedule": {"cron_schedule": "0 2 * * *", "default_status": "ON"}},
        "schedule.default_status",
        "Must be one of",
    ),
    (
        {"schedule": {"cron_schedule": "0 2 * * *", "execution_timezone": "X"}},
        "schedule.execution_timezone",
        "timezone",
    ),
    ({"retries": -1}, "retries", "greater than or equal to 0"),
    ({"retries": "many"}, "retries", "Not a valid integer"),
    ({"retries": 1, "retry_delay": -5}, "retry_delay", "greater than or equal to 0"),
    ({"retry_delay": 5}, "retry_delay", "needs retries"),
    ({"retry_policy": {"delay": 1}}, "retry_policy.max_retries", "required"),
    (
        {"retry_policy": {"max_retries": 2, "backoff": "QUADRATIC"}},
        "retry_policy.backoff",
        "Must be one of",
    ),
    (
        {"retry_policy": {"max_retries": 2, "jitter": "SOME"}},
        "retry_policy.jitter",
        "Must be one of",
    ),
    ({"kinds": "github"}, "kinds", "Not a valid list"),
    ({"kinds": [f"k{i}" for i in range(9)]}, "kinds", "Longer than maximum"),
    (
        {"metadata": [{"key": "a", "value": "x", "type": "color"}]},
        "metadata.0.type",
        "Must be one of",
    ),
    (
        {"metadata": [{"key": "a", "value": "x", "type": "int"}]},
        "metadata.0.value",
        "not an integer",
    ),
    (
        {"metadata": [{"key": "a", "value": "x", "type": "float"}]},
        "metadata.0.value",
        "not a number",
    ),
    (
        {"metadata": [{"key": "a", "value": "{", "type": "json"}]},
        "metadata.0.value",
        "not valid JSON",
    ),
    (
        {"metadata": [{"key": "a", "value": "wiki", "type": "url"}]},
        "metadata.0.value",
        "not an http(s) URL",
    ),
    ({"metadata": [{"value": "x"}]}, "metadata.0.key", "required"),
    ({"dlt": {}}, "dlt.source", "required"),
    ({"dlt": {"source": "pipeline.py"}}, "dlt.source", "pipeline.py:function_name"),
    ({"dlt": {"source": "../x.py:f"}}, "dlt.source", "inside the pipeline folder"),
    ({"dlt": {"source": "/abs/x.py:f"}}, "dlt.source", "inside the pipeline folder"),
    ({"dlt": {**DLT, "args": []}}, "dlt.args", "Not a valid mapping"),
    ({"dlt": {**DLT, "dataset_name": "my-data"}}, "dlt.dataset_name", "not a valid name"),
    (
        {"dlt": {**DLT, "partition_args": {"middle": "x"}}},
        "dlt.partition_args.middle.key",
        "Must be one of",
    ),
    ({"dlt": {**DLT, "unknown": 1}}, "dlt.unknown", "Unknown field"),
    (
        {"sling": {"replication": "../../etc/passwd"}},
        "sling.replication",
        "inside the pipeline folder",
    ),
    (
        {"sling": {"connections": {"DB": {"instance": "x"}}}},
        "sling.connections.DB.value.type",
        "required",
    ),
    ({"tool": "sling", "dlt": DLT}, "dlt", "only allowed when tool is 'dlt'"),
    ({"dlt": DLT, "sling": {}}, "sling", "either a dlt or a sling section"),
]


@pytest.mark.parametrize(
    ("raw", "field", "message"), BAD, ids=[b[1] + ":" + b[2][:20] for b in BAD]
)
def test_each_error_names_its_field(raw: dict, field: str, message: str) -> None:
    found = errors_of(raw)
    assert any(f == field and message in m for f, m in found), found


def test_root_must_be_a_mapping() -> None:
    assert errors_of(["a", "b"]) == [("<root>", "must be a mapping of fields")]


def test_all_errors_are_reported_at_once() -> None:
    fields = {f for f, _ in errors_of({"retries": "x", "owners": ["?"], "bogus": 1})}
    assert fields == {"retries", "owners.0", "bogus"}


def test_full_contract_loads_with_defaults() -> None:
    config = load_pipeline_config(
        {
            "description": "d",
            "group": "github",
            "owners": ["data@example.com", "team:data-eng"],
            "tags": {"source": "github"},
            "partitions": {"type": "time", "time": {"start": "2024-01-01"}},
            "schedule": {"cron_schedule": "0 2 * * *"},
            "retries": 3,
            "retry_delay": 60,
            "dlt": DLT,
        },
        PATH,
    )
    spec = spec_from_config(
        config,
        name="p",
        tool="dlt",
        folder="pipelines/p",
        code_version="c",
        dlt_resources=(DltResourceSpec("issues", "issues", "merge"),),
    )
    assert spec.retry == RetrySpec(
        max_retries=3, delay=60, backoff="EXPONENTIAL", jitter="PLUS_MINUS"
    )
    assert (
        spec.partitions
        and spec.partitions.time
        and spec.partitions.time.cron_schedule == "0 0 * * *"
    )
    assert (
        spec.schedule
        and spec.schedule.timezone == "UTC"
        and spec.schedule.default_status == "RUNNING"
    )
    assert spec.dlt and spec.dlt.args == {} and spec.dlt.partition_args == {}


def test_retry_policy_overrides_retries() -> None:
    config = load_pipeline_config(
        {
            "retries": 5,
            "retry_delay": 1,
            "retry_policy": {"max_retries": 2, "delay": 9, "backoff": "LINEAR", "jitter": "FULL"},
        },
        PATH,
    )
    spec = spec_from_config(config, name="p", tool="sling", folder="f", code_version="c")
    assert spec.retry == RetrySpec(max_retries=2, delay=9, backoff="LINEAR", jitter="FULL")


def test_group_name_is_the_reference_spelling_of_group() -> None:
    config = load_pipeline_config({"group_name": "crm"}, PATH)
    spec = spec_from_config(config, name="p", tool="sling", folder="f", code_version="c")
    assert spec.group_name == "crm"


def test_disabled_sections_build_nothing() -> None:
    config = load_pipeline_config(
        {"partitions": {"enabled": False}, "schedule": {"enabled": False}}, PATH
    )
    spec = spec_from_config(config, name="p", tool="sling", folder="f", code_version="c")
    assert spec.partitions is None and spec.schedule is None and spec.retry is None


def test_spec_round_trips_through_json() -> None:
    config = load_pipeline_config(
        {
            "partitions": {"type": "static", "static": {"partition_keys": ["us", "eu"]}},
            "metadata": [{"key": "n", "value": 3, "type": "int"}],
            "retries": 1,
            "dlt": {**DLT, "args": {"a": [1, 2]}, "partition_args": {"key": "region"}},
        },
        PATH,
    )
    spec = spec_from_config(
        config,
        name="p",
        tool="dlt",
        folder="pipelines/p",
        code_version="c",
        dlt_resources=(DltResourceSpec("r", "t"),),
    )
    assert spec_from_dict(PipelineSpec, json.loads(json.dumps(spec_to_dict(spec)))) == spec


def test_spec_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="unknown fields"):
        spec_from_dict(RetrySpec, {"max_retries": 1, "delay": 0, "surprise": True})


@pytest.mark.parametrize(
    "raw",
    [
        {"automation": "eager", "schedule": {"cron_schedule": "0 2 * * *", "mode": "schedule"}},
        {"automation": "eager", "schedule": {"enabled": False}},
        {"automation": "on_cron", "schedule": {"cron_schedule": "0 2 * * *"}},
        {"automation": {"on_code_change": True}, "schedule": {"cron_schedule": "0 2 * * *"}},
    ],
)
def test_a_schedule_beside_automation_that_uses_or_keeps_it_loads(raw: dict) -> None:
    loaded = load_pipeline_config({"dlt": DLT, **raw}, PATH)
    assert loaded["schedule"] is not None and loaded["automation"] is not None
