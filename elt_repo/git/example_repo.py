"""The embedded default: `examples/pipelines` committed into a local Git repo under the state dir."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from elt_repo.settings import EXAMPLES_DIR

_IDENTITY = ["-c", "user.name=elt_repo", "-c", "user.email=elt_repo@localhost"]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *_IDENTITY, "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def ensure_example_repo(
    repo: Path, pipelines_dir: str = "pipelines", source: Path = EXAMPLES_DIR
) -> str:
    """Create or update the example repo so `pipelines_dir` mirrors `source`; returns HEAD."""
    if not (repo / ".git").is_dir():
        repo.mkdir(parents=True, exist_ok=True)
        _git(repo, "init", "--quiet", "--initial-branch=main")
    target = repo / pipelines_dir
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _git(repo, "add", "--all")
    if _git(repo, "status", "--porcelain").strip():
        _git(repo, "commit", "--quiet", "-m", f"Sync {pipelines_dir}/ from examples/pipelines")
    return _git(repo, "rev-parse", "HEAD").strip()
