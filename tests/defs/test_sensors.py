"""The repo-polling sensor, ticked with a real instance against real Git remotes.

Covers: the first tick, no change (no fetch, no write), a new commit, a force-push, a deleted
branch, a remote that is gone or refuses the token, reloads, and refresh.py racing the sensor.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from dagster import (
    AddDynamicPartitionsRequest,
    DeleteDynamicPartitionsRequest,
    build_sensor_context,
)

from elt_repo.defs.assets import duckdb_pool
from elt_repo.defs.sensors import SENSOR_NAME, repo_sensor
from elt_repo.manifest import ManifestStore
from elt_repo.refresh import refresh
from tests.conftest import PROJECT_DIR, PipelinesRepo, git
from tests.fake_webserver import RELOADED, FakeWebserver
from tests.git_http_server import GitHttpsServer


@pytest.fixture
def webserver(monkeypatch: pytest.MonkeyPatch):
    server = FakeWebserver(RELOADED)
    monkeypatch.setenv("ELT_WEBSERVER_URL", server.url)
    monkeypatch.setenv("ELT_LOCATION_NAME", "my_location")
    yield server
    server.stop()


def tick(sensor, instance, cursor: str | None):
    return sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=cursor))


def failed_tick(sensor, instance, cursor: str | None) -> str:
    """Tick and expect the tick to fail; return the message the tick fails with."""
    with pytest.raises(Exception) as info:
        tick(sensor, instance, cursor)
    return "".join(str(e) for e in _chain(info.value))


def _chain(exc: BaseException | None):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def test_first_tick_refreshes_adds_partitions_and_reloads(
    examples_repo, settings_for, instance, webserver
) -> None:
    settings = settings_for(examples_repo.url)
    sensor = repo_sensor(settings, loaded=None)
    assert sensor.name == SENSOR_NAME == "elt_repo_poll"
    assert sensor.minimum_interval_seconds == 60
    result = tick(sensor, instance, None)
    assert result.cursor == git(examples_repo.path, "rev-parse", "HEAD")  # the cursor is the sha
    assert ManifestStore(settings.manifest_path).read().commit == result.cursor
    (request,) = result.dynamic_partitions_requests
    assert isinstance(request, AddDynamicPartitionsRequest)
    assert request.partitions_def_name == "store_sales__keys"
    assert list(request.partition_keys) == ["us-east", "us-west", "eu-central"]
    # The pool every example writes through exists before any run claims it, limit 1.
    pool = duckdb_pool(settings.warehouse.file)
    assert list(instance.event_log_storage.get_concurrency_keys()) == [pool]
    assert instance.event_log_storage.get_concurrency_info(pool).slot_count == 1
    body = webserver.wait_for_reload()
    assert "reloadRepositoryLocation" in body["query"]
    assert body["variables"] == {"repositoryLocationName": "my_location"}


def test_no_new_commit_is_one_ls_remote_no_fetch_and_no_write(
    examples_repo, settings_for, instance, webserver
) -> None:
    settings = settings_for(examples_repo.url)
    loaded = refresh(settings).manifest
    stamps = {p: p.stat().st_mtime_ns for p in settings.state_dir.rglob("*") if p.is_file()}
    # A commit on another branch: a fetch (refs/heads/*) would bring it into the mirror.
    git(examples_repo.path, "checkout", "--quiet", "-b", "other")
    examples_repo.write("pipelines/csv_orders/extra.txt", "elsewhere\n")
    examples_repo.commit("on another branch")
    git(examples_repo.path, "checkout", "--quiet", "main")
    sensor = repo_sensor(settings, loaded=loaded)
    result = tick(sensor, instance, loaded.commit)
    assert result.skip_message == f"no new commit: main is at {loaded.commit}"
    assert result.cursor == loaded.commit and result.dynamic_partitions_requests == []
    mirror = settings.repo_state_dir / "mirror.git"
    refs = git(mirror, "for-each-ref", "--format=%(refname)")
    assert "refs/heads/other" not in refs  # no fetch happened
    after = {p: p.stat().st_mtime_ns for p in settings.state_dir.rglob("*") if p.is_file()}
    assert {p for p in after if after[p] != stamps.get(p)} <= {
        settings.manifest_path.with_name("manifest.json.lock")
    }
    time.sleep(0.3)
    assert webserver.bodies == []


def test_new_commit_moves_the_cursor_syncs_keys_and_reloads(
    examples_repo, settings_for, instance, webserver
) -> None:
    settings = settings_for(examples_repo.url)
    loaded = refresh(settings).manifest
    instance.add_dynamic_partitions("store_sales__keys", ["us-east", "us-west", "eu-central"])
    config = (examples_repo.folder("store_sales") / "dagster.yaml").read_text()
    examples_repo.write(
        "pipelines/store_sales/dagster.yaml",
        config.replace("[us-east, us-west, eu-central]", "[us-east, eu-central, ap-south]"),
    )
    sha = examples_repo.commit("regions")
    result = tick(repo_sensor(settings, loaded=loaded), instance, loaded.commit)
    assert result.cursor == sha
    add, delete = result.dynamic_partitions_requests
    assert isinstance(add, AddDynamicPartitionsRequest) and list(add.partition_keys) == ["ap-south"]
    assert isinstance(delete, DeleteDynamicPartitionsRequest)
    assert list(delete.partition_keys) == ["us-west"]
    assert result.skip_message.startswith(f"{sha}: 5 pipelines, 0 errors, 4 folders unchanged")
    webserver.wait_for_reload()


def test_force_push_is_followed(examples_repo, settings_for, instance, webserver) -> None:
    settings = settings_for(examples_repo.url)
    examples_repo.write("pipelines/csv_orders/extra.txt", "soon rewritten\n")
    doomed = examples_repo.commit("to be rewritten")
    loaded = refresh(settings).manifest
    assert loaded.commit == doomed
    git(examples_repo.path, "reset", "--quiet", "--hard", "HEAD~1")
    examples_repo.remove("pipelines/shop_sqlite")
    rewritten = examples_repo.commit("history rewritten without shop_sqlite")
    result = tick(repo_sensor(settings, loaded=loaded), instance, doomed)
    assert result.cursor == rewritten
    manifest = ManifestStore(settings.manifest_path).read()
    assert manifest.commit == rewritten
    assert "shop_sqlite" not in {p.name for p in manifest.pipelines}


def test_deleted_branch_fails_the_tick_and_keeps_the_manifest(
    repo: PipelinesRepo, settings_for, instance, webserver
) -> None:
    repo.copy_example("csv_orders")
    repo.commit("main")
    git(repo.path, "checkout", "--quiet", "-b", "feature")
    repo.copy_example("store_sales")
    feature = repo.commit("feature")
    settings = settings_for(repo.url, ELT_REPO_BRANCH="feature")
    loaded = refresh(settings).manifest
    git(repo.path, "checkout", "--quiet", "main")
    git(repo.path, "branch", "--quiet", "-D", "feature")
    sensor = repo_sensor(settings, loaded=loaded)
    message = failed_tick(sensor, instance, feature)
    assert "ref 'feature' not found" in message and f"keeping {feature}" in message
    kept = ManifestStore(settings.manifest_path).read()
    assert {p.name for p in kept.pipelines} == {"csv_orders", "store_sales"}
    assert kept.commit == feature
    git(repo.path, "branch", "--quiet", "feature", "main")  # the branch is back: next tick recovers
    assert tick(sensor, instance, feature).cursor == git(repo.path, "rev-parse", "main")


def test_remote_gone_fails_the_tick_and_keeps_every_asset(
    examples_repo, settings_for, instance, webserver
) -> None:
    settings = settings_for(examples_repo.url)
    loaded = refresh(settings).manifest
    shutil.rmtree(examples_repo.path)
    message = failed_tick(repo_sensor(settings, loaded=loaded), instance, loaded.commit)
    assert f"local path {examples_repo.path} does not exist" in message
    kept = ManifestStore(settings.manifest_path).read()
    assert kept.pipelines == loaded.pipelines and kept.commit == loaded.commit


TOKEN = "ghp_sensorTestToken0123456789"


def test_refused_token_fails_the_tick_without_showing_it(
    tmp_path: Path, tmp_path_factory, settings_for, instance, monkeypatch, caplog
) -> None:
    server = GitHttpsServer(tmp_path / "served", "the-right-token", tmp_path_factory.mktemp("tls"))
    server.start()
    try:
        monkeypatch.setenv("GIT_SSL_CAINFO", str(server.cafile))
        served = PipelinesRepo(server.root / "pipes")
        served.copy_example("csv_orders")
        served.commit("one")
        settings = settings_for(server.url("pipes"), GITHUB_TOKEN=TOKEN)
        message = failed_tick(repo_sensor(settings, loaded=None), instance, None)
    finally:
        server.stop()
    assert "authentication failed" in message and "GITHUB_TOKEN" in message
    assert TOKEN not in message and TOKEN not in caplog.text
    for path in settings.state_dir.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_without_a_webserver_url_the_tick_says_a_reload_is_needed(
    examples_repo, settings_for, instance, monkeypatch
) -> None:
    monkeypatch.delenv("ELT_WEBSERVER_URL", raising=False)
    settings = settings_for(examples_repo.url)
    result = tick(repo_sensor(settings, loaded=None), instance, None)
    assert "reload needed: the code location still serves no manifest" in result.skip_message


def test_one_change_asks_for_one_reload(examples_repo, settings_for, instance, webserver) -> None:
    """A process whose definitions predate the change must not ask again on every tick."""
    settings = settings_for(examples_repo.url)
    old = refresh(settings).manifest
    instance.add_dynamic_partitions("store_sales__keys", ["us-east", "us-west", "eu-central"])
    examples_repo.write("pipelines/csv_orders/extra.txt", "a change\n")
    examples_repo.commit("change")
    sensor = repo_sensor(settings, loaded=old)  # e.g. the daemon's code server, not yet reloaded
    first = tick(sensor, instance, old.commit)
    webserver.wait_for_reload()
    second = tick(sensor, instance, first.cursor)
    assert second.skip_message.endswith("reload already requested")
    time.sleep(0.5)
    assert len(webserver.bodies) == 1


def test_auto_refresh_off_means_stopped_by_default(examples_repo, settings_for) -> None:
    sensor = repo_sensor(
        settings_for(examples_repo.url, ELT_AUTO_REFRESH="false", ELT_POLL_INTERVAL="15"), None
    )
    assert sensor.default_status.value == "STOPPED" and sensor.minimum_interval_seconds == 15


def test_refresh_script_and_sensor_ticks_race_and_the_manifest_stays_valid(
    examples_repo, settings_for, instance, monkeypatch
) -> None:
    """10 rounds: a commit, then refresh.py and two sensor ticks at once; a reader watches."""
    monkeypatch.delenv("ELT_WEBSERVER_URL", raising=False)
    settings = settings_for(examples_repo.url)
    env = {
        **os.environ,
        "ELT_REPO_URL": examples_repo.url,
        "ELT_STATE_DIR": str(settings.state_dir),
        "ELT_WAREHOUSE": str(settings.warehouse),
    }
    sensor = repo_sensor(settings, loaded=None)
    cursor = tick(sensor, instance, None).cursor
    commits = {cursor}
    for round_ in range(10):
        examples_repo.write("pipelines/csv_orders/round.txt", f"{round_}\n")
        commits.add(examples_repo.commit(f"round {round_}"))
        script = subprocess.Popen(
            [sys.executable, "scripts/refresh.py", "--json"],
            cwd=PROJECT_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        results = []
        ticks = [
            threading.Thread(
                target=lambda c=cursor, out=results: out.append(tick(sensor, instance, c))
            )
            for _ in range(2)
        ]
        for t in ticks:
            t.start()
        for t in ticks:
            t.join()
        out, err = script.communicate(timeout=120)
        assert script.returncode == 0, err
        assert json.loads(out)["commit"] in commits
        manifest = ManifestStore(settings.manifest_path).read()
        assert manifest is not None and manifest.commit == git(
            examples_repo.path, "rev-parse", "HEAD"
        )
        assert len(manifest.pipelines) == 5 and manifest.errors == ()
        assert len(results) == 2 and {r.cursor for r in results} <= {None, manifest.commit}
        cursor = manifest.commit


def test_a_hanging_remote_fails_the_tick_within_its_budget(
    examples_repo, settings_for, instance, monkeypatch
) -> None:
    """A remote that accepts connections and never answers: the tick gives up in time."""
    import socket

    from elt_repo.defs import sensors

    monkeypatch.setattr(sensors, "TICK_BUDGET_SECONDS", 4.0)
    settings = settings_for(examples_repo.url)
    loaded = refresh(settings).manifest
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        hanging = settings_for(f"http://127.0.0.1:{server.getsockname()[1]}/pipes.git")
        started = time.monotonic()
        message = failed_tick(repo_sensor(hanging, loaded=loaded), instance, loaded.commit)
        took = time.monotonic() - started
    assert "refresh failed" in message and f"keeping {loaded.commit}" in message
    assert took < 20  # far below the 120 s a git command may take, and Dagster's 60 s limit
    assert ManifestStore(settings.manifest_path).read().pipelines == loaded.pipelines


def test_worktrees_of_running_runs_are_kept(examples_repo, settings_for, instance) -> None:
    from dagster import DagsterRun, DagsterRunStatus

    settings = settings_for(examples_repo.url, ELT_WORKTREE_GRACE="0")
    sensor = repo_sensor(settings, loaded=None)
    cursor = tick(sensor, instance, None).cursor
    pinned = cursor
    run = DagsterRun(
        job_name="__ASSET_JOB",
        run_id="running-run",
        status=DagsterRunStatus.STARTED,
        tags={"elt_repo/commit": pinned},
    )
    instance.add_run(run)
    worktrees = settings.repo_state_dir / "worktrees"
    for n in range(6):  # more than the 5 newest worktrees that are always kept
        examples_repo.write("pipelines/csv_orders/n.txt", f"{n}\n")
        examples_repo.commit(f"commit {n}")
        cursor = tick(sensor, instance, cursor).cursor
    assert (worktrees / pinned).is_dir()  # old and past its grace, but a running run needs it
    assert (settings.state_dir / "manifests" / f"{pinned}.json").is_file()
    instance.delete_run("running-run")
    examples_repo.write("pipelines/csv_orders/n.txt", "last\n")
    examples_repo.commit("last")
    tick(sensor, instance, cursor)
    assert not (worktrees / pinned).exists()
    assert not (settings.state_dir / "manifests" / f"{pinned}.json").exists()
    assert len(list(worktrees.iterdir())) == 5
