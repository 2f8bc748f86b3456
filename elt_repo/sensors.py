"""The repo-polling sensor: refresh the manifest, sync dynamic partitions, reload the location."""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

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


def request_reload(location: str, url: str) -> None:
    """Ask the webserver to reload this code location, off the sensor's thread."""

    def _reload() -> None:
        try:
            from dagster_graphql import DagsterGraphQLClient

            parts = urlsplit(url)
            client = DagsterGraphQLClient(
                parts.hostname or "127.0.0.1",
                port_number=parts.port,
                use_https=parts.scheme == "https",
                path_prefix=parts.path.rstrip("/"),
                timeout=30,
            )
            client.reload_repository_location(location)
        except Exception as exc:  # a missing webserver only delays the new assets
            log.warning("could not reload code location %s at %s: %s", location, url, exc)

    threading.Thread(target=_reload, name="elt-reload", daemon=True).start()


@dataclass(frozen=True)
class Cursor:
    """The commit last refreshed, and the manifest fingerprint a reload was last asked for."""

    commit: str | None = None
    fingerprint: str | None = None

    @classmethod
    def parse(cls, raw: str | None) -> Cursor | None:
        if not raw:
            return None
        try:
            return cls(**json.loads(raw))
        except (ValueError, TypeError):
            return cls(commit=raw)  # a bare commit sha

    def dump(self) -> str:
        return json.dumps({"commit": self.commit, "fingerprint": self.fingerprint})


def repo_sensor(settings: Settings, loaded: Manifest | None) -> SensorDefinition:
    """Polls the pipelines repo every ELT_POLL_INTERVAL seconds."""
    loaded_fingerprint = loaded.fingerprint() if loaded else ""

    @sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=settings.poll_interval,
        default_status=DefaultSensorStatus.RUNNING
        if settings.auto_refresh
        else DefaultSensorStatus.STOPPED,
        description="Pulls new commits of the pipelines repo and refreshes the manifest.",
    )
    def _sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        cursor = Cursor.parse(context.cursor)
        result = refresh(settings, known_commit=cursor.commit if cursor else None)
        manifest = result.manifest
        for error in manifest.errors:
            context.log.warning(str(error))
        requests = dynamic_partition_requests(manifest, context.instance)
        # Each process evaluating the sensor loaded its own definitions; the cursor remembers the
        # last manifest a reload was asked for, so one change asks for one reload.
        reloaded = cursor.fingerprint if cursor and cursor.fingerprint else loaded_fingerprint
        fingerprint = manifest.fingerprint()
        reload = fingerprint != reloaded
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
            cursor=Cursor(
                commit=manifest.commit or (cursor.commit if cursor else None),
                fingerprint=fingerprint,
            ).dump(),
            skip_reason=None if requests else SkipReason(summary),
        )

    return _sensor
