"""Layer 2: marshmallow schemas to frozen dataclasses, and errors as data."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any

from marshmallow import ValidationError

from elt_repo.schemas.errors import ConfigError, ConfigException, config_error, flatten_messages
from elt_repo.schemas.pipeline import PipelineConfigSchema
from elt_repo.schemas.specs import (
    AutomationSpec,
    DltResourceSpec,
    DltSpec,
    MetadataEntrySpec,
    PartitionSpec,
    PipelineSpec,
    RetrySpec,
    ScheduleSpec,
    SlingSpec,
    SlingStreamSpec,
    StaticPartitionSpec,
    TimePartitionSpec,
    Tool,
)

__all__ = [
    "AutomationSpec",
    "ConfigError",
    "ConfigException",
    "DltResourceSpec",
    "DltSpec",
    "MetadataEntrySpec",
    "PartitionSpec",
    "PipelineSpec",
    "RetrySpec",
    "ScheduleSpec",
    "SlingSpec",
    "SlingStreamSpec",
    "StaticPartitionSpec",
    "TimePartitionSpec",
    "config_error",
    "load_pipeline_config",
    "spec_from_config",
    "spec_from_dict",
    "spec_to_dict",
]


def load_pipeline_config(raw: Any, path: str) -> dict[str, Any]:
    """Validate a parsed `dagster.yaml`; raise ConfigException naming each bad field."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigException([ConfigError(path, "<root>", "must be a mapping of fields")])
    try:
        return PipelineConfigSchema().load(raw)
    except ValidationError as exc:
        raise ConfigException(
            ConfigError(path, field, message) for field, message in flatten_messages(exc.messages)
        ) from None


def _retry(config: Mapping[str, Any]) -> RetrySpec | None:
    if config.get("retry_policy"):
        return RetrySpec(**config["retry_policy"])
    if config.get("retries"):
        return RetrySpec(max_retries=config["retries"], delay=config.get("retry_delay") or 0)
    return None


def _partitions(config: Mapping[str, Any] | None) -> PartitionSpec | None:
    if not config or not config.get("enabled", True):
        return None
    if config["type"] == "time":
        return PartitionSpec(
            type="time",
            time=TimePartitionSpec(**config["time"]),
            max_partitions_per_run=config.get("max_partitions_per_run"),
            column=config.get("column"),
        )
    keys = tuple(config["static"]["partition_keys"])
    return PartitionSpec(
        type="static", static=StaticPartitionSpec(partition_keys=keys), column=config.get("column")
    )


def spec_from_config(
    config: Mapping[str, Any],
    *,
    name: str,
    tool: Tool,
    folder: str,
    code_version: str,
    dlt_resources: tuple[DltResourceSpec, ...] = (),
    sling_streams: tuple[SlingStreamSpec, ...] = (),
    sling_endpoints: tuple[str, str] = ("", "WAREHOUSE"),
) -> PipelineSpec:
    """Turn a validated config plus what discovery found into a PipelineSpec."""
    schedule = config.get("schedule")
    dlt = config.get("dlt")
    sling = config.get("sling") or ({} if tool == "sling" else None)
    return PipelineSpec(
        name=config.get("name") or name,
        tool=tool,
        folder=folder,
        enabled=config.get("enabled", True),
        description=config.get("description"),
        group=config.get("group") or config.get("group_name"),
        owners=tuple(config.get("owners", ())),
        tags=dict(config.get("tags", {})),
        partitions=_partitions(config.get("partitions")),
        schedule=ScheduleSpec(**schedule) if schedule and schedule.get("enabled", True) else None,
        automation=AutomationSpec(**config["automation"]) if config.get("automation") else None,
        retry=_retry(config),
        kinds=tuple(config.get("kinds", ())),
        metadata=tuple(MetadataEntrySpec(**m) for m in config.get("metadata", ())),
        dlt=DltSpec(**dlt, resources=dlt_resources) if dlt is not None else None,
        sling=SlingSpec(
            **sling, streams=sling_streams, source=sling_endpoints[0], target=sling_endpoints[1]
        )
        if sling is not None
        else None,
        code_version=code_version,
    )


# A spec read from a manifest remembers the dict it was read from: most specs of a new manifest
# are reused from the previous one, and converting 1000 of them back to dicts took 0.15 s.
_AS_DICT = "_elt_as_dict"


def spec_to_dict(spec: PipelineSpec) -> dict[str, Any]:
    """A JSON-ready dict of a spec (tuples become lists). Do not mutate it: it may be cached."""
    cached = vars(spec).get(_AS_DICT)
    return cached if cached is not None else dataclasses.asdict(spec)


def spec_from_manifest(data: dict[str, Any]) -> PipelineSpec:
    """A PipelineSpec from its `spec_to_dict` form, which it keeps for `spec_to_dict`."""
    spec = spec_from_dict(PipelineSpec, data)
    object.__setattr__(spec, _AS_DICT, data)  # frozen: not a field, so eq and hash ignore it
    return spec


def _convert(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(non_none[0], value) if len(non_none) == 1 else value
    if dataclasses.is_dataclass(tp):
        return spec_from_dict(tp, value)  # type: ignore[arg-type]
    if origin is tuple:
        (item, *_rest) = typing.get_args(tp)
        return tuple(_convert(item, v) for v in value)
    return value


@functools.cache
def _fields_of(cls: type) -> tuple[dict[str, Any], frozenset[str]]:
    """A dataclass's resolved type hints and field names (resolving them is slow: cache it)."""
    return typing.get_type_hints(cls), frozenset(f.name for f in dataclasses.fields(cls))


def spec_from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuild a spec dataclass (and its nested specs) from `spec_to_dict` output."""
    hints, known = _fields_of(cls)
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    return cls(**{k: _convert(hints[k], v) for k, v in data.items()})
