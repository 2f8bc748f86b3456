"""dlt sources are listed by a few long-lived workers: dlt imported once, pipelines isolated."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from elt_repo.discovery.dlt_inspect import InspectError
from elt_repo.discovery.inspector_pool import (
    InspectorPool,
    close_shared_pools,
    list_resources,
    shared_pool,
)
from elt_repo.discovery.sandbox import Limits

# These tests are about the pool, not the sandbox (tests/discovery/test_sandbox.py): its
# workers may write the log, and each logs its keeper's pid, the process the pool started.
OFF = Limits(mode="off")
SOURCE = """
import os
from helpers import TABLE

with open(os.environ["PID_LOG"], "a") as log:
    log.write(f"{{os.getppid()}}\\n")

import dlt

@dlt.resource(table_name=TABLE)
def rows():
    yield {{"n": 1}}

@dlt.source
def src():
    print("a pipeline that prints to stdout while it is imported")
    return rows
"""


def pipeline(root: Path, name: str, table: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "helpers.py").write_text(f"TABLE = {table!r}\n")  # same module name in each folder
    (folder / "pipeline.py").write_text(SOURCE.format())
    return folder


def listed(pool: InspectorPool, folder: Path) -> list[str]:
    specs = list_resources(folder, "pipeline.py:src", {}, {}, 30, pool.env, pool)
    return [r.table_name for r in specs]


def test_one_worker_lists_many_pipelines_each_with_its_own_modules(tmp_path: Path) -> None:
    log = tmp_path / "pids.log"
    env = {**os.environ, "PID_LOG": str(log)}
    folders = [pipeline(tmp_path, f"p{i}", f"table_{i}") for i in range(4)]
    with InspectorPool(env, timeout=30, workers=1, limits=OFF) as pool:
        assert [listed(pool, f) for f in folders] == [[f"table_{i}"] for i in range(4)]
    pids = log.read_text().split()
    assert len(pids) == 4 and len(set(pids)) == 1  # four imports, one process


def test_a_hanging_or_crashing_pipeline_only_costs_its_own_worker(tmp_path: Path) -> None:
    env = {**os.environ, "PID_LOG": str(tmp_path / "pids.log")}
    hang = tmp_path / "hang"
    hang.mkdir()
    (hang / "pipeline.py").write_text("import time\ntime.sleep(60)\n")
    crash = tmp_path / "crash"
    crash.mkdir()
    (crash / "pipeline.py").write_text("import os\nos._exit(3)\n")
    good = pipeline(tmp_path, "good", "fine")
    with InspectorPool(env, timeout=5, workers=1, limits=OFF) as pool:
        with pytest.raises(InspectError, match="timed out after 5s"):
            listed(pool, hang)
        assert listed(pool, good) == ["fine"]
        with pytest.raises(InspectError, match="crashed: exit code 3"):
            listed(pool, crash)
        assert listed(pool, good) == ["fine"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child that was reaped is gone; one not yet reaped is a zombie: dead too.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ", 1)[1][0] != "Z"


def test_the_shared_pool_keeps_its_worker_warm_between_discoveries(tmp_path: Path) -> None:
    log = tmp_path / "pids.log"
    env = {**os.environ, "PID_LOG": str(log)}
    folder = pipeline(tmp_path, "p", "t")
    try:
        first = shared_pool(env, 30, 2, limits=OFF)
        assert listed(first, folder) == ["t"]
        again = shared_pool(env, 30, 2, limits=OFF)  # the next discovery in this process
        assert again is first and listed(again, folder) == ["t"]
        pids = log.read_text().split()
        assert len(pids) == 2 and len(set(pids)) == 1  # both imports in one warm worker
        (worker,) = first.started
        other = shared_pool(
            {**env, "SOME_VAR": "changed"}, 30, 2, limits=OFF
        )  # workers inherit env
        assert other is not first and not _wait_dead(worker.proc.pid)
    finally:
        close_shared_pools()


def _wait_dead(pid: int, within: float = 10.0) -> bool:
    """True if the process is still alive after `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _alive(pid):
            return False
        time.sleep(0.05)
    return True


def test_idle_workers_stop_and_the_pool_starts_a_new_one_when_asked(tmp_path: Path) -> None:
    log = tmp_path / "pids.log"
    env = {**os.environ, "PID_LOG": str(log)}
    folder = pipeline(tmp_path, "p", "t")
    pool = InspectorPool(env, timeout=30, workers=1, idle_seconds=0.5, limits=OFF)
    try:
        assert listed(pool, folder) == ["t"]
        (worker,) = pool.started
        assert not _wait_dead(worker.proc.pid)  # stopped after 0.5 s without a request
        assert pool.started == []
        assert listed(pool, folder) == ["t"]  # a new worker
        (fresh,) = pool.started
        assert fresh.proc.pid != worker.proc.pid and fresh.alive
    finally:
        pool.close()


def test_warm_starts_one_worker_ahead_that_the_next_request_uses(tmp_path: Path) -> None:
    log = tmp_path / "pids.log"
    env = {**os.environ, "PID_LOG": str(log)}
    folder = pipeline(tmp_path, "p", "t")
    with InspectorPool(env, timeout=30, workers=2, limits=OFF) as pool:
        pool.warm()
        (warmed,) = pool.started
        pool.warm()  # one is running already: nothing more
        assert pool.started == [warmed]
        assert listed(pool, folder) == ["t"]
        assert pool.started == [warmed] and log.read_text().split() == [str(warmed.proc.pid)]
