"""The repo-polling sensor, evaluated with a real instance: partitions, cursor, reload."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dagster import (
    AddDynamicPartitionsRequest,
    DeleteDynamicPartitionsRequest,
    build_sensor_context,
)

from elt_repo.manifest import ManifestStore
from elt_repo.refresh import refresh
from elt_repo.sensors import SENSOR_NAME, Cursor, repo_sensor
from tests.conftest import git


class FakeWebserver:
    """Records GraphQL posts on loopback, standing in for dagster-webserver's reload endpoint."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                outer.bodies.append(
                    json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                )
                payload = json.dumps(
                    {
                        "data": {
                            "reloadRepositoryLocation": {
                                "__typename": "PythonError",
                                "message": "x",
                                "stack": [],
                            }
                        }
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait_for_reload(self, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.bodies:
                return self.bodies[0]
            time.sleep(0.05)
        raise AssertionError("no reload request reached the webserver")


@pytest.fixture
def webserver(monkeypatch: pytest.MonkeyPatch):
    server = FakeWebserver()
    monkeypatch.setenv("ELT_WEBSERVER_URL", server.url)
    monkeypatch.setenv("ELT_LOCATION_NAME", "my_location")
    yield server
    server.server.shutdown()


def test_first_tick_refreshes_adds_partitions_and_reloads(
    examples_repo, settings_for, instance, webserver
) -> None:
    settings = settings_for(examples_repo.url)
    sensor = repo_sensor(settings, loaded=None)
    assert sensor.name == SENSOR_NAME and sensor.minimum_interval_seconds == 60
    result = sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=None))
    cursor = Cursor.parse(result.cursor)
    assert cursor.commit == git(examples_repo.path, "rev-parse", "HEAD")
    assert cursor.fingerprint == ManifestStore(settings.manifest_path).read().fingerprint()
    (request,) = result.dynamic_partitions_requests
    assert isinstance(request, AddDynamicPartitionsRequest)
    assert request.partitions_def_name == "store_sales__keys"
    assert list(request.partition_keys) == ["us-east", "us-west", "eu-central"]
    body = webserver.wait_for_reload()
    assert "reloadRepositoryLocation" in body["query"]
    assert body["variables"] == {"repositoryLocationName": "my_location"}


def test_unchanged_repo_skips_without_reload(
    examples_repo, settings_for, instance, webserver
) -> None:
    settings = settings_for(examples_repo.url)
    loaded = refresh(settings).manifest
    instance.add_dynamic_partitions("store_sales__keys", ["us-east", "us-west", "eu-central"])
    sensor = repo_sensor(settings, loaded=loaded)
    result = sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=loaded.commit))
    assert Cursor.parse(result.cursor) == Cursor(loaded.commit, loaded.fingerprint())
    assert result.dynamic_partitions_requests == [] and result.run_requests == []
    assert "no new commit" in result.skip_message
    time.sleep(0.5)
    assert webserver.bodies == []


def test_changed_keys_are_added_and_removed(
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
    sensor = repo_sensor(settings, loaded=loaded)
    result = sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=loaded.commit))
    assert Cursor.parse(result.cursor).commit == sha
    add, delete = result.dynamic_partitions_requests
    assert isinstance(add, AddDynamicPartitionsRequest) and list(add.partition_keys) == ["ap-south"]
    assert isinstance(delete, DeleteDynamicPartitionsRequest) and list(delete.partition_keys) == [
        "us-west"
    ]
    webserver.wait_for_reload()


def test_one_change_asks_for_one_reload(examples_repo, settings_for, instance, webserver) -> None:
    """A process whose definitions predate the change must not ask again on every tick."""
    settings = settings_for(examples_repo.url)
    old = refresh(settings).manifest
    instance.add_dynamic_partitions("store_sales__keys", ["us-east", "us-west", "eu-central"])
    examples_repo.write("pipelines/csv_orders/extra.txt", "a change\n")
    examples_repo.commit("change")
    sensor = repo_sensor(settings, loaded=old)  # e.g. the daemon's code server, not yet reloaded
    first = sensor.evaluate_tick(
        build_sensor_context(instance=instance, cursor=Cursor(old.commit, old.fingerprint()).dump())
    )
    webserver.wait_for_reload()
    second = sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=first.cursor))
    assert "no new commit" in second.skip_message
    time.sleep(0.5)
    assert len(webserver.bodies) == 1


def test_auto_refresh_off_means_stopped_by_default(examples_repo, settings_for) -> None:
    sensor = repo_sensor(
        settings_for(examples_repo.url, ELT_AUTO_REFRESH="false", ELT_POLL_INTERVAL="15"), None
    )
    assert sensor.default_status.value == "STOPPED" and sensor.minimum_interval_seconds == 15
