"""The resources every deployment gets, chosen in one place."""

from __future__ import annotations

from typing import Any

from dagster_dlt import DagsterDltResource

from elt_repo.build.sling_resource import EltSlingResource
from elt_repo.settings import Settings


def build_resources(settings: Settings) -> dict[str, Any]:
    """dlt and Sling resources; connection secrets stay `${VAR}` until a run needs them."""
    return {
        "dlt": DagsterDltResource(),
        "sling": EltSlingResource(
            warehouse=str(settings.warehouse),
            sling_state=str(settings.sling_home),
            shared_connections={k: dict(v) for k, v in settings.connections.items()},
        ),
    }
