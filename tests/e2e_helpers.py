"""Helpers for the end-to-end test: a Git repo of pipelines, real Dagster processes, GraphQL."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
VENV_BIN = PROJECT_DIR / ".venv" / "bin"
EXAMPLES_DIR = PROJECT_DIR / "examples" / "pipelines"
LOCATION = "elt_repo"
REPOSITORY = "__repository__"
SENSOR = "elt_repo_poll"

# Variables of the outer shell that would change what the processes under test do.
_SCRUB_PREFIXES = ("ELT_", "DAGSTER_", "SLING_", "DLT_", "DESTINATION__", "SOURCES__")
_SCRUB_NAMES = {"GITHUB_TOKEN", "DUCKDB_PATH", "PYTHONPATH"}


# --------------------------------------------------------------------------- waiting


def wait_until(
    check: Callable[[], tuple[bool, Any]],
    *,
    timeout: float,
    what: str,
    interval: float = 1.0,
    context: Callable[[], str] | None = None,
) -> Any:
    """Poll `check` (returning (done, seen)) until done or the deadline; fail listing what was seen."""
    deadline = time.monotonic() + timeout
    seen: Any = None
    error: BaseException | None = None
    while True:
        try:
            done, seen = check()
            error = None
            if done:
                return seen
        except Exception as exc:  # a reloading webserver may refuse a request; keep polling
            error = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    message = f"timed out after {timeout:.0f}s waiting for {what}; last seen: {seen!r}"
    if error is not None:
        message += f"; last error: {error!r}"
    if context is not None:
        message += "\n" + context()
    raise AssertionError(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"<no log: {exc}>"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the whole process group, then SIGKILL whatever is left of it."""
        pgid = self.popen.pid  # start_new_session=True: the leader's pid is the group id
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace)
        # The leader shuts its children down on SIGTERM; give stragglers a moment, then kill.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_SCRUB_PREFIXES) and k not in _SCRUB_NAMES
    }
    env.update(extra)
    return env


def start(
    name: str, argv: list[str], env: Mapping[str, str], log_dir: Path, cwd: Path = PROJECT_DIR
) -> Proc:
    """Start `argv` in its own process group (stopped as a whole), output in log_dir/name.log."""
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")
    try:
        popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()
    return Proc(name, popen, log_path)


# --------------------------------------------------------------------------- GraphQL


class GraphQLError(RuntimeError):
    pass


@dataclass
class GraphQL:
    url: str
    timeout: float = 30.0
    queries: int = field(default=0)

    def __call__(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        self.queries += 1
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise GraphQLError(json.dumps(payload["errors"])[:2000])
        return payload["data"]

    def answers(self) -> bool:
        try:
            self("{ version }")
            return True
        except (urllib.error.URLError, ConnectionError, OSError, GraphQLError):
            return False

    # ---- queries used by the test

    def location(self) -> dict[str, Any]:
        """The code location entry: load status and, if it failed, the error."""
        data = self(
            """
            { workspaceOrError { __typename
                ... on Workspace { locationEntries { name loadStatus
                    locationOrLoadError { __typename
                        ... on PythonError { message }
                        ... on RepositoryLocation { repositories { name
                            sensors { name } } } } } }
                ... on PythonError { message } } }
            """
        )
        workspace = data["workspaceOrError"]
        if workspace["__typename"] != "Workspace":
            raise GraphQLError(f"workspace: {workspace}")
        for entry in workspace["locationEntries"]:
            if entry["name"] == LOCATION:
                return entry
        raise GraphQLError(f"no location {LOCATION}: {workspace}")

    def assets(self) -> dict[tuple[str, ...], dict[str, Any]]:
        """Asset nodes of the elt_repo location by key, with description and job names."""
        data = self(
            """
            { assetNodes { assetKey { path } description jobNames
                repository { name location { name } } } }
            """
        )
        return {
            tuple(node["assetKey"]["path"]): node
            for node in data["assetNodes"]
            if node["repository"]["location"]["name"] == LOCATION
        }

    def launch_assets(
        self, job: str, keys: Iterable[tuple[str, ...]], tags: Mapping[str, str] | None = None
    ) -> str:
        data = self(
            """
            mutation Launch($params: ExecutionParams!) {
              launchRun(executionParams: $params) { __typename
                ... on LaunchRunSuccess { run { runId status } }
                ... on Error { message }
                ... on InvalidSubsetError { message }
                ... on RunConfigValidationInvalid { errors { message } }
                ... on PythonError { message stack } } }
            """,
            {
                "params": {
                    "selector": {
                        "repositoryLocationName": LOCATION,
                        "repositoryName": REPOSITORY,
                        "jobName": job,
                        "assetSelection": [{"path": list(k)} for k in keys],
                    },
                    "mode": "default",
                    "executionMetadata": {
                        "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]
                    },
                }
            },
        )
        result = data["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise GraphQLError(f"launchRun failed: {json.dumps(result)[:3000]}")
        return result["run"]["runId"]

    def run(self, run_id: str) -> dict[str, Any]:
        data = self(
            """
            query Run($runId: ID!) { runOrError(runId: $runId) { __typename
                ... on Run { runId status jobName assetSelection { path }
                    tags { key value } }
                ... on PythonError { message } } }
            """,
            {"runId": run_id},
        )
        return data["runOrError"]

    def asset_partitions(self, key: tuple[str, ...]) -> dict[str, Any]:
        """One asset node's partition keys and partitions definition, as the webserver sees them."""
        return self._asset_node(
            key,
            """partitionKeys partitionDefinition { type name
                dimensionTypes { type dynamicPartitionsDefinitionName } }""",
        )

    def _asset_node(self, key: tuple[str, ...], fields: str) -> dict[str, Any]:
        """`fields` of one asset node; an asset the webserver does not know is an error."""
        data = self(
            """
            query Asset($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { __typename
                ... on AssetNode { assetKey { path } FIELDS }
                ... on AssetNotFoundError { message } } }
            """.replace("FIELDS", fields),
            {"key": {"path": list(key)}},
        )
        node = data["assetNodeOrError"]
        if node["__typename"] != "AssetNode":
            raise GraphQLError(f"asset {list(key)}: {node}")
        return node

    def run_failure_events(self, run_id: str) -> list[str]:
        """Error-ish messages of a run, for the assertion message when it fails."""
        data = self(
            """
            query Logs($runId: ID!) { logsForRun(runId: $runId) { __typename
                ... on EventConnection { events { __typename
                    ... on MessageEvent { message level }
                    ... on ExecutionStepFailureEvent { error { message stack } }
                    ... on RunFailureEvent { error { message } } } } } }
            """,
            {"runId": run_id},
        )
        events = data["logsForRun"].get("events") or []
        out = []
        for e in events:
            err = e.get("error")
            if err:
                out.append(
                    f"{e['__typename']}: {err.get('message')}\n{''.join(err.get('stack') or [])}"
                )
            elif e.get("level") in ("ERROR", "CRITICAL", "WARNING"):
                out.append(f"{e['__typename']}: {e.get('message')}")
        return out

    def sensor_ticks(self, limit: int = 5) -> list[dict[str, Any]]:
        data = self(
            """
            query Sensor($selector: SensorSelector!, $limit: Int) {
              sensorOrError(sensorSelector: $selector) { __typename
                ... on Sensor { sensorState { status
                    ticks(limit: $limit) { status timestamp skipReason cursor
                        error { message } } } }
                ... on Error { message } } }
            """,
            {
                "selector": {
                    "repositoryLocationName": LOCATION,
                    "repositoryName": REPOSITORY,
                    "sensorName": SENSOR,
                },
                "limit": limit,
            },
        )
        sensor = data["sensorOrError"]
        if sensor["__typename"] != "Sensor":
            return [sensor]
        return sensor["sensorState"]["ticks"]

    def asset_checks(self) -> dict[tuple[str, ...], list[str]]:
        """The names of the asset checks on each asset node of the elt_repo location."""
        data = self(
            """
            { assetNodes { assetKey { path } repository { location { name } }
                assetChecksOrError { __typename ... on AssetChecks { checks { name } } } } }
            """
        )
        out = {}
        for node in data["assetNodes"]:
            if node["repository"]["location"]["name"] != LOCATION:
                continue
            checks = node["assetChecksOrError"]
            if checks["__typename"] != "AssetChecks":
                raise GraphQLError(f"asset checks of {node['assetKey']['path']}: {checks}")
            out[tuple(node["assetKey"]["path"])] = [c["name"] for c in checks["checks"]]
        return out

    def asset_node(self, key: tuple[str, ...]) -> dict[str, Any]:
        """One asset node: group, description, whether it can run, and its checks' latest state."""
        return self._asset_node(
            key,
            """groupName description isExecutable isMaterializable isObservable jobNames
                tags { key value }
                assetChecksOrError { __typename
                    ... on AssetChecks { checks { name description canExecuteIndividually
                        executionForLatestMaterialization { status timestamp
                            evaluation { success } } } } }""",
        )

    def check_executions(
        self, key: tuple[str, ...], check: str, limit: int = 5
    ) -> list[dict[str, Any]]:
        """The latest executions of an asset check, newest first, metadata as {label: value}."""
        data = self(
            """
            query Executions($key: AssetKeyInput!, $check: String!, $limit: Int!) {
              assetCheckExecutions(assetKey: $key, checkName: $check, limit: $limit) {
                id runId status timestamp
                evaluation { timestamp checkName assetKey { path } success severity
                    description metadataEntries { ...Metadata } } } }
            """
            + METADATA_FRAGMENT,
            {"key": {"path": list(key)}, "check": check, "limit": limit},
        )
        executions = data["assetCheckExecutions"]
        for execution in executions:
            evaluation = execution.get("evaluation")
            if evaluation:
                evaluation["metadata"] = metadata_values(evaluation.pop("metadataEntries"))
        return executions

    def observations(self, key: tuple[str, ...], limit: int = 10) -> list[dict[str, Any]]:
        """The latest observations of an asset, newest first, metadata as {label: value}."""
        data = self(
            """
            query Observations($key: AssetKeyInput!, $limit: Int) {
              assetNodeOrError(assetKey: $key) { __typename
                ... on AssetNode { assetObservations(limit: $limit) {
                    timestamp runId metadataEntries { ...Metadata } } }
                ... on AssetNotFoundError { message } } }
            """
            + METADATA_FRAGMENT,
            {"key": {"path": list(key)}, "limit": limit},
        )
        node = data["assetNodeOrError"]
        if node["__typename"] != "AssetNode":
            raise GraphQLError(f"asset {list(key)}: {node}")
        out = [
            {
                "timestamp": float(o["timestamp"]) / 1000.0,  # milliseconds, as a string
                "runId": o["runId"],
                "metadata": metadata_values(o["metadataEntries"]),
            }
            for o in node["assetObservations"]
        ]
        return sorted(out, key=lambda o: o["timestamp"], reverse=True)


# The value of each kind of metadata entry elt_repo writes, by GraphQL type.
METADATA_FRAGMENT = """
fragment Metadata on MetadataEntry { __typename label
    ... on TextMetadataEntry { text }
    ... on IntMetadataEntry { intValue intRepr }
    ... on FloatMetadataEntry { floatValue }
    ... on BoolMetadataEntry { boolValue }
    ... on PathMetadataEntry { path }
    ... on UrlMetadataEntry { url }
    ... on MarkdownMetadataEntry { mdStr }
    ... on JsonMetadataEntry { jsonString }
    ... on TimestampMetadataEntry { timestamp } }
"""
_METADATA_VALUES = {
    "TextMetadataEntry": lambda e: e["text"],
    "IntMetadataEntry": lambda e: e["intValue"] if e["intValue"] is not None else int(e["intRepr"]),
    "FloatMetadataEntry": lambda e: e["floatValue"],
    "BoolMetadataEntry": lambda e: e["boolValue"],
    "PathMetadataEntry": lambda e: e["path"],
    "UrlMetadataEntry": lambda e: e["url"],
    "MarkdownMetadataEntry": lambda e: e["mdStr"],
    "JsonMetadataEntry": lambda e: json.loads(e["jsonString"]),
    "TimestampMetadataEntry": lambda e: e["timestamp"],
}


def metadata_values(entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """GraphQL metadata entries as {label: value}; an unexpected kind keeps its type name."""
    return {
        e["label"]: _METADATA_VALUES.get(e["__typename"], lambda e: f"<{e['__typename']}>")(e)
        for e in entries
    }


def count_csv_rows(path: Path) -> int:
    """Data lines of a CSV: non-empty lines minus the header (the examples quote no newlines)."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return len(lines) - 1


def dump(title: str, text: str) -> None:
    """Write straight to the real stderr, past pytest's capture (used in fixture teardown)."""
    sys.__stderr__.write(f"\n{'=' * 30} {title} {'=' * 30}\n{text}\n")
    sys.__stderr__.flush()
