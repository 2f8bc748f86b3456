"""Tiny timing helpers shared by the benchmarks: interleaved repeats, medians, ratios."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def measure(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time per case; cases run interleaved so machine noise hits them alike."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            started = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in samples.items()}


def report(title: str, medians: dict[str, float], baseline: str) -> None:
    """Print each median and its ratio to the baseline measured in the same run."""
    print(f"\n{title} (median; ratio to '{baseline}')")
    base = medians[baseline]
    for name, value in medians.items():
        print(f"  {name:<40} {value:8.3f} s   x{value / base:5.2f}")
