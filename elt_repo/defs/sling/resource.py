"""dagster-sling's resource with our connections, and Sling's private tool environment."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext
from dagster_sling import DagsterSlingTranslator, SlingConnectionResource, SlingResource

from elt_repo.defs.sling.stall import StallWatch
from elt_repo.discovery.sling_streams import connection_configs, filled_connection
from elt_repo.tool_env import sling_environment, without_own_secrets
from elt_repo.warehouse import Warehouse


def connection_resource(
    name: str, config: Mapping[str, Any], folder: Path
) -> SlingConnectionResource:
    """A Sling connection from config: `${VAR}` filled at run time, relative paths resolved."""
    filled = filled_connection(name, config, folder, os.environ)
    return SlingConnectionResource(name=name, **filled)


class EltSlingResource(SlingResource):
    """SlingResource with the settings' connections and a private HOME; a run adds the
    warehouse's (`for_pipeline`).

    The warehouse is not a field: a resource's config is stored with every run's job snapshot,
    and a Postgres URL may hold a literal password.
    """

    sling_state: str
    shared_connections: dict[str, Any] = {}
    stall_seconds: float = 300.0

    def prepare_environment(self) -> dict[str, Any]:
        return {**sling_environment(Path(self.sling_state)), **super().prepare_environment()}

    def for_pipeline(
        self, connections: Mapping[str, Any], folder: Path, warehouse: Warehouse
    ) -> EltSlingResource:
        """A copy with every connection a pipeline may name: warehouse, settings, its own."""
        if warehouse.is_duckdb:
            warehouse.file.parent.mkdir(parents=True, exist_ok=True)
        else:
            # A `${VAR}` that is not set fails here, naming ELT_WAREHOUSE; and from here on the
            # password is masked in whatever this process redacts (Sling's errors included).
            warehouse.resolved(os.environ)
        configs = connection_configs(connections, self.shared_connections, warehouse)
        return EltSlingResource(
            connections=[connection_resource(n, c, folder) for n, c in configs.items()],
            sling_state=self.sling_state,
            shared_connections=self.shared_connections,
            stall_seconds=self.stall_seconds,
        )

    def run_replication(
        self,
        context: AssetExecutionContext,
        config: Mapping[str, Any],
        translator: DagsterSlingTranslator,
        fetch_row_count: bool,
    ) -> list[Any]:
        """dagster-sling's materializations of one `sling run`, watched for the DuckDB writer's
        hang: a stalled run is killed and run once more; a second stall fails the step."""
        for attempt in (1, 2):
            binary = os.environ.get("SLING_BINARY", "sling")
            with StallWatch(binary, self.stall_seconds) as watch, without_own_secrets():
                try:
                    replicated = self.replicate(
                        context=context,
                        replication_config=copy.deepcopy(dict(config)),  # replicate() edits it
                        dagster_sling_translator=translator,
                    )
                    return list(replicated.fetch_row_count() if fetch_row_count else replicated)
                except Exception:
                    if not watch.stalled:
                        raise
            message = (
                f"Sling made no progress for {self.stall_seconds:g} s, its DuckDB CLI waiting "
                "on its input (a known hang of Sling's DuckDB writer), and was killed"
            )
            if attempt == 2:
                raise RuntimeError(
                    f"{message}, twice. If a source takes longer than that to answer, raise "
                    "ELT_SLING_STALL_SECONDS"
                )
            context.log.warning(f"{message}; running the replication once more")
        raise AssertionError("unreachable")
