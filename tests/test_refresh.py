"""refresh() against real Git repos: new commits, retired pipelines, broken configs, bad repos."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from elt_repo.manifest import ManifestStore
from elt_repo.refresh import refresh
from tests.conftest import PipelinesRepo, git

SLING = {"tool": "sling", "group": "g"}
REPLICATION = "source: LOCAL\ntarget: WAREHOUSE\nstreams:\n  file://./data/x.csv: {object: raw.x}\n"


def add_sling(repo: PipelinesRepo, name: str, config: dict | None = None) -> None:
    repo.write(f"pipelines/{name}/dagster.yaml", config or SLING)
    repo.write(f"pipelines/{name}/replication.yaml", REPLICATION)
    repo.write(f"pipelines/{name}/data/x.csv", "id\n1\n")


def names(result) -> list[str]:
    return sorted(p.name for p in result.manifest.pipelines)


def test_examples_refresh_then_skip_cheaply(examples_repo: PipelinesRepo, settings_for) -> None:
    settings = settings_for(examples_repo.url)
    first = refresh(settings)
    head = git(examples_repo.path, "rev-parse", "HEAD")
    assert first.changed and first.error is None and first.manifest.commit == head
    assert names(first) == [
        "csv_orders",
        "github_issues",
        "shop_events",
        "shop_sqlite",
        "store_sales",
    ]
    assert ManifestStore(settings.manifest_path).read() == first.manifest
    again = refresh(settings, known_commit=head)
    assert again.skipped and not again.changed and again.manifest == first.manifest


def test_new_commit_adds_and_removes_pipelines(repo: PipelinesRepo, settings_for) -> None:
    add_sling(repo, "one")
    repo.commit()
    settings = settings_for(repo.url)
    assert names(refresh(settings)) == ["one"]
    add_sling(repo, "two")
    sha = repo.commit("add two")
    result = refresh(settings, known_commit="0" * 40)
    assert result.changed and result.manifest.commit == sha and names(result) == ["one", "two"]
    repo.remove("pipelines/one")
    repo.commit("retire one")
    assert names(refresh(settings)) == ["two"]


def test_broken_config_keeps_last_good_version(repo: PipelinesRepo, settings_for) -> None:
    add_sling(repo, "stable")
    add_sling(repo, "fragile")
    good = repo.commit()
    settings = settings_for(repo.url)
    refresh(settings)
    repo.write("pipelines/fragile/dagster.yaml", {**SLING, "retries": "many"})
    bad = repo.commit("break fragile")
    result = refresh(settings)
    manifest = result.manifest
    assert manifest.commit == bad and names(result) == ["fragile", "stable"]
    assert manifest.pinned == {"fragile": good}
    (error,) = manifest.errors
    assert (error.path, error.field) == ("pipelines/fragile/dagster.yaml", "retries")
    # Later commits never prune the worktree the kept pipeline still runs from.
    for i in range(7):
        repo.write("pipelines/stable/data/x.csv", f"id\n{i}\n")
        repo.commit(f"churn {i}")
        refresh(settings)
    assert (
        settings.repo_state_dir / "worktrees" / good / "pipelines/fragile/replication.yaml"
    ).is_file()
    repo.write("pipelines/fragile/dagster.yaml", SLING)
    repo.commit("fix fragile")
    fixed = refresh(settings).manifest
    assert fixed.pinned == {} and fixed.errors == ()


def test_new_broken_pipeline_only_adds_an_error(repo: PipelinesRepo, settings_for) -> None:
    add_sling(repo, "stable")
    repo.write("pipelines/newbie/dagster.yaml", "tool: sling\nschedule: {cron_schedule: nope}\n")
    repo.commit()
    result = refresh(settings_for(repo.url))
    assert names(result) == ["stable"]
    assert [(e.path, e.field) for e in result.manifest.errors] == [
        ("pipelines/newbie/dagster.yaml", "schedule.cron_schedule")
    ]


def _bad_repo_cases(tmp_path: Path, repo: PipelinesRepo) -> dict[str, tuple[dict, str, str]]:
    empty = tmp_path / "empty"
    empty.mkdir()
    subprocess.run(["git", "init", "--quiet", str(empty)], check=True)
    return {
        "nowhere": (
            {"ELT_REPO_URL": f"file://{tmp_path}/no/such/repo"},
            "ELT_REPO_URL",
            "does not exist",
        ),
        "unreachable": (
            {"ELT_REPO_URL": "https://127.0.0.1:9/acme/pipelines.git"},
            "ELT_REPO_URL",
            "cannot reach",
        ),
        "branch": (
            {"ELT_REPO_BRANCH": "no-such-branch"},
            "ELT_REPO_BRANCH",
            "ref 'no-such-branch' not found",
        ),
        "empty": ({"ELT_REPO_URL": f"file://{empty}"}, "ELT_REPO_URL", "has no commits"),
        "unsafe": (
            {"ELT_REPO_URL": "ext::sh -c touch% /tmp/pwned"},
            "ELT_REPO_URL",
            "refusing unsafe URL",
        ),
    }


@pytest.mark.parametrize("case", ["nowhere", "unreachable", "branch", "empty", "unsafe"])
def test_bad_repo_is_one_clear_error_and_keeps_what_was_loaded(
    tmp_path: Path, repo: PipelinesRepo, settings_for, case: str
) -> None:
    add_sling(repo, "stable")
    repo.commit()
    loaded = refresh(settings_for(repo.url)).manifest
    env, field, message = _bad_repo_cases(tmp_path, repo)[case]
    result = refresh(settings_for(env.pop("ELT_REPO_URL", repo.url), **env))
    assert result.error is not None and result.error.field == field
    assert message in result.error.message and "\n" not in str(result.error)
    assert result.manifest.pipelines == loaded.pipelines and result.manifest.commit == loaded.commit
    assert result.manifest.errors[0] == result.error


def test_recovered_fetch_clears_the_error_at_the_same_commit(
    tmp_path: Path, repo: PipelinesRepo, settings_for
) -> None:
    add_sling(repo, "stable")
    commit = repo.commit()
    settings = settings_for(repo.url)
    refresh(settings)
    moved = tmp_path / "moved"
    repo.path.rename(moved)  # the remote is briefly gone
    assert refresh(settings, known_commit=commit).error is not None
    moved.rename(repo.path)
    recovered = refresh(settings, known_commit=commit)
    assert recovered.error is None and not recovered.skipped
    assert recovered.manifest.errors == () and recovered.manifest.commit == commit
    assert refresh(settings, known_commit=commit).skipped


def test_bad_repo_on_first_refresh_writes_an_error_manifest(tmp_path: Path, settings_for) -> None:
    settings = settings_for(f"file://{tmp_path}/nothing")
    result = refresh(settings)
    assert result.manifest.pipelines == () and result.manifest.commit is None
    assert ManifestStore(settings.manifest_path).read().errors[0].field == "ELT_REPO_URL"


def test_missing_pipelines_dir(repo: PipelinesRepo, settings_for) -> None:
    add_sling(repo, "x")
    repo.commit()
    result = refresh(settings_for(repo.url, ELT_PIPELINES_DIR="elsewhere"))
    assert result.error is None
    assert [(e.path, e.field) for e in result.manifest.errors] == [
        ("elsewhere", "ELT_PIPELINES_DIR")
    ]


def test_default_is_the_bundled_example_repo(tmp_path: Path) -> None:
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, "")
    assert settings.uses_example_repo
    result = refresh(settings)
    assert result.error is None and len(result.manifest.pipelines) == 5
    assert result.manifest.url.startswith("example repo")
    assert git(settings.example_repo_dir, "rev-parse", "HEAD") == result.manifest.commit
    # Refreshing again with unchanged examples makes no new commit.
    assert refresh(settings).manifest.commit == result.manifest.commit


def test_token_never_reaches_the_manifest(repo: PipelinesRepo, settings_for) -> None:
    add_sling(repo, "x")
    repo.commit()
    settings = settings_for(repo.url, GITHUB_TOKEN="ghp_TOPSECRET_42")
    refresh(settings)
    for path in settings.state_dir.rglob("*"):
        if path.is_file():
            assert b"ghp_TOPSECRET_42" not in path.read_bytes(), path


LOGGED_DLT = """
import os
import dlt

with open(os.environ["IMPORT_LOG"], "a") as log:
    log.write(os.path.basename(os.path.dirname(os.path.abspath(__file__))) + "\\n")

@dlt.resource
def rows():
    yield {"n": 1}

@dlt.source
def src():
    return rows
"""


def test_only_folders_whose_tree_changed_are_parsed_again(
    repo: PipelinesRepo, settings_for, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "imports.log"
    monkeypatch.setenv("IMPORT_LOG", str(log))
    for name in ("alpha", "beta"):
        repo.write(f"pipelines/{name}/pipeline.py", LOGGED_DLT)
        repo.write(f"pipelines/{name}/dagster.yaml", {"dlt": {"source": "pipeline.py:src"}})
    add_sling(repo, "gamma")
    repo.write("pipelines/broken/dagster.yaml", {"retries": "lots", "tool": "sling"})
    repo.commit("four pipelines")
    settings = settings_for(repo.url, ELT_DISCOVERY_SANDBOX="off")  # the imports log is a file
    first = refresh(settings)
    assert sorted(log.read_text().split()) == ["alpha", "beta"] and first.reused == 0
    (error,) = first.manifest.errors

    repo.write("pipelines/alpha/dagster.yaml", {"dlt": {"source": "pipeline.py:src"}, "retries": 2})
    repo.write("README.md", "outside the pipelines folder\n")
    repo.commit("alpha retries")
    second = refresh(settings, known_commit=first.manifest.commit)
    assert sorted(log.read_text().split()) == ["alpha", "alpha", "beta"]  # alpha only
    assert second.reused == 3  # beta, gamma and the broken one
    by_name = {p.name: p for p in second.manifest.pipelines}
    assert by_name["alpha"].retry.max_retries == 2 and by_name["beta"].retry is None
    assert second.manifest.errors == (error,)  # kept as it was, not parsed again

    repo.write("README.md", "a change outside the pipelines\n")
    repo.commit("docs")
    third = refresh(settings, known_commit=second.manifest.commit)
    assert third.reused == 4 and len(log.read_text().split()) == 3
    assert third.manifest.pipelines == second.manifest.pipelines


# A source that needs a driver module: missing until a test puts it on PYTHONPATH.
NEEDS_DRIVER = """
import dlt
import shopdriver


@dlt.source
def src():
    return dlt.resource([{"id": 1}], name=shopdriver.TABLE)
"""
# A source that takes a token, given as ${SHOP_TOKEN} in its dlt.args.
NEEDS_TOKEN = """
import dlt


@dlt.source
def src(token: str):
    return dlt.resource([{"id": 1}], name="tokens")
"""
# A source whose tables come from outside Git, as sql_database reflects a database's tables.
TABLES_FROM_ENV = """
import os
import dlt


@dlt.source
def src():
    return [dlt.resource([{"id": 1}], name=t) for t in os.environ["SHOP_TABLES"].split(",")]
"""


def test_errors_of_the_environment_are_retried_at_the_next_refresh(
    repo: PipelinesRepo, settings_for, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing module and an unset variable are the environment's, not the folder's: the
    next refresh tries again with no new commit. A config error stays cached."""
    repo.write("pipelines/driver/pipeline.py", NEEDS_DRIVER)
    repo.write("pipelines/driver/dagster.yaml", {"dlt": {"source": "pipeline.py:src"}})
    repo.write("pipelines/token/pipeline.py", NEEDS_TOKEN)
    repo.write(
        "pipelines/token/dagster.yaml",
        {"dlt": {"source": "pipeline.py:src", "args": {"token": "${SHOP_TOKEN}"}}},
    )
    repo.write("pipelines/broken/dagster.yaml", {"retries": "lots", "tool": "sling"})
    repo.commit("three pipelines")
    monkeypatch.delenv("SHOP_TOKEN", raising=False)
    settings = settings_for(repo.url)
    first = refresh(settings)
    errors = {e.pipeline: e for e in first.manifest.errors}
    assert sorted(errors) == ["broken", "driver", "token"] and first.manifest.pipelines == ()
    assert "No module named 'shopdriver'" in errors["driver"].message
    assert "install the package that provides 'shopdriver' beside elt_repo" in (
        errors["driver"].message
    )
    assert "README: Pipeline dependencies" in errors["driver"].message
    assert "SHOP_TOKEN" in errors["token"].message
    assert [errors[n].retry for n in ("broken", "driver", "token")] == [False, True, True]

    drivers = tmp_path / "site"
    drivers.mkdir()
    (drivers / "shopdriver.py").write_text("TABLE = 'orders'\n")
    monkeypatch.setenv("PYTHONPATH", str(drivers))
    monkeypatch.setenv("SHOP_TOKEN", "t")
    second = refresh(settings)  # same commit
    assert second.reused == 1  # the broken config only
    assert names(second) == ["driver", "token"]
    assert [e.pipeline for e in second.manifest.errors] == ["broken"]


def test_force_discovers_unchanged_folders_again(repo: PipelinesRepo, tmp_path: Path) -> None:
    """Tables that come from the source change without a commit: --force finds them."""
    from tests.test_refresh_script import run

    repo.write("pipelines/shop/pipeline.py", TABLES_FROM_ENV)
    repo.write("pipelines/shop/dagster.yaml", {"dlt": {"source": "pipeline.py:src"}})
    repo.commit("shop")
    env = {"ELT_REPO_URL": repo.url, "SHOP_TABLES": "orders,customers"}

    def tables(*args: str, **more: str) -> list[str]:
        done = run(tmp_path, "--json", *args, **{**env, **more})
        assert done.returncode == 0, done.stderr[-2000:]
        manifest = ManifestStore(tmp_path / "state" / "manifest.json").read()
        return sorted(r.table_name for r in manifest.pipelines[0].dlt.resources)

    assert tables() == ["customers", "orders"]
    assert tables(SHOP_TABLES="orders,customers,coupons") == ["customers", "orders"]
    assert tables("--force", SHOP_TABLES="orders,customers,coupons") == [
        "coupons",
        "customers",
        "orders",
    ]


SQL_DATABASE_PYMYSQL = """
from dlt.sources.sql_database import sql_database


def shop_db():
    return sql_database("mysql+pymysql://shop:s3cr3t-pw@127.0.0.1:9/shop")
"""


def test_a_missing_driver_names_the_package_to_install(repo: PipelinesRepo, settings_for) -> None:
    """dlt's sql_database with a MySQL URL, where its driver (pymysql) is not installed."""
    repo.write("pipelines/shop_db/pipeline.py", SQL_DATABASE_PYMYSQL)
    repo.write("pipelines/shop_db/dagster.yaml", {"dlt": {"source": "pipeline.py:shop_db"}})
    repo.commit("shop_db")
    (error,) = refresh(settings_for(repo.url)).manifest.errors
    assert (error.path, error.field, error.retry) == (
        "pipelines/shop_db/dagster.yaml",
        "dlt.source",
        True,
    )
    assert "No module named 'pymysql'" in error.message
    assert "install pymysql beside elt_repo" in error.message
    assert "s3cr3t-pw" not in error.message


def test_sling_wildcards_list_a_source_named_in_the_settings(
    repo: PipelinesRepo, settings_for, tmp_path: Path
) -> None:
    """`elt.yaml` connections reach discovery: `main.*` is listed from the settings' SHOP."""
    import sqlite3

    db = tmp_path / "shop.sqlite"
    with sqlite3.connect(db) as con:
        for table in ("products", "orders"):
            con.execute(f"create table {table} (id int)")
    (tmp_path / "elt.yaml").write_text(
        f"connections:\n  SHOP: {{type: sqlite, instance: '{db}'}}\n"
    )
    repo.write("pipelines/shop/dagster.yaml", {"tool": "sling"})
    repo.write(
        "pipelines/shop/replication.yaml",
        "source: SHOP\ntarget: WAREHOUSE\nstreams:\n  main.*: {object: 'shop.{stream_table}'}\n",
    )
    repo.commit("shop")
    manifest = refresh(settings_for(repo.url)).manifest
    assert manifest.errors == ()
    (pipeline,) = manifest.pipelines
    assert sorted(s.table for s in pipeline.sling.streams) == ["orders", "products"]


def test_a_credential_in_a_discovery_error_is_not_stored(
    repo: PipelinesRepo, settings_for, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The author's code puts what it was given into its exception, as code often does.
    repo.write(
        "pipelines/shop/pipeline.py",
        "import os\n\n\ndef orders(credentials):\n"
        "    raise ValueError(f\"cannot connect with {credentials} ({os.environ['SHOP_API_KEY']})\")\n",
    )
    repo.write(
        "pipelines/shop/dagster.yaml",
        {"dlt": {"source": "pipeline.py:orders", "args": {"credentials": "${PG_URL}"}}},
    )
    repo.commit("a source that leaks")
    monkeypatch.setenv("PG_URL", "postgresql://loader:s3cr3t-pw@127.0.0.1:9/shop")
    monkeypatch.setenv("SHOP_API_KEY", "ak-9f8e7d6c5b")
    settings = settings_for(repo.url)
    (error,) = refresh(settings).manifest.errors
    assert "cannot connect with postgresql://***@127.0.0.1:9/shop (***)" in error.message
    stored = [settings.manifest_path, *settings.manifest_path.parent.glob("manifests/*.json")]
    assert len(stored) == 2
    for path in stored:
        text = path.read_text()
        assert "s3cr3t-pw" not in text and "ak-9f8e7d6c5b" not in text, path
