#!/usr/bin/env python
"""Refresh the pipelines manifest, or validate a local pipelines folder.

Runs the same refresh() as the repo-polling sensor: fetch the repo, discover every pipeline,
validate it, and write the manifest that the code location loads.

exit codes:
  0  refreshed (or validated) with no errors
  1  some pipelines have errors (they are listed; every other pipeline still loads)
  2  bad usage or settings
  3  the repository could not be fetched; the previous manifest is kept
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from elt_repo.refresh import refresh, validate_folder
from elt_repo.settings import SettingsError, load_settings
from elt_repo.summary import render, summarize


def _sync_partitions(manifest) -> None:  # noqa: ANN001
    """With DAGSTER_HOME set, add and remove dynamic partitions as the sensor would."""
    from dagster import DagsterInstance

    from elt_repo.build.partitions import apply_partition_requests, dynamic_partition_requests

    with DagsterInstance.get() as instance:
        apply_partition_requests(instance, dynamic_partition_requests(manifest, instance))


def main(argv: list[str] | None = None) -> int:
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
    args = parser.parse_args(argv)
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
        code = 1 if summary["errors"] else 0
    else:
        result = refresh(settings)
        summary = summarize(result.manifest)
        if result.error is None and os.environ.get("DAGSTER_HOME"):
            _sync_partitions(result.manifest)
        code = 3 if result.error else 1 if summary["errors"] else 0
    print(json.dumps(summary, indent=2) if args.json else render(summary))
    return code


if __name__ == "__main__":
    sys.exit(main())
