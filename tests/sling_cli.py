"""Plain `sling run` for tests that compare with it, watched for Sling's DuckDB-writer hang."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from elt_repo.defs.sling.stall import StallWatch
from elt_repo.tool_env import sling_binary

# The hang leaves the process tree idle; a test's tiny replications never are for this long.
STALL_SECONDS = 15


def run_sling(
    args: Sequence[str], env: Mapping[str, str], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """The Sling binary with `args`, run again once if it stalled (see elt_repo.defs.sling.stall)."""
    binary = sling_binary() or "sling"
    for _ in range(2):
        with StallWatch(binary, STALL_SECONDS) as watch:
            done = subprocess.run(
                [binary, *args],
                cwd=cwd,
                env=dict(env),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        if not watch.stalled:
            return done
    return done
