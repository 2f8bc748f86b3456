"""The watchdog for Sling's DuckDB-writer hang: a stalled Sling is killed, a busy one is not."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import AssetSpec, materialize, multi_asset
from dagster_sling import DagsterSlingTranslator

from elt_repo.defs.sling.resource import EltSlingResource
from elt_repo.defs.sling.stall import StallWatch
from elt_repo.tool_env import sling_binary

# What the hang looks like: Sling idle, and the DuckDB CLI it started blocked reading its stdin.
STALLED = """
import subprocess, sys, time
child = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
print("streaming data", flush=True)
time.sleep(600)
"""
# A long COPY: busy, its child blocked on a pipe all the same.
BUSY = """
import subprocess, time
child = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
end = time.time() + 600
while time.time() < end:
    pass
"""
# Waiting on a slow source: idle, but no child waiting for input.
WAITING = "import time\ntime.sleep(600)\n"


def fake_sling(tmp_path: Path, body: str, name: str = "sling-fake") -> Path:
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


def watched(binary: Path, seconds: float, sling: str | None = None) -> tuple[bool, bool, float]:
    """Run `binary` under a watch for Sling at `sling` (default: `binary`) for at most
    `seconds`: (killed, stalled flag, time taken)."""
    started = time.monotonic()
    with StallWatch(sling or str(binary), stall_seconds=2, poll_seconds=0.2) as watch:
        proc = subprocess.Popen([str(binary)], stdout=subprocess.DEVNULL)
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return False, watch.stalled, time.monotonic() - started
    return True, watch.stalled, time.monotonic() - started


def test_a_stalled_sling_is_killed_with_its_child(tmp_path: Path) -> None:
    killed, stalled, took = watched(fake_sling(tmp_path, STALLED), 15)
    assert killed and stalled and took < 10
    time.sleep(0.5)
    cats = subprocess.run(["pgrep", "-P", str(os.getpid()), "cat"], capture_output=True)
    assert cats.stdout == b""


@pytest.mark.parametrize("body", [BUSY, WAITING], ids=["busy", "waiting_for_the_source"])
def test_a_working_or_waiting_sling_is_left_alone(tmp_path: Path, body: str) -> None:
    killed, stalled, _ = watched(fake_sling(tmp_path, body), 5)
    assert not killed and not stalled


def test_other_programs_are_not_watched(tmp_path: Path) -> None:
    worker = fake_sling(tmp_path, STALLED, name="dlt-worker")
    killed, stalled, _ = watched(worker, 5, sling=sling_binary() or "/usr/bin/sling")
    assert not killed and not stalled


# Stalls on its first run, then does what Sling does.
FLAKY = """
import pathlib, subprocess, sys, time
marker = pathlib.Path(__file__).with_suffix(".ran")
if not marker.exists():
    marker.write_text("1")
    child = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    time.sleep(600)
print('inserted 3 rows into "main"."t" in 0 secs')
"""


class OneTable(DagsterSlingTranslator):
    def get_asset_spec(self, stream_definition):
        return AssetSpec(key="t")


def run_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, instance):
    os.environ.setdefault("SLING_BINARY", sling_binary() or "sling")
    import sling

    monkeypatch.setattr(sling, "SLING_BIN", str(fake_sling(tmp_path, body)))
    monkeypatch.setenv("SLING_BINARY", sling.SLING_BIN)
    resource = EltSlingResource(sling_state=str(tmp_path / "s"), stall_seconds=2)
    config = {"source": "A", "target": "B", "streams": {"main.t": {"object": "main.t"}}}

    @multi_asset(specs=[AssetSpec("t")])
    def t(context):
        yield from resource.run_replication(context, config, OneTable(), fetch_row_count=False)

    return materialize([t], instance=instance, raise_on_error=False)


@pytest.mark.slow
def test_a_run_that_stalls_once_is_run_again_and_says_so(tmp_path, monkeypatch, instance) -> None:
    result = run_once(tmp_path, monkeypatch, FLAKY, instance)
    assert result.success
    warnings = [e.message for e in instance.all_logs(result.run_id) if e.level >= 30]
    assert any("made no progress for 2 s" in w and "once more" in w for w in warnings), warnings


@pytest.mark.slow
def test_a_run_that_stalls_twice_fails_saying_why(tmp_path, monkeypatch, instance) -> None:
    result = run_once(tmp_path, monkeypatch, STALLED, instance)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.to_string()
    assert "twice" in message and "ELT_SLING_STALL_SECONDS" in message
