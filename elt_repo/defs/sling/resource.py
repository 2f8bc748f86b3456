"""dagster-sling's resource with our connections, and Sling's private tool environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster_sling import SlingConnectionResource, SlingResource

from elt_repo.discovery.sling_streams import connection_configs, filled_connection
from elt_repo.tool_env import sling_environment


def connection_resource(
    name: str, config: Mapping[str, Any], folder: Path
) -> SlingConnectionResource:
    """A Sling connection from config: `${VAR}` filled at run time, relative paths resolved."""
    filled = filled_connection(name, config, folder, os.environ)
    return SlingConnectionResource(name=name, **filled)


class EltSlingResource(SlingResource):
    """SlingResource with the warehouse connection, settings connections and a private HOME."""

    warehouse: str
    sling_state: str
    shared_connections: dict[str, Any] = {}

    def prepare_environment(self) -> dict[str, Any]:
        return {**sling_environment(Path(self.sling_state)), **super().prepare_environment()}

    def for_pipeline(self, connections: Mapping[str, Any], folder: Path) -> EltSlingResource:
        """A copy with every connection a pipeline may name: warehouse, settings, its own."""
        Path(self.warehouse).parent.mkdir(parents=True, exist_ok=True)
        configs = connection_configs(connections, self.shared_connections, self.warehouse)
        return EltSlingResource(
            connections=[connection_resource(n, c, folder) for n, c in configs.items()],
            warehouse=self.warehouse,
            sling_state=self.sling_state,
            shared_connections=self.shared_connections,
        )
