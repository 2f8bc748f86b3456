"""Every benchmark runs once at a tiny size, so none of them rots. No time limit is checked."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import PROJECT_DIR

sys.path.insert(0, str(PROJECT_DIR / "bench"))
from run_all import BENCHMARKS  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("script", sorted(BENCHMARKS))
def test_benchmark_runs_at_a_tiny_size(script: str) -> None:
    out = subprocess.run(
        [sys.executable, "bench/run_all.py", "--tiny", script],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "(ratio to '" in out.stdout  # it reported ratios against its baseline
