"""The repo-polling sensor: refresh the manifest, sync dynamic partitions, reload the location."""

from __future__ import annotations

import logging
import os
import threading

from dagster import (
    DefaultSensorStatus,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from elt_repo.build.partitions import dynamic_partition_requests
from elt_repo.manifest import Manifest
from elt_repo.refresh import refresh
from elt_repo.settings import Settings

log = logging.getLogger(__name__)
SENSOR_NAME = "elt_repo_refresh"


def manifest_fingerprint(manifest: Manifest | None) -> str:
    """What the loaded definitions were built from; a change means the location must reload."""
    if manifest is None:
        return ""
    data = manifest.to_dict()
    data.pop("discovered_at")
    return str(hash(repr(sorted(data.items()))))


def request_reload(location: str, url: str) -> None:
    """Ask the webserver to reload this code location, off the sensor's thread."""

    def _reload() -> None:
        try:
            from dagster_graphql import DagsterGraphQLClient

            host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
            client = DagsterGraphQLClient(host, port_number=int(port or 80), timeout=30)
            client.reload_repository_location(location)
        except Exception as exc:  # a missing webserver only delays the new assets
            log.warning("could not reload code location %s at %s: %s", location, url, exc)

    threading.Thread(target=_reload, name="elt-reload", daemon=True).start()


def repo_sensor(settings: Settings, loaded: Manifest | None) -> SensorDefinition:
    """Polls the pipelines repo every ELT_POLL_INTERVAL seconds."""
    loaded_fingerprint = manifest_fingerprint(loaded)

    @sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=settings.poll_interval,
        default_status=DefaultSensorStatus.RUNNING
        if settings.auto_refresh
        else DefaultSensorStatus.STOPPED,
        description="Pulls new commits of the pipelines repo and refreshes the manifest.",
    )
    def _sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        result = refresh(settings, known_commit=context.cursor or None)
        manifest = result.manifest
        for error in manifest.errors:
            context.log.warning(str(error))
        requests = dynamic_partition_requests(manifest, context.instance)
        reload = manifest_fingerprint(manifest) != loaded_fingerprint
        if reload:
            request_reload(
                os.environ.get("ELT_LOCATION_NAME", "elt_repo"),
                os.environ.get("ELT_WEBSERVER_URL", "http://127.0.0.1:3000"),
            )
        if result.error is not None:
            summary = f"refresh failed: {result.error}"
        elif result.skipped and not reload:
            summary = f"no new commit ({manifest.commit})"
        else:
            summary = (
                f"{manifest.commit}: {len(manifest.pipelines)} pipelines, "
                f"{len(manifest.errors)} errors{'; reloading' if reload else ''}"
            )
        context.log.info(summary)
        return SensorResult(
            dynamic_partitions_requests=requests,
            cursor=manifest.commit or context.cursor,
            skip_reason=None if requests else SkipReason(summary),
        )

    return _sensor
