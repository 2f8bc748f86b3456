"""What discovery concludes about a pipeline beyond its own files: whether its tables follow
its source, and whether its names clash with another pipeline's in the warehouse."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from elt_repo.discovery.layout import CONFIG_FILE
from elt_repo.discovery.sling_streams import is_wildcard
from elt_repo.schemas import ConfigError, PipelineSpec


def has_wildcards(replication: Mapping[str, Any]) -> bool:
    """Whether a replication has a stream Sling expands by asking the source."""
    streams = replication.get("streams")
    return isinstance(streams, Mapping) and any(
        is_wildcard(str(name), own if isinstance(own, Mapping) else {})
        for name, own in streams.items()
    )


def source_driven(spec: PipelineSpec, wildcards: bool) -> bool:
    """Whether a pipeline's tables can change with its source, not only with its files:
    a dlt source (its resources come from calling it), or a replication with `wildcards`."""
    if not spec.enabled:
        return False
    if spec.dlt is not None:
        return spec.dlt.style != "run"
    return spec.sling is not None and wildcards


def _warehouse_names(spec: PipelineSpec) -> list[tuple[str, str]]:
    """What a pipeline names in the warehouse, as (field, name): its name, its dlt dataset,
    the schemas of its Sling streams."""
    names = [("name", spec.name)]
    if spec.dlt is not None and spec.dlt.style != "run":
        names.append(("dlt.dataset_name", spec.dlt.dataset_name or spec.name))
    if spec.sling is not None:
        schemas = {stream.schema for stream in spec.sling.streams if stream.schema}
        names.extend(("streams.object", schema) for schema in sorted(schemas))
    return names


class CaseIndex:
    """The names pipelines use in the warehouse, by their lower case (one lookup a name).

    Two pipelines whose names, datasets or schemas differ only by case are an error: DuckDB
    folds them into one schema, and the two would write each other's tables.
    """

    def __init__(self) -> None:
        self.seen: dict[str, tuple[str, str, PipelineSpec]] = {}

    def clash(self, spec: PipelineSpec) -> ConfigError | None:
        """The error for `spec` if it clashes with a pipeline added before; else add it."""
        names = _warehouse_names(spec)
        for own_field, value in names:
            theirs, field_name, other = self.seen.get(value.lower(), (value, "", spec))
            if theirs != value:
                return ConfigError(
                    f"{spec.folder}/{CONFIG_FILE}",
                    own_field,
                    f"{value!r} differs only by case from {theirs!r} ({field_name} of "
                    f"{other.name} in {other.folder}); the warehouse would take them for one",
                    pipeline=spec.name,
                )
        for own_field, value in names:
            self.seen.setdefault(value.lower(), (value, own_field, spec))
        return None
