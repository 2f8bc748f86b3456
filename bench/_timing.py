"""Timing helpers shared by the benchmarks: interleaved repeats, median/min/max, peak RSS, ratios.

Also the smoke run's lanes: a benchmark's cases in several processes at once (see below)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Result:
    """Wall times of one case's repeats, and the highest RSS seen while any of them ran."""

    samples: list[float] = field(default_factory=list)
    peak_rss: int = 0  # bytes

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text()
            found.extend(int(child) for child in text.split())
    except OSError:  # the process ended while we looked
        pass
    return found


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def tree_rss(pid: int, include_self: bool = True) -> int:
    """RSS of a process and all its descendants, from /proc (bytes).

    A child that has forked but not yet exec'd still shows its parent's command line and
    memory; it is not counted, or every subprocess would briefly count its parent twice.
    """
    total = _rss(pid) if include_self else 0
    stack = [(child, pid) for child in _children(pid)]
    while stack:
        child, parent = stack.pop()
        if _cmdline(child) == _cmdline(parent):
            continue
        total += _rss(child)
        stack.extend((grandchild, child) for grandchild in _children(child))
    return total


class RssSampler:
    """Samples RSS every `interval` seconds in a thread and keeps the peak.

    scope="tree": this process plus its descendants (in-process cases);
    scope="children": only the descendants (cases that run a subprocess, so the benchmark's own
    interpreter does not count).
    """

    def __init__(self, scope: str = "tree", interval: float = 0.005) -> None:
        self.include_self = scope == "tree"
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        pid = os.getpid()
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(pid, self.include_self))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss(os.getpid(), self.include_self))


def measure(
    cases: dict[str, Callable[[], object]], repeats: int, rss: str = "tree"
) -> dict[str, Result]:
    """Time each case `repeats` times, interleaved so machine noise hits them alike.

    `rss` is the RssSampler scope: "tree" for cases that run in this process, "children" for
    cases that each run a subprocess.
    """
    results = {name: Result() for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            with RssSampler(rss) as sampler:
                started = time.perf_counter()
                fn()
                elapsed = time.perf_counter() - started
            results[name].samples.append(elapsed)
            results[name].peak_rss = max(results[name].peak_rss, sampler.peak)
    return results


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def report(title: str, results: dict[str, Result], baseline: str) -> None:
    """Print each case's median, min, max and peak RSS, with ratios to the same-run baseline."""
    base = results[baseline]
    print(f"\n{title} (ratio to '{baseline}'; {len(base.samples)} runs each)")
    print(
        f"  {'case':<52} {'median':>9} {'min':>9} {'max':>9} {'ratio':>6}"
        f" {'peak RSS':>10} {'RSS ratio':>9}"
    )
    for name, r in results.items():
        rss_ratio = f"x{r.peak_rss / base.peak_rss:.2f}" if base.peak_rss else "-"
        print(
            f"  {name:<52} {r.median:8.3f}s {r.min:8.3f}s {r.max:8.3f}s"
            f" x{r.median / base.median:5.2f} {mib(r.peak_rss):>10} {rss_ratio:>9}",
            flush=True,
        )


# --------------------------------------------------------------------------- lanes (smoke runs)
#
# `--lanes N` runs a benchmark as N processes of itself at once ("lanes"), each with its own
# setup in its own temp dir, measuring its share of the cases with `measure` as usual; the
# first process merges their results and reports as one run would. For the smoke run only:
# the lanes share the CPU, so the timings say nothing, but every case still runs its real path,
# and each lane's peak RSS still counts that lane's own subprocesses only.


def add_lane_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lanes",
        type=int,
        default=1,
        help="run the cases in this many processes at once, each with its own setup"
        " (for a smoke run: the timings then share the CPU)",
    )
    parser.add_argument("--lane", type=int, help=argparse.SUPPRESS)  # set in each lane
    parser.add_argument("--lane-out", type=Path, help=argparse.SUPPRESS)


def in_lane(cases: dict[str, T], groups: dict[str, int], args: argparse.Namespace) -> dict[str, T]:
    """This lane's share of `cases`: those whose group number falls to it (all, outside lanes).

    Cases that must run one after another on the same files share a group."""
    if args.lane is None:
        return cases
    return {name: fn for name, fn in cases.items() if groups[name] % args.lanes == args.lane}


def save_lane(args: argparse.Namespace, order: list[str], results: dict[str, Result], **extra):
    """Write this lane's results (`order`: every case's name, in the one-process order)."""
    data = {name: {"samples": r.samples, "peak_rss": r.peak_rss} for name, r in results.items()}
    args.lane_out.write_text(json.dumps({"order": order, "results": data, "extra": extra}))


def run_lanes(lanes: int) -> tuple[dict[str, Result], list[dict[str, Any]]]:
    """Start this script again as `lanes` processes at once (`--lane I`); wait for all of them.

    Returns the merged results, in the order one process would report them, and each lane's
    `extra`. Exits with the first failing lane's code."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop the lanes
    with tempfile.TemporaryDirectory(prefix="lanes_") as tmp:
        outs = [Path(tmp) / f"lane{i}.json" for i in range(lanes)]
        procs: list[subprocess.Popen] = []
        try:
            for lane, out in enumerate(outs):
                argv = [sys.executable, sys.argv[0], *sys.argv[1:]]
                procs.append(subprocess.Popen([*argv, "--lane", str(lane), "--lane-out", out]))
            codes = [proc.wait() for proc in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait()
        failed = [(lane, code) for lane, code in enumerate(codes) if code != 0]
        if failed:
            print(f"lanes failed (lane, exit code): {failed}", file=sys.stderr)
            sys.exit(failed[0][1])
        done = [json.loads(out.read_text()) for out in outs]
    merged = {name: r for lane in done for name, r in lane["results"].items()}
    results = {
        name: Result(samples=merged[name]["samples"], peak_rss=merged[name]["peak_rss"])
        for name in done[0]["order"]
    }
    return results, [lane["extra"] for lane in done]
