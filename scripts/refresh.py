#!/usr/bin/env python
"""Refresh the pipelines manifest, or validate a local pipelines folder.

Runs the same refresh() as the repo-polling sensor, under the same lock: fetch the repo, discover
every pipeline, validate it, and write the manifest that the code location loads. Fetch progress
goes to stderr (--quiet hides it); stdout holds only the summary.

exit codes:
  0  refreshed (or validated) with no errors
  1  some pipelines have errors (they are listed; every other pipeline still loads)
  2  bad usage or settings
  3  the repository could not be fetched; the previous manifest is kept
  4  refreshed, but the webserver did not reload the code location (--reload)
  5  elt_repo itself failed (a full disk, an I/O error, a bug): one line on stderr, no
     traceback; the previous manifest is kept
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from elt_repo.cli.summary import render, summarize
from elt_repo.defs.reload import reload_location
from elt_repo.defs.sensors import health_events
from elt_repo.git.source import fetch_progress
from elt_repo.git.urls import redact_url
from elt_repo.manifest import Manifest
from elt_repo.redact import redact
from elt_repo.refresh import StateError, refresh, validate_folder
from elt_repo.settings import Settings, SettingsError, load_settings, read_dotenv

# "Receiving objects:  45% (450/1000)", "remote: Counting objects: 100% (5/5), done."
_PROGRESS = re.compile(r"(?P<phase>.*?):\s+\d")


class UsageError(Exception):
    """A flag that cannot work with the current environment: exit 2."""


class ProgressPrinter:
    """Prints git's progress lines: per phase at most one a second, and the final one."""

    def __init__(
        self,
        stream: TextIO,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream, self.interval, self.clock = stream, interval, clock
        self._last: dict[str, float] = {}  # phase -> when it was first seen or last printed

    def __call__(self, line: str) -> None:
        match = _PROGRESS.match(line)
        if match is None:
            return  # not progress: ref updates and the like
        phase, now = match["phase"], self.clock()
        final = line.rstrip(".").endswith("done")
        last = self._last.setdefault(phase, now)
        if final or now - last >= self.interval:
            self._last[phase] = now
            print(line, file=self.stream, flush=True)


def _webserver(settings: Settings) -> tuple[str, str]:
    """The webserver URL and the code location name that --reload uses (environment, `.env`)."""
    env = {**read_dotenv(settings.project_dir / ".env"), **os.environ}
    url = env.get("ELT_WEBSERVER_URL", "").strip()
    if not url:
        raise UsageError(
            "--reload needs ELT_WEBSERVER_URL, the webserver's address (http://127.0.0.1:3000)"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"ELT_WEBSERVER_URL: expected http(s)://host[:port][/prefix], got {redact_url(url)!r}"
        )
    return url, env.get("ELT_LOCATION_NAME", "").strip() or "elt_repo"


def _instance() -> Any:
    """The Dagster instance in $DAGSTER_HOME that --sync-partitions updates.

    Opened before the refresh, so a missing or broken instance changes nothing.
    """
    home = os.environ.get("DAGSTER_HOME", "").strip()
    if not home:
        raise UsageError("--sync-partitions needs DAGSTER_HOME, the Dagster instance's folder")
    if not Path(home).is_absolute() or not Path(home).is_dir():
        raise UsageError(f"DAGSTER_HOME: {home} is not an absolute path to a folder")
    from dagster import DagsterInstance

    try:
        return DagsterInstance.get()
    except Exception as exc:  # e.g. an invalid dagster.yaml there
        detail = " ".join(str(exc).split())[:500]
        message = f"DAGSTER_HOME: cannot open the Dagster instance in {home}: {detail}"
        raise UsageError(message) from None


def _sync_partitions(
    instance: Any, manifest: Manifest, previous: Manifest | None
) -> dict[str, dict[str, list[str]]]:
    """Add and remove dynamic partitions as the sensor would; what changed, per name."""
    from dagster import AddDynamicPartitionsRequest

    from elt_repo.defs.partitions import apply_partition_requests, dynamic_partition_requests

    requests = dynamic_partition_requests(manifest, instance, previous)
    apply_partition_requests(instance, requests)
    changes: dict[str, dict[str, list[str]]] = {}
    for request in requests:
        change = changes.setdefault(request.partitions_def_name, {"added": [], "removed": []})
        kind = "added" if isinstance(request, AddDynamicPartitionsRequest) else "removed"
        change[kind].extend(request.partition_keys)
    return changes


def _refresh(
    settings: Settings,
    quiet: bool,
    instance: Any,
    webserver: tuple[str, str] | None,
    force: bool = False,
) -> tuple[dict[str, Any], int]:
    """Refresh; then, if it fetched, sync partitions and reload as asked: summary, exit code."""
    with fetch_progress(None if quiet else ProgressPrinter(sys.stderr)):
        result = refresh(settings, force=force)
    summary = summarize(result.manifest)
    code = 3 if result.error else 1 if summary["errors"] else 0
    if result.error is None and instance is not None:
        from elt_repo.defs.pools import sync_pools

        summary["partitions"] = _sync_partitions(instance, result.manifest, result.previous)
        sync_pools(instance, result.manifest, settings)  # before any run claims them
        for event in health_events(result.manifest, result.reused):  # as the sensor reports them
            instance.report_runless_asset_event(event)
    if result.error is None and webserver is not None:
        url, location = webserver
        failure = reload_location(url, location)
        summary["reload"] = {"location": location, "url": redact_url(url), "error": failure}
        if failure is not None:
            where = f"code location {location!r} at {redact_url(url)}"
            print(f"error: could not reload {where}: {failure}", file=sys.stderr)
            code = 4
    return summary, code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--validate",
        metavar="PATH",
        type=Path,
        help="validate a local pipelines folder (or a repo checkout) without Git; changes nothing",
    )
    parser.add_argument(
        "--sync-partitions",
        action="store_true",
        help="add and remove static partition keys in the Dagster instance in $DAGSTER_HOME, "
        "create the pipelines' concurrency pools, and record the elt_repo/manifest observation "
        "and failing valid_config checks (what the sensor does; for deployments without it)",
    )
    parser.add_argument(
        "--reload",
        action="store_true",
        help="after the refresh, ask the webserver at $ELT_WEBSERVER_URL to reload the code location "
        "$ELT_LOCATION_NAME (default elt_repo)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="discover every pipeline folder again, also those whose Git tree is unchanged "
        "(after a change outside Git: a source's new tables, a driver installed)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print no fetch progress on stderr"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except StateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 5
    except Exception as exc:  # no traceback for any input: one redacted line instead
        detail = redact(str(exc)).strip().splitlines()
        print(
            f"error: elt_repo failed: {type(exc).__name__}: {detail[0] if detail else ''} "
            "(the previous manifest is kept)",
            file=sys.stderr,
        )
        return 5


def _main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.validate is not None and args.force:
        parser.error("--validate always discovers every folder: it takes no --force")
    if args.validate is not None and (args.reload or args.sync_partitions):
        parser.error("--validate changes nothing: it takes neither --reload nor --sync-partitions")
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if args.validate is not None:
        if not args.validate.is_dir():
            print(f"error: --validate: {args.validate} is not a folder", file=sys.stderr)
            return 2
        summary = summarize(validate_folder(args.validate, settings.pipelines_dir, settings))
        print(json.dumps(summary, indent=2) if args.json else render(summary))
        return 1 if summary["errors"] else 0

    with ExitStack() as stack:
        try:
            webserver = _webserver(settings) if args.reload else None
            instance = stack.enter_context(_instance()) if args.sync_partitions else None
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        summary, code = _refresh(settings, args.quiet, instance, webserver, args.force)
    print(json.dumps(summary, indent=2) if args.json else render(summary))
    return code


if __name__ == "__main__":
    sys.exit(main())
