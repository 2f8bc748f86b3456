"""Settings come from the environment over .env over elt.yaml over the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from elt_repo.settings import EXAMPLE_REPO_URL, SettingsError, interpolate, load_settings


def test_defaults(tmp_path: Path) -> None:
    s = load_settings({}, project_dir=tmp_path)
    assert s.repo_url == EXAMPLE_REPO_URL and s.uses_example_repo
    assert s.effective_repo_url == str(tmp_path / ".elt_state" / "example_repo")
    assert (s.repo_branch, s.pipelines_dir, s.auto_refresh, s.poll_interval) == (
        "main",
        "pipelines",
        True,
        60,
    )
    assert s.state_dir == tmp_path / ".elt_state"
    assert s.warehouse.path == tmp_path / "data" / "warehouse.duckdb"
    assert s.github_token is None
    assert s.inspector_idle == 300.0
    assert s.executor == "multiprocess"
    assert (
        load_settings({"ELT_EXECUTOR": "in_process"}, project_dir=tmp_path).executor == "in_process"
    )
    assert load_settings({"ELT_INSPECTOR_IDLE": "0"}, project_dir=tmp_path).inspector_idle == 0


def test_precedence_env_over_dotenv_over_elt_yaml(tmp_path: Path) -> None:
    (tmp_path / "elt.yaml").write_text(
        "repo_branch: from-yaml\npoll_interval: 30\npipelines_dir: yaml_dir\n"
    )
    (tmp_path / ".env").write_text(
        "# comment\nexport ELT_REPO_BRANCH='from-dotenv'\nELT_POLL_INTERVAL=20\n"
    )
    s = load_settings({"ELT_POLL_INTERVAL": "10"}, project_dir=tmp_path)
    assert (s.repo_branch, s.poll_interval, s.pipelines_dir) == ("from-dotenv", 10, "yaml_dir")


def test_interpolation() -> None:
    env = {"HOST": "db"}
    assert interpolate("pg://${HOST}:${PORT:-5432}", env) == "pg://db:5432"
    with pytest.raises(SettingsError, match="MISSING is not set"):
        interpolate("${MISSING}", env)


def test_elt_yaml_interpolates_paths_and_keeps_connections_raw(tmp_path: Path) -> None:
    (tmp_path / "elt.yaml").write_text(
        "warehouse: ${WH_DIR}/w.duckdb\nconnections:\n  PG: {type: postgres, password: '${PG_PASSWORD}'}\n"
    )
    s = load_settings({"WH_DIR": "/srv", "PG_PASSWORD": "hunter2"}, project_dir=tmp_path)
    assert s.warehouse.path == Path("/srv/w.duckdb")
    assert s.connections["PG"]["password"] == "${PG_PASSWORD}"


def test_token_is_not_in_repr(tmp_path: Path) -> None:
    s = load_settings({"GITHUB_TOKEN": "ghp_secret123"}, project_dir=tmp_path)
    assert s.github_token == "ghp_secret123"
    assert "ghp_secret123" not in repr(s)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ELT_POLL_INTERVAL": "soon"}, "ELT_POLL_INTERVAL: expected a number"),
        ({"ELT_POLL_INTERVAL": "1"}, "ELT_POLL_INTERVAL: must be at least 5"),
        ({"ELT_AUTO_REFRESH": "perhaps"}, "ELT_AUTO_REFRESH: expected true or false"),
        ({"ELT_DISCOVERY_TIMEOUT": "0"}, "ELT_DISCOVERY_TIMEOUT: must be at least 1"),
        ({"ELT_INSPECTOR_IDLE": "-1"}, "ELT_INSPECTOR_IDLE: must be at least 0"),
        ({"ELT_EXECUTOR": "threads"}, "ELT_EXECUTOR: expected one of multiprocess, in_process"),
        ({"ELT_DISCOVERY_MEMORY_MB": "-1"}, "ELT_DISCOVERY_MEMORY_MB: must be at least 0"),
        ({"ELT_DISCOVERY_CPU_SECONDS": "lots"}, "ELT_DISCOVERY_CPU_SECONDS: expected a number"),
        ({"ELT_DISCOVERY_SANDBOX": "on"}, "ELT_DISCOVERY_SANDBOX: expected one of auto, required"),
    ],
)
def test_bad_environment_values(tmp_path: Path, env: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(env, project_dir=tmp_path)


def test_discovery_limits_come_from_the_environment_and_reach_the_workers(tmp_path: Path) -> None:
    from elt_repo.refresh import worker_limits

    env = {
        "ELT_DISCOVERY_MEMORY_MB": "512",
        "ELT_DISCOVERY_CPU_SECONDS": "0",
        "ELT_DISCOVERY_SANDBOX": "Required",
    }
    limits = worker_limits(load_settings(env, project_dir=tmp_path))
    assert (limits.memory_mb, limits.cpu_seconds, limits.mode) == (512, 0, "required")
    default = worker_limits(load_settings({}, project_dir=tmp_path))
    assert (default.memory_mb, default.cpu_seconds, default.mode) == (2048, 60, "auto")


def test_bad_elt_yaml_names_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "elt.yaml").write_text("poll_intervall: 5\n")
    with pytest.raises(SettingsError, match=r"elt.yaml: poll_intervall: .*Unknown field"):
        load_settings({}, project_dir=tmp_path)


def test_bad_dotenv_line_names_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("OK=1\nthis is not a setting\n")
    with pytest.raises(SettingsError, match=r"\.env:2: expected KEY=VALUE"):
        load_settings({}, project_dir=tmp_path)


@pytest.mark.parametrize("value", ["../..", "pipelines/../../x", "a/../b"])
def test_a_pipelines_dir_that_leaves_the_repo_is_a_settings_error(value: str) -> None:
    with pytest.raises(SettingsError, match="ELT_PIPELINES_DIR: must be a folder inside"):
        load_settings({"ELT_PIPELINES_DIR": value})


def test_local_roots_are_absolute_folders() -> None:
    assert load_settings({"ELT_LOCAL_ROOTS": "/srv/landing:/data/in"}).local_roots == (
        Path("/srv/landing"),
        Path("/data/in"),
    )
    with pytest.raises(SettingsError, match="ELT_LOCAL_ROOTS: 'landing' is not an absolute"):
        load_settings({"ELT_LOCAL_ROOTS": "landing"})
