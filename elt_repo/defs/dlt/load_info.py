"""Run metadata from what a reference-style `run()` returned: dlt's LoadInfo, or anything else."""

from __future__ import annotations

from typing import Any

from dagster import Failure, MetadataValue


def _row_counts(info: Any) -> dict[str, int]:
    trace = getattr(info.pipeline, "last_trace", None)
    normalize = getattr(trace, "last_normalize_info", None) if trace else None
    counts = dict(getattr(normalize, "row_counts", None) or {})
    return {table: n for table, n in sorted(counts.items()) if not table.startswith("_dlt")}


def rows_loaded(info: Any) -> int:
    """The rows of every table this load wrote, dlt's own tables apart."""
    return sum(_row_counts(info).values())


def failed_jobs(info: Any) -> list[dict[str, str]]:
    """Every failed job of every load package: table, file and dlt's message."""
    return [
        {
            "load_id": package.load_id,
            "table": job.job_file_info.table_name,
            "file": job.job_file_info.file_name(),
            "message": str(job.failed_message or "").strip().splitlines()[0][:500]
            if job.failed_message
            else "",
        }
        for package in info.load_packages
        for job in package.jobs.get("failed_jobs", [])
    ]


def load_info_metadata(info: Any) -> dict[str, Any]:
    """The dlt metadata vocabulary: rows per table, timing, destination. Failed jobs fail the run."""
    failed = failed_jobs(info)
    if failed:
        tables = ", ".join(sorted({f["table"] for f in failed}))
        raise Failure(
            description=f"dlt reported {len(failed)} failed job(s) for {tables}: {failed[0]['message']}",
            metadata={"failed_jobs": MetadataValue.json(failed)},
        )
    counts = _row_counts(info)
    data = info.asdict()
    return {
        "elt/rows_by_table": MetadataValue.json(counts),
        "tables": MetadataValue.text(", ".join(counts) or "none"),
        "dataset_name": str(info.dataset_name),
        "destination_name": str(info.destination_name),
        "destination_type": str(info.destination_type),
        "first_run": bool(info.first_run),
        "started_at": str(data.get("started_at") or ""),
        "finished_at": str(data.get("finished_at") or ""),
        "load_ids": MetadataValue.json(list(info.loads_ids)),
    }


def other_result_metadata(result: Any) -> dict[str, Any]:
    """What can be said of a run() that returned something other than a LoadInfo."""
    meta: dict[str, Any] = {"elt/return_type": type(result).__name__}
    if result is not None:
        meta["elt/return_value"] = MetadataValue.text(repr(result)[:1000])
    return meta
