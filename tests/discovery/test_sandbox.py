"""Pipeline code listed at discovery cannot harm the refresher: the workers' sandbox.

Each test lists a real pipeline in a real worker process. The hostile ones start `setsid`
children, kill their parent, write where they must not, allocate without end or spin.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from elt_repo.discovery.dlt_inspect import InspectError
from elt_repo.discovery.inspector_pool import InspectorPool, list_resources
from elt_repo.discovery.sandbox import Limits
from tests.conftest import PROJECT_DIR, running

RESOURCE = """
import dlt

@dlt.resource
def rows():
    yield {"n": 1}
"""


def folder_with(root: Path, name: str, code: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "pipeline.py").write_text(code + RESOURCE)
    return folder


def listing(pool: InspectorPool, folder: Path) -> list[str]:
    specs = list_resources(folder, "pipeline.py:rows", {}, {}, pool.timeout, pool.env, pool)
    return [s.table_name for s in specs]


def gone(marker: str, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while running(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not running(marker)


def daemons(marker: str) -> str:
    """Import-time code that leaves two processes behind: a `setsid` child, and a daemon that
    forked twice and left its parent (its marker is its argv, for `running`)."""
    return f"""
import os, subprocess, sys
SLEEP = [sys.executable, "-c", "import sys, time; print(sys.argv[1], file=sys.stderr); time.sleep(300)"]
subprocess.Popen([*SLEEP, "{marker}-setsid"], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [*SLEEP, "{marker}-daemon"])
    os._exit(0)
import time
time.sleep(1)  # both say they started
"""


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_nothing_a_listing_starts_outlives_it(tmp_path: Path, mode: str) -> None:
    marker = f"elt-sandbox-{uuid.uuid4().hex[:8]}"
    folder = folder_with(tmp_path, "p", daemons(marker))
    with InspectorPool(dict(os.environ), timeout=30, workers=1, limits=Limits(mode=mode)) as pool:
        assert listing(pool, folder) == ["rows"]
        (worker,) = pool.started
        assert worker.alive  # the worker stays warm for the next listing
        assert gone(marker), running(marker)
        started = {f"{marker}-setsid", f"{marker}-daemon"}
        assert started <= set(worker.stderr), worker.stderr  # both did run


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_a_listing_that_times_out_leaves_nothing_running(tmp_path: Path, mode: str) -> None:
    marker = f"elt-sandbox-{uuid.uuid4().hex[:8]}"
    folder = folder_with(tmp_path, "p", daemons(marker) + "import time\ntime.sleep(60)\n")
    with InspectorPool(dict(os.environ), timeout=3, workers=1, limits=Limits(mode=mode)) as pool:
        with pytest.raises(InspectError, match="timed out after 3s"):
            listing(pool, folder)
        assert gone(marker), running(marker)


def test_killing_its_parent_kills_nothing_that_matters(tmp_path: Path) -> None:
    """In its PID namespace the worker's parent is the namespace's init, which ignores it."""
    kill = folder_with(tmp_path, "kill", "import os\nos.kill(os.getppid(), 9)\n")
    good = folder_with(tmp_path, "good", "")
    with InspectorPool(dict(os.environ), timeout=30, workers=1) as pool:
        assert listing(pool, kill) == ["rows"]
        assert listing(pool, good) == ["rows"]


def test_without_namespaces_killing_its_parent_kills_only_the_keeper(tmp_path: Path) -> None:
    kill = folder_with(tmp_path, "kill", "import os\nos.kill(os.getppid(), 9)\n")
    good = folder_with(tmp_path, "good", "")
    off = Limits(mode="off")
    with InspectorPool(dict(os.environ), timeout=30, workers=1, limits=off) as pool:
        with pytest.raises(InspectError, match=r"crashed.*killed by SIGKILL"):
            listing(pool, kill)
        assert listing(pool, good) == ["rows"]  # a new worker; this process lives on


def test_pipeline_code_cannot_write_the_worktree_or_the_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    other = tmp_path / "worktree" / "other"
    other.mkdir(parents=True)
    (other / "pipeline.py").write_text("untouched\n")
    state.mkdir()
    targets = [other / "pipeline.py", other / "new.py", state / "manifest.json", tmp_path / "x"]
    code = f"""
import os, tempfile
refused = []
for path in {[str(t) for t in targets]!r}:
    try:
        with open(path, "w") as handle:
            handle.write("written by pipeline code")
    except OSError as exc:
        refused.append(exc.errno)
with tempfile.NamedTemporaryFile(dir=os.environ["TMPDIR"]) as scratch:  # scratch is writable
    scratch.write(b"fine")
assert refused == [30] * {len(targets)}, refused  # EROFS, each time
"""
    folder = folder_with(tmp_path / "worktree", "p", code)
    with InspectorPool(dict(os.environ), timeout=30, workers=1) as pool:
        assert listing(pool, folder) == ["rows"]
        assert pool.started[0].sandbox == "namespaces: own PID namespace, read-only mounts"
    assert (other / "pipeline.py").read_text() == "untouched\n"
    assert not (other / "new.py").exists() and not (tmp_path / "x").exists()
    assert sorted(os.listdir(state)) == []
    assert not list(folder.rglob("__pycache__"))  # not even bytecode


def test_a_memory_bomb_is_that_pipelines_error(tmp_path: Path) -> None:
    bomb = folder_with(tmp_path, "bomb", "junk = bytearray(3 * 1024**3)\n")
    good = folder_with(tmp_path, "good", "")
    limits = Limits(memory_mb=1024)
    with InspectorPool(dict(os.environ), timeout=30, workers=1, limits=limits) as pool:
        with pytest.raises(
            InspectError, match=r"memory limit of 1024 MiB \(ELT_DISCOVERY_MEMORY_MB"
        ):
            listing(pool, bomb)
        assert listing(pool, good) == ["rows"]


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_a_listing_past_its_cpu_time_limit_is_stopped(tmp_path: Path, mode: str) -> None:
    spin = folder_with(tmp_path, "spin", "while True:\n    pass\n")
    good = folder_with(tmp_path, "good", "")
    limits = Limits(cpu_seconds=2, mode=mode)
    with InspectorPool(dict(os.environ), timeout=30, workers=1, limits=limits) as pool:
        started = time.monotonic()
        with pytest.raises(InspectError, match=r"CPU-time limit of 2 s \(ELT_DISCOVERY_CPU_SEC"):
            listing(pool, spin)
        assert time.monotonic() - started < 15  # the limit stopped it, not the 30 s timeout
        assert listing(pool, good) == ["rows"]


REFUSED = """
import os, sys
from pathlib import Path
from elt_repo.discovery.dlt_inspect import InspectError
from elt_repo.discovery.inspector_pool import InspectorPool, list_resources
from elt_repo.discovery.sandbox import Limits

folder = Path(sys.argv[1])
for mode in ("auto", "required"):
    with InspectorPool(dict(os.environ), 30, workers=1, limits=Limits(mode=mode)) as pool:
        try:
            specs = list_resources(folder, "pipeline.py:rows", {}, {}, 30, pool.env, pool)
            print(mode, "listed", [s.table_name for s in specs], pool.started[0].sandbox)
        except InspectError as exc:
            print(mode, "error", exc)
"""


def test_where_the_kernel_refuses_namespaces_auto_keeps_the_limits_and_required_refuses(
    tmp_path: Path,
) -> None:
    """A user namespace whose own limit of user namespaces is 0: the kernel refuses `unshare`
    there, as under a container's seccomp profile."""
    folder = folder_with(tmp_path, "p", "")
    script = tmp_path / "refused.py"
    script.write_text(REFUSED)
    shell = (
        "echo 0 > /proc/sys/user/max_user_namespaces || exit 97; "
        f'exec "{sys.executable}" "{script}" "{folder}"'
    )
    out = subprocess.run(
        ["unshare", "--user", "--map-root-user", "sh", "-c", shell],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_DIR,
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
    )
    if out.returncode == 97 or "unshare failed" in out.stderr:
        pytest.skip(f"this machine cannot make a user namespace for the test: {out.stderr}")
    lines = out.stdout.splitlines()
    assert len(lines) == 2, out.stdout + out.stderr
    auto, required = lines
    assert auto.startswith("auto listed ['rows'] limits only: the kernel refused namespaces"), auto
    assert required.startswith("required error listing resources crashed"), required
    assert "no discovery sandbox" in required and "ELT_DISCOVERY_SANDBOX=required" in required
