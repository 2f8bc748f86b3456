"""What discovery concludes about a pipeline beyond its own files: whether its tables follow
its source, and whether its names clash with another pipeline's in the warehouse."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from elt_repo.discovery.layout import CONFIG_FILE
from elt_repo.discovery.safe_files import read_yaml
from elt_repo.discovery.sling_streams import is_wildcard
from elt_repo.schemas import ConfigError, ConfigException, PipelineSpec


def source_driven(folder: Path, spec: PipelineSpec) -> bool:
    """Whether a pipeline's tables can change with its source, not only with its files."""
    if not spec.enabled:
        return False
    if spec.dlt is not None:
        return spec.dlt.style != "run"  # its resources come from calling the source
    if spec.sling is None:
        return False
    try:
        config = read_yaml(folder / spec.sling.replication, folder, "", "")
    except ConfigException:
        return False
    streams = config.get("streams") if isinstance(config, Mapping) else None
    return isinstance(streams, Mapping) and any(
        is_wildcard(str(name), own if isinstance(own, Mapping) else {})
        for name, own in streams.items()
    )


def _warehouse_names(spec: PipelineSpec) -> dict[str, str]:
    """What a pipeline names in the warehouse, by field: its name, its dataset or schemas."""
    names = {"name": spec.name}
    if spec.dlt is not None and spec.dlt.style != "run":
        names["dlt.dataset_name"] = spec.dlt.dataset_name or spec.name
    if spec.sling is not None:
        for stream in spec.sling.streams:
            if stream.schema:
                names.setdefault("streams.object", stream.schema)
    return names


def case_clash(spec: PipelineSpec, others: Iterable[PipelineSpec]) -> ConfigError | None:
    """Two pipelines whose names, datasets or schemas differ only by case: DuckDB folds them
    into one schema, and the two would write each other's tables."""
    mine = _warehouse_names(spec)
    for other in others:
        for field_name, theirs in _warehouse_names(other).items():
            for own_field, value in mine.items():
                if value != theirs and value.lower() == theirs.lower():
                    return ConfigError(
                        f"{spec.folder}/{CONFIG_FILE}",
                        own_field,
                        f"{value!r} differs only by case from {theirs!r} ({field_name} of "
                        f"{other.name} in {other.folder}); the warehouse would take them for one",
                        pipeline=spec.name,
                    )
    return None
