"""Hostile and broken pipelines repos: one bad folder is that pipeline's error, nothing more.

Each case is a real Git repo holding two healthy pipelines (a Sling file copy and a dlt
resource) and one bad thing. `scripts/refresh.py --json` runs on it twice, before and after the
bad commit, as a cron job would. Each case asserts: exit 0 or 1 and no traceback; the healthy
pipelines are there; the error names the file and the field; no secret in the output or in
any file under the state dir; nothing written outside the state dir; the previous commit's
manifest kept.

Three cases need more than a folder: 5000 other folders beside the pipelines, a 100 MB data
file (never read whole into memory), and the origin's branch force-pushed while a refresh runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from elt_repo.defs.build import build_definitions
from elt_repo.manifest import ManifestStore
from elt_repo.refresh import git_source
from elt_repo.settings import load_settings
from tests.conftest import PROJECT_DIR, PipelinesRepo, git, running

pytestmark = pytest.mark.slow

TOKEN = "ghp_HOSTILEcaseToken0123456789abcdef"
DB_PASSWORD = "pw-hostile-5521-secret"
HEALTHY = ("good_dlt", "good_sling")
BOMB = "\n".join(
    ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
)
DEEP = "[" * 10000 + "]" * 10000
SLING_YAML = "tool: sling\n"
REPLICATION = (
    "source: LOCAL\ntarget: WAREHOUSE\nstreams:\n  file://./data/rows.csv: {object: bad.rows}\n"
)


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "refresh_script", PROJECT_DIR / "scripts/refresh.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = _load_script()


@dataclass(frozen=True)
class Case:
    files: dict[str, str | bytes]  # under pipelines/, as committed
    path: str  # the error's file, under pipelines/
    field: str | None  # the error's field, or None when any field will do
    says: str  # part of the error's message
    links: dict[str, str] | None = None  # path under pipelines/ -> symlink target
    build: Callable[[Path], None] | None = None  # anything else to do to the checkout
    loads: str | None = None  # a pipeline that must be there too, under this name
    disabled: int = 0  # how many pipelines are listed disabled
    within: float | None = None  # seconds the refresh of the bad commit may take at most
    peak_mib: float | None = None  # Python memory that refresh may allocate at most (traced)


def bad(name: str, dagster: str | bytes, **extra: str | bytes) -> dict[str, str | bytes]:
    return {f"{name}/dagster.yaml": dagster, **{f"{name}/{k}": v for k, v in extra.items()}}


def dlt_folder(code: str, args: str = "") -> dict[str, str | bytes]:
    dagster = f"dlt:\n  source: pipeline.py:src\n{args}"
    return bad("bad", dagster, **{"pipeline.py": code})


def _gitlink(checkout: Path) -> None:
    """A submodule whose URL cannot be fetched, as a gitlink and a .gitmodules entry."""
    (checkout / ".gitmodules").write_text(
        '[submodule "pipelines/bad/vendored"]\n\tpath = pipelines/bad/vendored\n'
        "\turl = https://127.0.0.1:9/nowhere.git\n"
    )
    sha = "0123456789abcdef0123456789abcdef01234567"
    git(checkout, "update-index", "--add", "--cacheinfo", f"160000,{sha},pipelines/bad/vendored")


SOURCE = "\nimport dlt\n\n\n@dlt.resource\ndef src():\n    yield {'id': 1}\n"
MARKER = "elt-hostile-child"  # in the command line of every process pipeline code starts
DAEMONS = f"""
import os, subprocess, sys
SLEEP = [sys.executable, "-c", "import time; time.sleep(300)", "{MARKER}"]
subprocess.Popen(SLEEP, start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, SLEEP)
    os._exit(0)
"""
# From pipelines/bad/pipeline.py in state/repo/worktrees/<sha>/: another pipeline's file, the
# worktree, the state dir and the test's own folder, all refused.
WRITES = """
from pathlib import Path
here = Path(__file__).resolve().parent
for target in (here.parent / "good_dlt" / "pipeline.py", here.parents[1] / "evil.txt",
               here.parents[4] / "evil.txt", here.parents[5] / "evil.txt", here / "evil.txt"):
    try:
        target.write_text("written by pipeline code")
    except OSError:
        pass
"""


FOLDERS = 5000
HUGE_BYTES = 100 * 1024 * 1024


def _five_thousand_folders(checkout: Path) -> None:
    """FOLDERS folders beside the pipelines: notes, nested data, helper modules with no run(),
    hidden folders, and every 50th a disabled pipeline; all sorting before the healthy ones.
    Written directly, one commit."""
    base = checkout / "pipelines"
    for i in range(FOLDERS):
        folder = base / f"folder_{i:04d}"
        kind = i % 5
        if i % 50 == 0:
            folder.mkdir(parents=True)
            (folder / "dagster.yaml").write_text("tool: sling\nenabled: false\n")
        elif kind == 1:
            (folder / "a" / "b").mkdir(parents=True)
            (folder / "a" / "b" / ".gitkeep").write_text("")
        elif kind == 2:
            folder.mkdir(parents=True)
            (folder / "helpers.py").write_text("def walk():\n    return 1\n")
        elif kind == 3:
            (folder / ".cache").mkdir(parents=True)
            (folder / ".cache" / "dagster.yaml").write_text("tool: nonsense\n")
        else:
            folder.mkdir(parents=True)
            (folder / "README.md").write_text(f"folder {i}\n")


def _huge_blob(checkout: Path) -> None:
    """A 100 MB data file beside a Sling pipeline's rows (zeros: cheap for Git to store)."""
    with open(checkout / "pipelines/bad/data/huge.bin", "wb") as handle:
        handle.truncate(HUGE_BYTES)


CASES: dict[str, Case] = {
    "latin1_dagster_yaml": Case(
        bad("bad", b"description: caf\xe9\n"), "bad/dagster.yaml", "<root>", "not UTF-8"
    ),
    "binary_dagster_yaml": Case(
        bad("bad", bytes(range(256))), "bad/dagster.yaml", "<root>", "not UTF-8"
    ),
    "bom_dagster_yaml": Case(
        bad("bad", b"\xef\xbb\xbftool: sling\n"), "bad/dagster.yaml", "<root>", "byte-order mark"
    ),
    "latin1_replication": Case(
        bad("bad", SLING_YAML, **{"replication.yaml": b"source: LOCAL\n# caf\xe9\n"}),
        "bad/replication.yaml",
        "sling.replication",
        "not UTF-8",
    ),
    "deep_dagster_yaml": Case(
        bad("bad", f"tags: {DEEP}\n"), "bad/dagster.yaml", "<root>", "nested deeper than"
    ),
    "deep_replication": Case(
        bad("bad", SLING_YAML, **{"replication.yaml": f"streams: {DEEP}\n"}),
        "bad/replication.yaml",
        "sling.replication",
        "nested deeper than",
    ),
    "alias_bomb_in_dlt_args": Case(
        dlt_folder(
            "def src(**kw):\n    return []\n",
            "  args:\n" + "".join(f"    {line}\n" for line in BOMB.splitlines()),
        ),
        "bad/dagster.yaml",
        "<root>",
        "expands to more than",
    ),
    "alias_bomb_in_replication": Case(
        bad("bad", SLING_YAML, **{"replication.yaml": REPLICATION + BOMB + "\n"}),
        "bad/replication.yaml",
        "sling.replication",
        "expands to more than",
    ),
    "duplicate_keys_dagster_yaml": Case(
        bad("bad", "tool: sling\ngroup: a\ngroup: b\n"),
        "bad/dagster.yaml",
        "<root>",
        "duplicate key 'group'",
    ),
    "duplicate_keys_replication": Case(
        bad("bad", SLING_YAML, **{"replication.yaml": REPLICATION + "target: OTHER\n"}),
        "bad/replication.yaml",
        "sling.replication",
        "duplicate key 'target'",
    ),
    "python_object_tag": Case(
        bad("bad", "tool: !!python/object/apply:os.system [id]\n"),
        "bad/dagster.yaml",
        "<root>",
        "could not determine a constructor",
    ),
    "tabs": Case(
        bad("bad", "tool: sling\nsling:\n\treplication: r.yaml\n"),
        "bad/dagster.yaml",
        "<root>",
        "'\\t'",
    ),
    "ten_megabyte_dagster_yaml": Case(
        bad("bad", "#" * (10 * 1024 * 1024) + "\n"), "bad/dagster.yaml", "<root>", "larger than"
    ),
    "empty_dagster_yaml_is_defaults": Case(
        bad("bad", ""), "bad/dagster.yaml", "tool", "cannot infer the tool"
    ),
    "dagster_yaml_is_a_list": Case(bad("bad", "- a\n- b\n"), "bad/dagster.yaml", None, ""),
    "unknown_field": Case(
        bad("bad", "tool: sling\nsurprise: 1\n"), "bad/dagster.yaml", "surprise", ""
    ),
    "enabled_is_not_a_boolean": Case(
        bad("bad", "tool: sling\nenabled: maybe\n"), "bad/dagster.yaml", "enabled", ""
    ),
    "invalid_cron": Case(
        bad("bad", "tool: sling\nschedule: {cron_schedule: 'every day'}\n"),
        "bad/dagster.yaml",
        "schedule.cron_schedule",
        "",
    ),
    "name_dagster_refuses": Case(
        bad("bad", "tool: sling\nname: 'bad name!'\n"), "bad/dagster.yaml", "name", ""
    ),
    "duplicate_partition_keys": Case(
        bad(
            "bad",
            "tool: sling\npartitions: {type: static, static: {partition_keys: [a, a]}}\n",
            **{"replication.yaml": REPLICATION, "data/rows.csv": "id\n1\n"},
        ),
        "bad/dagster.yaml",
        "partitions.static.partition_keys",
        "duplicate partition keys",
    ),
    "replication_without_streams": Case(
        bad("bad", SLING_YAML, **{"replication.yaml": "source: LOCAL\ntarget: WAREHOUSE\n"}),
        "bad/replication.yaml",
        "streams",
        "needs a 'streams' mapping",
    ),
    "replication_missing": Case(
        bad("bad", SLING_YAML + "sling: {replication: nope.yaml}\n"),
        "bad/nope.yaml",
        "sling.replication",
        "not found",
    ),
    "stream_without_object": Case(
        bad(
            "bad",
            SLING_YAML,
            **{
                "replication.yaml": "source: LOCAL\ntarget: WAREHOUSE\nstreams:\n  file://./data/rows.csv: {}\n",
                "data/rows.csv": "id\n1\n",
            },
        ),
        "bad/replication.yaml",
        None,
        "object",
    ),
    "stream_reads_outside_the_folder": Case(
        bad(
            "bad",
            SLING_YAML,
            **{
                "replication.yaml": "source: LOCAL\ntarget: WAREHOUSE\nstreams:\n  file://../../../../etc/passwd: {object: bad.passwd}\n"
            },
        ),
        "bad/replication.yaml",
        None,
        "leaves the pipeline folder",
    ),
    "stream_reads_an_absolute_host_path": Case(
        bad(
            "bad",
            SLING_YAML,
            **{
                "replication.yaml": "source: LOCAL\ntarget: WAREHOUSE\n"
                "streams:\n  file:///etc/passwd: {object: bad.passwd}\n"
            },
        ),
        "bad/replication.yaml",
        "streams.file:///etc/passwd",
        "reads outside the pipeline folder",
    ),
    "stream_path_relative_to_the_runner": Case(
        bad(
            "bad",
            SLING_YAML,
            **{
                "replication.yaml": "source: LOCAL\ntarget: WAREHOUSE\n"
                "streams:\n  file://etc/passwd: {object: bad.passwd}\n"
            },
        ),
        "bad/replication.yaml",
        "streams.file://etc/passwd",
        "reads outside the pipeline folder",
    ),
    "dlt_source_file_missing": Case(
        bad("bad", "dlt: {source: 'missing.py:src'}\n"),
        "bad/dagster.yaml",
        "dlt.source",
        "file not found",
    ),
    "dlt_function_missing": Case(
        dlt_folder("def other():\n    return []\n"),
        "bad/dagster.yaml",
        "dlt.source",
        "no function 'src'",
    ),
    "syntax_error": Case(
        dlt_folder("def src(:\n"), "bad/dagster.yaml", "dlt.source", "SyntaxError"
    ),
    "missing_module": Case(
        dlt_folder("import no_such_module_q\n\ndef src():\n    return []\n"),
        "bad/dagster.yaml",
        "dlt.source",
        "no_such_module_q",
    ),
    "sys_exit_at_import": Case(
        dlt_folder("import sys\nsys.exit(3)\n"), "bad/dagster.yaml", "dlt.source", ""
    ),
    "os_exit_at_import": Case(
        dlt_folder("import os\nos._exit(0)\n"), "bad/dagster.yaml", "dlt.source", ""
    ),
    # Pipeline code at discovery runs in a sandbox (elt_repo.discovery.sandbox): these load.
    "kills_its_parent_at_import": Case(
        dlt_folder("import os\nos.kill(os.getppid(), 9)\n" + SOURCE), "", None, "", loads="bad"
    ),
    "leaves_setsid_children_at_import": Case(
        dlt_folder(DAEMONS + SOURCE), "", None, "", loads="bad"
    ),
    "writes_into_the_worktree_the_state_dir_and_beyond": Case(
        dlt_folder(WRITES + SOURCE), "", None, "", loads="bad"
    ),
    "memory_bomb_at_import": Case(
        dlt_folder("junk = bytearray(4 * 1024**3)\n" + SOURCE),
        "bad/dagster.yaml",
        "dlt.source",
        "memory limit of 2048 MiB (ELT_DISCOVERY_MEMORY_MB)",
    ),
    "helper_module_symlinked_outside_the_repo": Case(
        dlt_folder("import helpers\n" + SOURCE),
        "bad/dagster.yaml",
        "dlt.source",
        "helpers.py resolves outside the pipelines repo",
        links={"bad/helpers.py": "/etc/hostname"},
    ),
    "endless_loop_at_import": Case(
        dlt_folder("while True:\n    pass\n"), "bad/dagster.yaml", "dlt.source", "timed out"
    ),
    "token_in_an_import_error": Case(
        dlt_folder(
            "import os\nraise RuntimeError('401 with token ' + os.environ.get('GITHUB_TOKEN', 'none'))\n"
        ),
        "bad/dagster.yaml",
        "dlt.source",
        "401 with token none",
    ),
    "environment_printed_then_crash": Case(
        dlt_folder("import os, sys\nprint(dict(os.environ), file=sys.stderr)\nos._exit(9)\n"),
        "bad/dagster.yaml",
        "dlt.source",
        "",
    ),
    "credential_url_in_an_error": Case(
        dlt_folder(
            "import os\n\ndef src():\n    raise ValueError('cannot connect with ' + os.environ['HOSTILE_DB_URL'])\n"
        ),
        "bad/dagster.yaml",
        "dlt.source",
        "postgresql://***@127.0.0.1:9/shop",
    ),
    "dangling_symlink_data_file": Case(
        bad("bad", SLING_YAML, **{"replication.yaml": REPLICATION, "data/rows.csv": "id\n1\n"}),
        "",
        None,
        "",
        links={"bad/data/gone.csv": "nowhere.csv"},
    ),
    "dangling_symlink_dagster_yaml": Case(
        {"bad/replication.yaml": REPLICATION},
        "bad/dagster.yaml",
        "<root>",
        "symlink to nothing",
        links={"bad/dagster.yaml": "missing.yaml"},
    ),
    "symlink_loop_dagster_yaml": Case(
        {"bad/replication.yaml": REPLICATION},
        "bad/dagster.yaml",
        "<root>",
        "cannot be resolved",
        links={"bad/dagster.yaml": "dagster.yaml"},
    ),
    "data_file_symlinked_to_dev_zero": Case(
        bad("bad", SLING_YAML, **{"replication.yaml": REPLICATION, "data/rows.csv": "id\n1\n"}),
        "",
        None,
        "",
        links={"bad/data/zero.csv": "/dev/zero"},
    ),
    "dagster_yaml_symlinked_to_dev_zero": Case(
        {},
        "bad/dagster.yaml",
        "<root>",
        "outside the pipeline folder",
        links={"bad/dagster.yaml": "/dev/zero"},
    ),
    "pipeline_py_symlinked_outside_the_repo": Case(
        bad("bad", "dlt: {source: 'pipeline.py:src'}\n"),
        "bad/dagster.yaml",
        "dlt.source",
        "resolves outside the pipeline folder",
        links={"bad/pipeline.py": "/etc/hostname"},
    ),
    "pipeline_py_symlinked_to_another_pipeline": Case(
        bad("bad", "dlt: {source: 'pipeline.py:rows'}\n"),
        "bad/dagster.yaml",
        "dlt.source",
        "resolves outside the pipeline folder",
        links={"bad/pipeline.py": "../good_dlt/pipeline.py"},
    ),
    "replication_symlinked_outside": Case(
        bad("bad", SLING_YAML),
        "bad/replication.yaml",
        "sling.replication",
        "resolves outside the pipeline folder",
        links={"bad/replication.yaml": "/etc/hostname"},
    ),
    "dagster_yaml_is_a_folder": Case(
        {"bad/dagster.yaml/inner.txt": "x", "bad/replication.yaml": REPLICATION},
        "bad/dagster.yaml",
        "<root>",
        "not a regular file (a directory)",
    ),
    "duplicate_pipeline_name": Case(
        bad(
            "bad",
            "tool: sling\nname: good_sling\n",
            **{"replication.yaml": REPLICATION, "data/rows.csv": "id\n1\n"},
        ),
        "bad/dagster.yaml",
        "name",
        "duplicate pipeline name 'good_sling'",
    ),
    "name_differs_only_by_case": Case(
        bad(
            "bad",
            "tool: sling\nname: Good_Sling\n",
            **{"replication.yaml": REPLICATION, "data/rows.csv": "id\n1\n"},
        ),
        "bad/dagster.yaml",
        "name",
        "differs only by case from 'good_sling'",
    ),
    "dataset_differs_only_by_case": Case(
        bad(
            "bad",
            "dlt: {source: 'pipeline.py:rows', dataset_name: Good_Data}\n",
            **{"pipeline.py": "import dlt\n\n@dlt.resource\ndef rows():\n    yield {'id': 1}\n"},
        ),
        "bad/dagster.yaml",
        "dlt.dataset_name",
        "differs only by case from 'good_data'",
    ),
    "unicode_folder_name": Case(
        {
            "café/dagster.yaml": SLING_YAML,
            "café/replication.yaml": REPLICATION,
            "café/data/rows.csv": "id\n1\n",
        },
        "",
        None,
        "",
        loads="caf_",  # ASCII, as Dagster's names must be
    ),
    "unfetchable_submodule": Case({}, "", None, "", build=_gitlink),
    # Not pipelines, so no errors; the disabled ones listed; one walk, not one per folder.
    "five_thousand_folders": Case(
        {}, "", None, "", build=_five_thousand_folders, disabled=FOLDERS // 50, within=10.0
    ),
    # A data file is the pipeline's data, whatever its size: the pipeline loads, its content
    # hash streams the file, and no refresh holds it in memory.
    "hundred_megabyte_data_file": Case(
        bad(
            "bad",
            SLING_YAML,
            **{
                "replication.yaml": REPLICATION + "  file://./data/huge.bin: {object: bad.huge}\n",
                "data/rows.csv": "id\n1\n",
            },
        ),
        "",
        None,
        "",
        build=_huge_blob,
        loads="bad",
        within=20.0,
        peak_mib=32,
    ),
}


def healthy(repo: PipelinesRepo) -> None:
    repo.write("pipelines/good_sling/dagster.yaml", SLING_YAML)
    repo.write(
        "pipelines/good_sling/replication.yaml", REPLICATION.replace("bad.rows", "good.rows")
    )
    repo.write("pipelines/good_sling/data/rows.csv", "id\n1\n2\n")
    repo.write(
        "pipelines/good_dlt/pipeline.py",
        "import dlt\n\n\n@dlt.resource\ndef rows():\n    yield {'id': 1}\n",
    )
    repo.write(
        "pipelines/good_dlt/dagster.yaml",
        "dlt: {source: 'pipeline.py:rows', dataset_name: good_data}\n",
    )


def refresh_script(capsys) -> tuple[int, dict, str]:
    code = SCRIPT.main(["--json", "-q"])
    out = capsys.readouterr()
    summary = json.loads(out.out) if out.out.strip().startswith("{") else {}
    return code, summary, out.out + out.err


def environment(tmp_path: Path, repo: PipelinesRepo, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point refresh.py at `repo`, with a token and a database password about; the state dir."""
    state = tmp_path / "state"
    for var, value in {
        "ELT_REPO_URL": repo.url,
        "ELT_STATE_DIR": str(state),
        "ELT_WAREHOUSE": str(state / "warehouse.duckdb"),
        "ELT_PROJECT_DIR": str(tmp_path),
        "ELT_DISCOVERY_TIMEOUT": "8",
        "GITHUB_TOKEN": TOKEN,
        "HOSTILE_DB_URL": f"postgresql://loader:{DB_PASSWORD}@127.0.0.1:9/shop",
    }.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return state


def first_refresh(repo: PipelinesRepo, capsys) -> str:
    """Commit the healthy pipelines and refresh them: the commit."""
    healthy(repo)
    before = repo.commit("healthy")
    code, summary, _ = refresh_script(capsys)
    assert code == 0 and summary["pipelines"] == list(HEALTHY), summary
    return before


def assert_contained(
    output: str, tmp_path: Path, entries_before: set[str], repo: PipelinesRepo, *kept: str
) -> None:
    """No secret in the output or any file under the state dir; nothing written outside the
    state dir; the manifests of the commits in `kept` kept."""
    state = tmp_path / "state"
    secrets = (TOKEN.encode(), DB_PASSWORD.encode())
    assert not [s for s in secrets if s in output.encode()], output
    leaked = []
    for path in state.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            leaked += [str(path) for s in secrets if s in data]
    assert leaked == [], leaked
    assert set(os.listdir(tmp_path)) == entries_before
    assert git(repo.path, "status", "--porcelain") == ""
    for commit in kept:
        assert json.loads((state / "manifests" / f"{commit}.json").read_text())["commit"] == commit


@pytest.mark.parametrize("name", CASES)
def test_a_hostile_folder_is_one_pipelines_error(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    case = CASES[name]
    repo = PipelinesRepo(tmp_path / "origin")
    environment(tmp_path, repo, monkeypatch)
    before = first_refresh(repo, capsys)

    for rel, content in case.files.items():
        repo.write(f"pipelines/{rel}", content)
    for rel, target in (case.links or {}).items():
        link = repo.path / "pipelines" / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
    if case.build:
        case.build(repo.path)
    after = repo.commit(name)
    entries_before = set(os.listdir(tmp_path))
    if case.peak_mib is not None:
        tracemalloc.start()
    started = time.monotonic()
    try:
        code, summary, output = refresh_script(capsys)
    finally:
        took = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1] / 2**20 if tracemalloc.is_tracing() else 0.0
        tracemalloc.stop()

    assert code in (0, 1), output
    assert "Traceback" not in output
    assert summary["commit"] == after, output
    assert set(HEALTHY) <= set(summary["pipelines"]), summary
    if case.loads:
        assert case.loads in summary["pipelines"], summary
    assert len(summary["disabled"]) == case.disabled, summary["disabled"]
    if case.within is not None:
        assert took < case.within, f"the refresh took {took:.1f}s"
    if case.peak_mib is not None:
        assert peak < case.peak_mib, f"the refresh allocated {peak:.0f} MiB"
    errors = summary["errors"]
    if case.path:
        mine = [e for e in errors if e["path"] == f"pipelines/{case.path}"]
        assert mine, errors
        if case.field:
            assert any(e["field"] == case.field for e in mine), mine
        assert any(case.says in e["message"] for e in mine), mine
    else:
        assert code == 0 and not errors, errors
    assert_contained(output, tmp_path, entries_before, repo, before)
    # Pipeline code left no process running and wrote nothing into the worktree it was run in.
    assert running(MARKER) == []
    worktree = tmp_path / "state" / "repo" / "worktrees" / after
    assert git(worktree, "status", "--porcelain", "--ignored") == ""
    assert not [p for p in (tmp_path / "state").rglob("evil.txt")]
    # And the code location loads what was refreshed: no name Dagster would refuse got through.
    settings = load_settings()
    manifest = ManifestStore(settings.manifest_path).read()
    build_definitions(manifest, settings)


SLOW_DLT = (
    "import time\n\nimport dlt\n\ntime.sleep(2)  # holds the refresh in discovery\n\n\n"
    "@dlt.resource\ndef rows():\n    yield {'id': 1}\n"
)


def test_a_force_push_during_a_refresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The branch is rewritten while a refresh discovers what it fetched: that refresh finishes
    with the commit it fetched, and the next one takes the rewritten branch, no questions."""
    repo = PipelinesRepo(tmp_path / "origin")
    environment(tmp_path, repo, monkeypatch)
    before = first_refresh(repo, capsys)
    repo.write("pipelines/slow/pipeline.py", SLOW_DLT)
    repo.write(
        "pipelines/slow/dagster.yaml", "dlt: {source: 'pipeline.py:rows', dataset_name: slow}\n"
    )
    fetched = repo.commit("slow")
    entries_before = set(os.listdir(tmp_path))
    source = git_source(load_settings())
    done: list[int] = []
    running = threading.Thread(target=lambda: done.append(SCRIPT.main(["--json", "-q"])))
    running.start()
    try:
        # Fetched and checked out: the refresh is now importing the slow pipeline.
        give_up = time.monotonic() + 30
        while (current := source.current()) is None or current.commit != fetched:
            assert running.is_alive() and time.monotonic() < give_up, "it never checked out"
            time.sleep(0.01)
        git(repo.path, "reset", "--hard", "--quiet", "HEAD~1")
        repo.write("pipelines/forced/dagster.yaml", SLING_YAML)
        repo.write("pipelines/forced/replication.yaml", REPLICATION.replace("bad.", "forced."))
        repo.write("pipelines/forced/data/rows.csv", "id\n3\n")
        forced = repo.commit("rewritten")
        with pytest.raises(subprocess.CalledProcessError):  # history rewritten, not added to
            git(repo.path, "merge-base", "--is-ancestor", fetched, forced)
        assert running.is_alive(), "the refresh was over before the force-push"
    finally:
        running.join(60)
    out = capsys.readouterr()
    output = out.out + out.err
    summary = json.loads(out.out)

    assert done in ([0], [1]), output
    assert "Traceback" not in output
    assert summary["commit"] == fetched, output
    assert summary["pipelines"] == ["good_dlt", "good_sling", "slow"], summary
    assert_contained(output, tmp_path, entries_before, repo, before)

    code, summary, output = refresh_script(capsys)
    assert code == 0, output
    assert "Traceback" not in output and "fast-forward" not in output, output
    assert summary["commit"] == forced, output
    assert summary["pipelines"] == ["forced", "good_dlt", "good_sling"], summary
    assert summary["errors"] == [], summary
    assert_contained(output, tmp_path, entries_before, repo, before, fetched)
