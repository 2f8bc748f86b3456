"""The repo-polling sensor: refresh the manifest, sync dynamic partitions, reload the location."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from dagster import (
    AssetCheckEvaluation,
    AssetObservation,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from elt_repo.defs.assets import COMMIT_TAG
from elt_repo.defs.health import broken, check_evaluation, manifest_observation
from elt_repo.defs.manifest_copies import location_name, publish_quietly
from elt_repo.defs.partitions import dynamic_partition_requests
from elt_repo.defs.pools import sync_pools
from elt_repo.defs.reload import reload_location
from elt_repo.git.urls import redact_url
from elt_repo.manifest import Manifest
from elt_repo.redact import redact
from elt_repo.refresh import refresh
from elt_repo.settings import Settings

log = logging.getLogger(__name__)
SENSOR_NAME = "elt_repo_poll"
# Dagster gives a sensor tick 60 seconds; git, retries included, must be done well before.
TICK_BUDGET_SECONDS = 40.0
# A reload asked for and not yet seen (the webserver was down, say) is asked for again after this.
RELOAD_RETRY_SECONDS = 120.0
_ACTIVE = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


class RefreshFailed(Exception):
    """The repo could not be refreshed; the message is redacted and the last good state kept."""


def webserver_url() -> str | None:
    """Where reloads are asked for: ELT_WEBSERVER_URL, or None when it is not configured."""
    return os.environ.get("ELT_WEBSERVER_URL") or None


def request_reload(location: str, url: str) -> None:
    """Ask for a reload off the sensor's thread: a slow webserver never delays the tick."""

    def _reload() -> None:
        failure = reload_location(url, location, timeout=30)
        if failure:  # a missing webserver only delays the new assets; the next change asks again
            log.warning(
                "could not reload code location %s at %s: %s",
                location,
                redact_url(url),
                redact(failure),
            )

    threading.Thread(target=_reload, name="elt-reload", daemon=True).start()


def parse_cursor(raw: str | None) -> str | None:
    """The cursor is the last refreshed commit; older cursors were JSON with a `commit` key."""
    if not raw:
        return None
    if raw.startswith("{"):
        try:
            return json.loads(raw).get("commit")
        except ValueError:
            return None
    return raw


def commits_of_active_runs(context: SensorEvaluationContext) -> set[str]:
    """Commits that queued or running runs are pinned to: their worktrees must stay."""
    runs = context.instance.get_runs(RunsFilter(statuses=_ACTIVE), limit=1000)
    return {run.tags[COMMIT_TAG] for run in runs if run.tags.get(COMMIT_TAG)}


class ReloadTracker:
    """Remembers, across processes, which manifest a reload was last asked for, and when."""

    def __init__(self, path: Path):
        self.path = path

    def due(self, fingerprint: str) -> bool:
        try:
            last = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return True
        if last.get("fingerprint") != fingerprint:
            return True
        return time.time() - float(last.get("at", 0)) > RELOAD_RETRY_SECONDS

    def asked(self, fingerprint: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"fingerprint": fingerprint, "at": time.time()}))
        os.replace(tmp, self.path)


def _reload_note(manifest: Manifest, loaded: Manifest | None, tracker: ReloadTracker) -> str:
    """Ask for a reload when the definitions serve an older manifest; say what happened."""
    fingerprint = manifest.fingerprint()
    if loaded is not None and loaded.fingerprint() == fingerprint:
        return ""
    url = webserver_url()
    if url is None:
        return (
            "; reload needed: the code location still serves "
            f"{(loaded.commit or 'no commit')[:12] if loaded else 'no manifest'} "
            "(set ELT_WEBSERVER_URL, or reload the location in the UI)"
        )
    if not tracker.due(fingerprint):
        return "; reload already requested"
    request_reload(location_name(), url)
    tracker.asked(fingerprint)
    return f"; reloading {location_name()} at {redact_url(url)}"


def health_events(
    manifest: Manifest, reused: int | None = None
) -> list[AssetObservation | AssetCheckEvaluation]:
    """What a refresh reports to the instance: the manifest observation, and a failing
    `valid_config` evaluation for each broken pipeline."""
    return [manifest_observation(manifest, reused), *map(check_evaluation, broken(manifest))]


def repo_sensor(settings: Settings, loaded: Manifest | None) -> SensorDefinition:
    """Polls the pipelines repo every ELT_POLL_INTERVAL seconds.

    A tick with no new commit runs one `git ls-remote` and skips, unless pipelines whose tables
    come from their source are due (ELT_REDISCOVER_INTERVAL): then it resolves a batch of them
    again within its budget, with no fetch, and a change is a new manifest. A tick with a new commit
    fetches, re-discovers the changed pipeline folders, writes the manifest, returns the dynamic
    partition changes and asks the webserver to reload the code location. The cursor is the
    last refreshed commit. A failed refresh fails the tick with a redacted message; the previous
    manifest and all its assets stay, and the next tick tries again.
    """
    tracker = ReloadTracker(settings.state_dir / "reload.json")

    @sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=settings.poll_interval,
        default_status=DefaultSensorStatus.RUNNING
        if settings.auto_refresh
        else DefaultSensorStatus.STOPPED,
        description="Pulls new commits of the pipelines repo, refreshes the manifest, and "
        "reloads the code location.",
    )
    def _sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        known = parse_cursor(context.cursor)
        result = refresh(
            settings,
            known_commit=known,
            keep=commits_of_active_runs(context),
            deadline=time.monotonic() + TICK_BUDGET_SECONDS,
        )
        manifest = result.manifest
        # For runs in new containers; free when the copy is kept already (a skipped tick).
        publish_quietly(context.instance, manifest, location_name())
        note = _reload_note(manifest, loaded, tracker)
        if result.error is not None:
            raise RefreshFailed(
                redact(f"refresh failed, keeping {manifest.commit or 'nothing'}: {result.error}")
                + note
            )
        commit = manifest.commit or ""
        if result.skipped:
            return SkipReason(f"no new commit: {settings.repo_branch} is at {commit}{note}")
        for error in manifest.errors:
            context.log.warning(redact(str(error)))
        requests = dynamic_partition_requests(manifest, context.instance, result.previous)
        sync_pools(context.instance, manifest, settings)  # before any run claims them
        events = health_events(manifest, result.reused)
        again = (
            f", resolved again from their sources: {', '.join(result.resolved_again)}"
            if result.resolved_again
            else ""
        )
        summary = (
            f"{commit}: {len(manifest.pipelines)} pipelines, {len(manifest.errors)} errors, "
            f"{result.reused} folders unchanged{again}{note}"
        )
        context.log.info(summary)
        return SensorResult(
            dynamic_partitions_requests=requests,
            asset_events=events,
            cursor=commit or known,
            skip_reason=SkipReason(summary),  # no runs: the summary is what the tick shows
        )

    return _sensor
