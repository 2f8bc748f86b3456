"""scripts/refresh.py as a pipeline author or a cron job runs it: output and exit codes."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import git
import pytest

from elt_repo.git.runner import GitRunner
from elt_repo.git.urls import parse_url
from tests.conftest import PROJECT_DIR, PipelinesRepo
from tests.fake_webserver import LOAD_FAILED, RELOADED, FakeWebserver
from tests.git_http_server import GitHttpsServer

SCRIPT = PROJECT_DIR / "scripts" / "refresh.py"


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ELT_", "GITHUB_TOKEN", "DAGSTER_HOME"))
    }
    base |= {"ELT_STATE_DIR": str(tmp_path / "state"), "ELT_PROJECT_DIR": str(tmp_path)}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={**base, **env},
        timeout=120,
    )


def test_help_documents_exit_codes(tmp_path: Path) -> None:
    out = run(tmp_path, "--help")
    assert out.returncode == 0
    for line in (
        "0  refreshed",
        "1  some pipelines have errors",
        "2  bad usage",
        "3  the repository could not be fetched",
        "4  refreshed, but the webserver did not reload",
        "5  elt_repo itself failed",
    ):
        assert line in out.stdout


def test_refresh_prints_summary(tmp_path: Path, examples_repo: PipelinesRepo) -> None:
    out = run(tmp_path, ELT_REPO_URL=examples_repo.url)
    assert out.returncode == 0, out.stderr
    assert "pipelines: 5 (2 dlt, 3 sling)" in out.stdout
    assert "disabled:  legacy_export" in out.stdout
    assert "errors:    0" in out.stdout


def test_refresh_json_with_errors_exits_1(tmp_path: Path, examples_repo: PipelinesRepo) -> None:
    examples_repo.write("pipelines/broken/dagster.yaml", "tool: sling\nretries: many\n")
    sha = examples_repo.commit("broken")
    out = run(tmp_path, "--json", ELT_REPO_URL=examples_repo.url)
    assert out.returncode == 1
    summary = json.loads(out.stdout)
    assert summary["commit"] == sha
    assert summary["per_tool"] == {"dlt": 2, "sling": 3}
    assert summary["errors"] == [
        {
            "path": "pipelines/broken/dagster.yaml",
            "field": "retries",
            "message": "Not a valid integer.",
            "pipeline": "broken",
        }
    ]


def test_errors_print_as_path_field_message(tmp_path: Path, examples_repo: PipelinesRepo) -> None:
    examples_repo.write("pipelines/broken/dagster.yaml", "tool: sling\nretries: many\n")
    examples_repo.commit("broken")
    out = run(tmp_path, ELT_REPO_URL=examples_repo.url)
    assert (
        "  pipelines/broken/dagster.yaml: retries: Not a valid integer." in out.stdout.splitlines()
    )


def test_unreachable_repo_exits_3(tmp_path: Path) -> None:
    out = run(tmp_path, ELT_REPO_URL=f"file://{tmp_path}/missing")
    assert out.returncode == 3
    assert "ELT_REPO_URL: local path" in out.stdout and "does not exist" in out.stdout


def _small_files() -> None:
    """`ulimit -f 2`: no file over 2 KiB; the writer gets EFBIG instead of being killed."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))


def _refresh_with_small_files(tmp_path: Path, url: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ELT_", "GITHUB_TOKEN"))}
    env = {**base, "ELT_STATE_DIR": str(tmp_path / "state"), "ELT_PROJECT_DIR": str(tmp_path)}
    return subprocess.run(
        [sys.executable, str(SCRIPT), "-q"],
        capture_output=True,
        text=True,
        env={**env, "ELT_REPO_URL": url},
        timeout=120,
        preexec_fn=_small_files,
    )


def test_no_room_for_the_manifest_exits_5_in_one_line_and_keeps_it(
    tmp_path: Path, repo: PipelinesRepo
) -> None:
    """Writing the manifest fails: one line that says what and where, exit 5, the previous
    manifest intact, no temp file; the next refresh with room succeeds."""
    for name in ("orders", "customers", "products"):  # every file small, the manifest not
        repo.write(f"pipelines/{name}/dagster.yaml", "tool: sling\n")
        repo.write(
            f"pipelines/{name}/replication.yaml",
            f"source: LOCAL\ntarget: WAREHOUSE\nstreams:\n  file://./{name}.csv: {{object: s.{name}}}\n",
        )
        repo.write(f"pipelines/{name}/{name}.csv", "id\n1\n")
    first = repo.commit("three small pipelines")
    assert run(tmp_path, "-q", ELT_REPO_URL=repo.url).returncode == 0
    # A change of a few bytes: git's new objects fit in 2 KiB, the manifest does not.
    repo.write("pipelines/orders/orders.csv", "id\n1\n2\n")
    second = repo.commit("a small change")
    state = tmp_path / "state"
    kept = (state / "manifest.json").read_text()
    assert len(kept) > 2048

    out = _refresh_with_small_files(tmp_path, repo.url)
    assert out.returncode == 5, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith(f"error: cannot write the manifest in {state}: File too large")
    assert (state / "manifest.json").read_text() == kept
    assert json.loads(kept)["commit"] == first
    assert not list(state.rglob("*.tmp"))
    again = run(tmp_path, "-q", ELT_REPO_URL=repo.url)
    assert again.returncode == 0, again.stderr
    assert json.loads((state / "manifest.json").read_text())["commit"] == second


def test_no_room_for_git_blames_the_state_dir_not_the_remote(
    tmp_path: Path, repo: PipelinesRepo
) -> None:
    repo.copy_example("csv_orders")
    repo.commit("one pipeline")
    assert run(tmp_path, "-q", ELT_REPO_URL=repo.url).returncode == 0
    repo.copy_example("shop_sqlite")  # a SQLite file larger than 2 KiB
    repo.commit("a bigger change")
    out = _refresh_with_small_files(tmp_path, repo.url)
    # git cannot store the commit, and then the manifest that says so cannot be written.
    assert out.returncode == 5, out.stderr
    logged, last = out.stderr.strip().splitlines()
    assert "ELT_STATE_DIR: no room to store" in logged and "ulimit -f" in logged
    assert "ELT_REPO_URL" not in out.stderr and "retrying" not in out.stderr
    assert last.startswith("error: cannot write the manifest") and "Traceback" not in out.stderr


def test_bad_settings_exit_2(tmp_path: Path) -> None:
    out = run(tmp_path, ELT_POLL_INTERVAL="often")
    assert out.returncode == 2 and "ELT_POLL_INTERVAL: expected a number" in out.stderr


@pytest.mark.parametrize("layout", ["pipelines_folder", "repo_root"])
def test_validate_a_local_folder(tmp_path: Path, layout: str) -> None:
    repo = PipelinesRepo(tmp_path / "authors_repo")
    repo.copy_example("csv_orders")
    repo.write("pipelines/broken/dagster.yaml", "tool: dlt\ndlt: {source: 'nope.py:f'}\n")
    target = repo.path / "pipelines" if layout == "pipelines_folder" else repo.path
    out = run(tmp_path, "--validate", str(target), "--json")
    assert out.returncode == 1
    summary = json.loads(out.stdout)
    assert summary["pipelines"] == ["csv_orders"]
    assert summary["errors"] == [
        {
            "path": "pipelines/broken/dagster.yaml",
            "field": "dlt.source",
            "message": "file not found: nope.py:f",
            "pipeline": "broken",
        }
    ]
    assert not (tmp_path / "state" / "manifest.json").exists()


def test_validate_a_reference_layout_folder(tmp_path: Path) -> None:
    repo = PipelinesRepo(tmp_path / "reference")
    repo.write("pipelines/dlt/jokes/pipeline.py", "def run():\n    return None\n")
    repo.write(
        "pipelines/sling/orders/replication.yaml",
        "source: A\ntarget: B\nstreams: {x.y: {object: raw.y}}\n",
    )
    out = run(tmp_path, "--validate", str(repo.path / "pipelines"), "--json")
    assert out.returncode == 0, out.stdout
    assert json.loads(out.stdout)["per_tool"] == {"dlt": 1, "sling": 1}


def test_validate_clean_folder_exits_0(tmp_path: Path) -> None:
    repo = PipelinesRepo(tmp_path / "authors_repo")
    repo.copy_example("csv_orders")
    out = run(tmp_path, "--validate", str(repo.path / "pipelines"))
    assert out.returncode == 0 and "errors:    0" in out.stdout


def test_validate_missing_folder_exits_2(tmp_path: Path) -> None:
    out = run(tmp_path, "--validate", str(tmp_path / "nope"))
    assert out.returncode == 2 and "is not a folder" in out.stderr


def test_sling_binary_comes_from_the_wheel_unless_set(tmp_path: Path) -> None:
    probe = "import elt_repo.definitions, sling; print(sling.SLING_BIN)"
    env = {k: v for k, v in os.environ.items() if k != "SLING_BINARY"} | {
        "ELT_STATE_DIR": str(tmp_path)
    }
    default = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert default.stdout.strip().endswith("sling_linux_amd64/bin/sling-linux-amd64")
    assert Path(default.stdout.strip()).is_file()
    custom = subprocess.run(
        [sys.executable, "-c", probe],
        env={**env, "SLING_BINARY": "/opt/sling"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert custom.stdout.strip() == "/opt/sling"


# -- --sync-partitions ---------------------------------------------------------------------


def test_sync_partitions_adds_and_removes_keys(
    tmp_path: Path, examples_repo: PipelinesRepo, instance
) -> None:
    home = str(tmp_path / "dagster_home")
    first = run(tmp_path, "--sync-partitions", ELT_REPO_URL=examples_repo.url, DAGSTER_HOME=home)
    assert first.returncode == 0, first.stderr
    assert "partitions: store_sales__keys +3 -0" in first.stdout.splitlines()
    assert instance.get_dynamic_partitions("store_sales__keys") == [
        "us-east",
        "us-west",
        "eu-central",
    ]
    config = (examples_repo.folder("store_sales") / "dagster.yaml").read_text()
    examples_repo.write(
        "pipelines/store_sales/dagster.yaml",
        config.replace("[us-east, us-west, eu-central]", "[us-east, eu-central, ap-south]"),
    )
    examples_repo.commit("regions")
    second = run(
        tmp_path, "--sync-partitions", "--json", ELT_REPO_URL=examples_repo.url, DAGSTER_HOME=home
    )
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["partitions"] == {
        "store_sales__keys": {"added": ["ap-south"], "removed": ["us-west"]}
    }
    assert sorted(instance.get_dynamic_partitions("store_sales__keys")) == [
        "ap-south",
        "eu-central",
        "us-east",
    ]
    again = run(tmp_path, "--sync-partitions", ELT_REPO_URL=examples_repo.url, DAGSTER_HOME=home)
    assert "partitions: unchanged" in again.stdout.splitlines()


def test_without_the_flag_no_partitions_are_synced(
    tmp_path: Path, examples_repo: PipelinesRepo, instance
) -> None:
    home = str(tmp_path / "dagster_home")
    out = run(tmp_path, "--json", ELT_REPO_URL=examples_repo.url, DAGSTER_HOME=home)
    assert out.returncode == 0, out.stderr
    assert "partitions" not in json.loads(out.stdout)
    assert instance.get_dynamic_partitions("store_sales__keys") == []


@pytest.mark.parametrize("home", [None, "relative/home", "/does/not/exist"])
def test_sync_partitions_needs_dagster_home(
    tmp_path: Path, examples_repo: PipelinesRepo, home: str | None
) -> None:
    env = {"DAGSTER_HOME": home} if home else {}
    out = run(tmp_path, "--sync-partitions", ELT_REPO_URL=examples_repo.url, **env)
    assert out.returncode == 2
    assert "DAGSTER_HOME" in out.stderr
    assert not (tmp_path / "state" / "manifest.json").exists()  # refused before refreshing


# -- --reload ------------------------------------------------------------------------------


@pytest.fixture
def webserver() -> Iterator[Callable[[dict], FakeWebserver]]:
    servers: list[FakeWebserver] = []

    def start(answer: dict) -> FakeWebserver:
        servers.append(FakeWebserver(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_reload_asks_the_webserver_for_the_location(
    tmp_path: Path, examples_repo: PipelinesRepo, webserver
) -> None:
    server = webserver(RELOADED)
    out = run(
        tmp_path,
        "--reload",
        "--json",
        ELT_REPO_URL=examples_repo.url,
        ELT_WEBSERVER_URL=f"http://{server.address}/dagster/",
        ELT_LOCATION_NAME="my_location",
    )
    assert out.returncode == 0, out.stderr
    ((path, _, body),) = server.requests
    assert path == "/dagster/graphql"
    assert "reloadRepositoryLocation" in body["query"]
    assert body["variables"] == {"repositoryLocationName": "my_location"}
    assert json.loads(out.stdout)["reload"] == {
        "location": "my_location",
        "url": f"http://{server.address}/dagster/",
        "error": None,
    }


def test_failed_reload_exits_4_without_showing_credentials(
    tmp_path: Path, examples_repo: PipelinesRepo, webserver
) -> None:
    server = webserver(LOAD_FAILED)
    out = run(
        tmp_path,
        "--reload",
        ELT_REPO_URL=examples_repo.url,
        ELT_WEBSERVER_URL=f"http://admin:s3cret@{server.address}",
    )
    assert out.returncode == 4, out.stderr
    assert (
        f"error: could not reload code location 'elt_repo' at http://{server.address}: "
        "PythonError: ImportError: no module"
    ) in out.stderr
    assert "s3cret" not in out.stdout + out.stderr
    ((_, headers, body),) = server.requests
    assert body["variables"] == {"repositoryLocationName": "elt_repo"}
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"admin:s3cret").decode()
    assert "errors:    0" in out.stdout  # the refresh itself went through


def test_unreachable_webserver_exits_4(tmp_path: Path, examples_repo: PipelinesRepo) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = run(
        tmp_path,
        "--reload",
        ELT_REPO_URL=examples_repo.url,
        ELT_WEBSERVER_URL=f"http://127.0.0.1:{port}",
    )
    assert out.returncode == 4
    assert "cannot connect" in out.stderr


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (None, "error: --reload needs ELT_WEBSERVER_URL"),
        ("127.0.0.1:3000", "error: ELT_WEBSERVER_URL: expected http(s)://host"),
        ("ftp://u:pw@host", "got 'ftp://host'"),
    ],
)
def test_reload_needs_a_webserver_url(
    tmp_path: Path, examples_repo: PipelinesRepo, url: str | None, message: str
) -> None:
    env = {"ELT_WEBSERVER_URL": url} if url else {}
    out = run(tmp_path, "--reload", ELT_REPO_URL=examples_repo.url, **env)
    assert out.returncode == 2
    assert message in out.stderr
    assert not (tmp_path / "state" / "manifest.json").exists()


def test_validate_takes_no_reload(tmp_path: Path) -> None:
    out = run(tmp_path, "--validate", str(tmp_path), "--reload")
    assert out.returncode == 2 and "--validate changes nothing" in out.stderr


# -- fetch progress ------------------------------------------------------------------------

PROGRESS_LINE = re.compile(r"^(remote: )?[A-Z][a-z]+ objects: .*done\.$", re.MULTILINE)


@pytest.fixture
def big_repo(examples_repo: PipelinesRepo) -> PipelinesRepo:
    rng = random.Random(7)
    for n in range(200):
        examples_repo.write(f"data/blob_{n}.txt", rng.randbytes(4000).hex())
    examples_repo.commit("data")
    return examples_repo


def test_fetch_progress_goes_to_stderr(tmp_path: Path, big_repo: PipelinesRepo) -> None:
    out = run(tmp_path, "--json", ELT_REPO_URL=big_repo.url)
    assert out.returncode == 0, out.stderr
    assert PROGRESS_LINE.search(out.stderr), out.stderr
    assert "Receiving objects: 100%" in out.stderr
    assert json.loads(out.stdout)["per_tool"] == {"dlt": 2, "sling": 3}
    assert "\r" not in out.stderr


def test_quiet_prints_no_progress(tmp_path: Path, big_repo: PipelinesRepo) -> None:
    out = run(tmp_path, "--quiet", ELT_REPO_URL=big_repo.url)
    assert out.returncode == 0, out.stderr
    assert not PROGRESS_LINE.search(out.stderr), out.stderr
    assert "objects" not in out.stderr


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("refresh_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_progress_is_throttled_per_phase() -> None:
    now = [0.0]
    stream = io.StringIO()
    printer = _load_script().ProgressPrinter(stream, interval=1.0, clock=lambda: now[0])
    for t, line in [
        (0.0, "remote: Counting objects:   1% (1/100)"),
        (0.5, "remote: Counting objects:  50% (50/100)"),
        (0.6, "remote: Counting objects: 100% (100/100), done."),
        (0.7, "Receiving objects:   1% (1/100)"),
        (1.2, "Receiving objects:  10% (10/100)"),
        (1.8, "Receiving objects:  40% (40/100), 1.00 MiB | 2.00 MiB/s"),
        (2.3, "Receiving objects:  60% (60/100), 1.50 MiB | 2.00 MiB/s"),
        (2.5, "Receiving objects: 100% (100/100), 2.00 MiB | 2.00 MiB/s, done."),
        (2.6, " * [new branch]      main       -> main"),
    ]:
        now[0] = t
        printer(line)
    assert stream.getvalue().splitlines() == [
        "remote: Counting objects: 100% (100/100), done.",
        "Receiving objects:  40% (40/100), 1.00 MiB | 2.00 MiB/s",
        "Receiving objects: 100% (100/100), 2.00 MiB | 2.00 MiB/s, done.",
    ]


FAKE_GIT = """#!/bin/sh
printf 'remote: Counting objects:  50%% (1/2) https://bob:tok3n@example.com/r.git\\r' >&2
printf 'remote: Counting objects: 100%% (2/2) tok3n, done.\\n' >&2
printf 'fatal: could not read from https://bob:tok3n@example.com/r.git\\n' >&2
exit 128
"""


def test_progress_lines_are_scrubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "git"
    fake.write_text(FAKE_GIT)
    fake.chmod(0o755)
    monkeypatch.setattr(git.Git, "GIT_PYTHON_GIT_EXECUTABLE", str(fake))
    runner = GitRunner(parse_url("https://bob:tok3n@example.com/r.git"), "main", 1, 30)
    lines: list[str] = []
    status, _, err = runner.run("fetch", timeout=30, progress=lines.append)
    assert status == 128
    assert lines == [
        "remote: Counting objects:  50% (1/2) https://example.com/r.git",
        "remote: Counting objects: 100% (2/2) ***, done.",
        "fatal: could not read from https://example.com/r.git",
    ]
    assert err.splitlines() == lines[1:]  # each line as a terminal would leave it


def test_streamed_git_is_stopped_at_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "git"
    fake.write_text("#!/bin/sh\necho 'Receiving objects:   1% (1/100)' >&2\nsleep 20\n")
    fake.chmod(0o755)
    monkeypatch.setattr(git.Git, "GIT_PYTHON_GIT_EXECUTABLE", str(fake))
    runner = GitRunner(parse_url("https://example.com/r.git"), "main", 1, 1)
    lines: list[str] = []
    started = time.monotonic()
    status, _, err = runner.run("fetch", timeout=1, progress=lines.append)
    # The sleep is a child of the shell: only killing the whole group ends it (and stderr).
    assert time.monotonic() - started < 10
    assert status != 0 and err == "fatal: timed out after 1s"
    assert lines == ["Receiving objects:   1% (1/100)"]


def test_progress_over_https_with_a_token(tmp_path: Path) -> None:
    token = "ghp_progressToken123"
    served = PipelinesRepo(tmp_path / "served" / "pipelines_repo")
    served.copy_examples()
    served.commit("examples")
    server = GitHttpsServer(tmp_path / "served", token, tmp_path)
    server.start()
    try:
        out = run(
            tmp_path,
            ELT_REPO_URL=server.url("pipelines_repo"),
            GITHUB_TOKEN=token,
            GIT_SSL_CAINFO=str(server.cafile),
        )
    finally:
        server.stop()
    assert out.returncode == 0, out.stdout + out.stderr
    assert PROGRESS_LINE.search(out.stderr), out.stderr
    assert token not in out.stdout + out.stderr
