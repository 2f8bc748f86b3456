"""ELT_WAREHOUSE: a DuckDB file as always, or a Postgres URL kept as written and never shown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from elt_repo.redact import redact
from elt_repo.settings import SettingsError, load_settings
from tests.conftest import PROJECT_DIR

SECRET = "Hunter2-literal-pw"


def settings(tmp_path: Path, warehouse: str, **env: str):
    return load_settings({"ELT_WAREHOUSE": warehouse, **env}, project_dir=tmp_path)


def test_duckdb_stays_the_default_and_paths_work_as_before(tmp_path: Path) -> None:
    default = load_settings({}, project_dir=tmp_path).warehouse
    assert (default.kind, default.path) == ("duckdb", tmp_path / "data" / "warehouse.duckdb")
    assert str(default) == str(tmp_path / "data" / "warehouse.duckdb")
    assert settings(tmp_path, "w/x.duckdb").warehouse.path == tmp_path / "w" / "x.duckdb"
    assert settings(tmp_path, "${D}/x.duckdb", D="/srv").warehouse.file == Path("/srv/x.duckdb")
    assert settings(tmp_path, "/abs/x.duckdb").warehouse.catalog({}) == "x"


def test_a_postgres_url_keeps_its_variables_until_a_run_fills_them(tmp_path: Path) -> None:
    raw = "postgresql://loader:${PG_PASSWORD}@db.internal:6543/analytics?sslmode=require"
    warehouse = settings(tmp_path, raw).warehouse  # PG_PASSWORD need not be set to load
    assert (warehouse.kind, warehouse.url, warehouse.path) == ("postgres", raw, None)
    parts = warehouse.parts
    assert (parts.user, parts.password, parts.host, parts.port, parts.database) == (
        "loader",
        "${PG_PASSWORD}",
        "db.internal",
        "6543",
        "analytics",
    )
    assert parts.query == {"sslmode": "require"}
    # At run time: filled in, and quoted where a URL needs it.
    env = {"PG_PASSWORD": "p@ss/w:rd%"}
    assert warehouse.resolved(env).password == "p@ss/w:rd%"
    assert warehouse.resolved_url(env) == (
        "postgresql://loader:p%40ss%2Fw%3Ard%25@db.internal:6543/analytics?sslmode=require"
    )
    assert warehouse.catalog(env) == "analytics"
    with pytest.raises(SettingsError, match="ELT_WAREHOUSE: environment variable PG_PASSWORD"):
        warehouse.resolved({})


def test_elt_yaml_takes_a_postgres_url_too(tmp_path: Path) -> None:
    (tmp_path / "elt.yaml").write_text("warehouse: postgres://u:${PW}@127.0.0.1/wh\n")
    warehouse = load_settings({}, project_dir=tmp_path).warehouse
    assert warehouse.kind == "postgres" and warehouse.url == "postgres://u:${PW}@127.0.0.1/wh"
    assert warehouse.resolved_url({"PW": "x"}) == "postgresql://u:x@127.0.0.1/wh"


def test_a_literal_password_works_and_is_never_shown(tmp_path: Path) -> None:
    url = f"postgresql://loader:{SECRET}@127.0.0.1:5432/wh"
    loaded = settings(tmp_path, url)
    warehouse = loaded.warehouse
    assert warehouse.resolved_url({}) == url
    for shown in (str(warehouse), warehouse.display, repr(warehouse), repr(loaded)):
        assert SECRET not in shown
    assert str(warehouse) == "postgresql://***@127.0.0.1:5432/wh"
    # Once resolved, the password is masked wherever it turns up on its own.
    assert redact(f"FATAL: bad password {SECRET} for loader", {}) == (
        "FATAL: bad password *** for loader"
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"mysql://u:{SECRET}@h/db", "expected a DuckDB file or a postgresql://"),
        (f"postgresql://u:{SECRET}@/db", "names no host"),
        (f"postgresql://u:{SECRET}@h:{SECRET}/db", "port is not a number"),
        (f"postgresql://u:{SECRET}@h:5432", "names no database"),
        (f"postgresql://u:{SECRET}@h:5432/db/more", "names no database"),
        (f"postgresql://:{SECRET}@h/db", "names no user"),
        (f"postgresql://u:{SECRET}@x@h/db", "write @ / ? # in the user or password"),
        (f"postgresql://u:{SECRET}/x@h/db", "write @ / ? # in the user or password"),
        (f"postgresql://u:{SECRET}@h/db?sslmode", "query is not key=value"),
    ],
)
def test_a_bad_url_is_a_settings_error_that_names_the_setting_not_the_password(
    tmp_path: Path, url: str, problem: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        settings(tmp_path, url)
    message = str(raised.value)
    assert message.startswith("ELT_WAREHOUSE: ") and problem in message
    assert SECRET not in message and "Hunter2" not in message


def test_refresh_py_exits_2_on_a_bad_warehouse_and_prints_no_password(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ELT_PROJECT_DIR": str(tmp_path),
        "ELT_STATE_DIR": str(tmp_path / "state"),
        "ELT_WAREHOUSE": f"postgresql://u:{SECRET}@db.internal:port/wh",
    }
    done = subprocess.run(
        [sys.executable, "scripts/refresh.py", "--quiet"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ELT_WAREHOUSE: the Postgres URL's port is not a number")
    assert SECRET not in done.stdout + done.stderr
