"""The refresh summary that refresh.py prints, as text or JSON."""

from __future__ import annotations

from collections import Counter
from typing import Any

from elt_repo.discovery.walk import Discovery
from elt_repo.manifest import Manifest


def summarize(
    found: Manifest | Discovery, *, commit: str | None = None, url: str | None = None
) -> dict[str, Any]:
    """Commit, pipelines per tool, the disabled ones and every error."""
    if isinstance(found, Manifest):
        commit, url = found.commit, found.url
    return {
        "commit": commit,
        "url": url,
        "pipelines": sorted(p.name for p in found.pipelines),
        "per_tool": dict(sorted(Counter(p.tool for p in found.pipelines).items())),
        "disabled": sorted(d.name for d in found.disabled),
        "errors": [e.to_dict() for e in found.errors],
    }


def render(summary: dict[str, Any]) -> str:
    """Human-readable lines; each error as `path: field: message`."""
    lines = []
    if summary.get("url"):
        lines.append(f"repo:      {summary['url']}")
    if summary.get("commit"):
        lines.append(f"commit:    {summary['commit']}")
    tools = ", ".join(f"{n} {t}" for t, n in summary["per_tool"].items()) or "none"
    lines.append(f"pipelines: {len(summary['pipelines'])} ({tools})")
    for name in summary["pipelines"]:
        lines.append(f"  - {name}")
    lines.append(f"disabled:  {', '.join(summary['disabled']) or 'none'}")
    lines.append(f"errors:    {len(summary['errors'])}")
    lines.extend(f"  {e['path']}: {e['field']}: {e['message']}" for e in summary["errors"])
    if "partitions" in summary:  # refresh.py --sync-partitions
        changes = [
            f"{name} +{len(change['added'])} -{len(change['removed'])}"
            for name, change in summary["partitions"].items()
        ]
        lines.append(f"partitions: {', '.join(changes) or 'unchanged'}")
    if "reload" in summary:  # refresh.py --reload
        reload = summary["reload"]
        outcome = f"failed: {reload['error']}" if reload["error"] else "done"
        lines.append(f"reload:    {reload['location']} at {reload['url']}: {outcome}")
    return "\n".join(lines)
