"""The resources every deployment gets, chosen in one place."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dagster import ConfigurableResource

from elt_repo.defs.sling.resource import EltSlingResource
from elt_repo.settings import Settings


class DltResource(ConfigurableResource):
    """dagster-dlt's `DagsterDltResource`, imported when a run first needs it.

    Loading the code location then imports neither dlt nor dagster-dlt (about 0.3 s and 28 MiB
    per process, measured by bench/bench_definitions.py); only runs of dlt pipelines do.
    """

    def run(self, **kwargs: Any) -> Iterator[Any]:
        from dagster_dlt import DagsterDltResource

        return DagsterDltResource().run(**kwargs)


def build_resources(settings: Settings) -> dict[str, Any]:
    """dlt and Sling resources; connection secrets stay `${VAR}` until a run needs them."""
    return {
        "dlt": DltResource(),
        "sling": EltSlingResource(
            sling_state=str(settings.sling_home),
            shared_connections={k: dict(v) for k, v in settings.connections.items()},
            stall_seconds=settings.sling_stall_seconds,
        ),
    }
