"""Frozen dataclasses that flow from discovery through the manifest into the build."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Tool = Literal["dlt", "sling"]


@dataclass(frozen=True)
class TimePartitionSpec:
    start: str
    end: str | None = None
    cron_schedule: str = "0 0 * * *"
    timezone: str = "UTC"
    fmt: str = "%Y-%m-%d"


@dataclass(frozen=True)
class StaticPartitionSpec:
    partition_keys: tuple[str, ...]


@dataclass(frozen=True)
class PartitionSpec:
    type: Literal["time", "static"]
    time: TimePartitionSpec | None = None
    static: StaticPartitionSpec | None = None
    max_partitions_per_run: int | None = None
    column: str | None = None  # counts each partition's rows in dagster/row_count


@dataclass(frozen=True)
class ScheduleSpec:
    cron_schedule: str
    enabled: bool = True
    timezone: str = "UTC"
    default_status: Literal["RUNNING", "STOPPED"] = "RUNNING"
    execution_timezone: str | None = None
    mode: Literal["automation", "schedule"] = "automation"


@dataclass(frozen=True)
class AutomationSpec:
    """Which declarative condition a pipeline's assets carry."""

    condition: Literal["on_cron", "eager", "on_missing", "none"] | None = None
    on_code_change: bool = False


@dataclass(frozen=True)
class RetrySpec:
    max_retries: int
    delay: float
    backoff: Literal["LINEAR", "EXPONENTIAL"] = "EXPONENTIAL"
    jitter: Literal["FULL", "PLUS_MINUS"] | None = "PLUS_MINUS"


@dataclass(frozen=True)
class MetadataEntrySpec:
    key: str
    value: Any
    type: Literal["text", "url", "path", "md", "json", "int", "float"] = "text"


@dataclass(frozen=True)
class DltResourceSpec:
    """One dlt resource as listed at discovery time."""

    name: str
    table_name: str
    write_disposition: str | None = None


@dataclass(frozen=True)
class DltSpec:
    source: str  # "file.py:function"
    args: Mapping[str, Any] = field(default_factory=dict)
    destination: str | None = None
    dataset_name: str | None = None
    partition_args: Mapping[str, str] = field(default_factory=dict)
    resources: tuple[DltResourceSpec, ...] = ()
    # "source": one asset per resource; "run": the reference project's `run()`, one asset.
    style: Literal["source", "run"] = "source"
    accepts_partition_key: bool = False

    @property
    def source_file(self) -> str:
        return self.source.partition(":")[0]

    @property
    def source_function(self) -> str:
        return self.source.partition(":")[2]


@dataclass(frozen=True)
class SlingStreamSpec:
    """One concrete Sling stream (as Sling names it) and the target table it lands in."""

    name: str  # e.g. "main.products" or "file://./data/customers.csv"
    table: str
    # The replication key it came from ("main.*"); "" in manifests older than this field.
    pattern: str = ""
    schema: str | None = None  # target schema; None in older manifests

    @property
    def replication_key(self) -> str:
        return self.pattern or self.name


@dataclass(frozen=True)
class SlingSpec:
    replication: str = "replication.yaml"
    connections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    streams: tuple[SlingStreamSpec, ...] = ()
    source: str = ""  # connection names, read from the replication at discovery
    target: str = "WAREHOUSE"


@dataclass(frozen=True)
class PipelineSpec:
    """A discovered, validated pipeline: the one type that carries a pipeline everywhere."""

    name: str
    tool: Tool
    folder: str  # relative to the repo root, e.g. "pipelines/github_issues"
    enabled: bool = True
    description: str | None = None
    group: str | None = None
    owners: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    partitions: PartitionSpec | None = None
    schedule: ScheduleSpec | None = None
    automation: AutomationSpec | None = None
    retry: RetrySpec | None = None
    kinds: tuple[str, ...] = ()
    metadata: tuple[MetadataEntrySpec, ...] = ()
    dlt: DltSpec | None = None
    sling: SlingSpec | None = None
    code_version: str = ""

    @property
    def group_name(self) -> str:
        return self.group or self.name
