"""Point dlt, Sling and Sling's DuckDB CLI at files we ship, and their state under ELT_STATE_DIR.

Sling's PyPI wrapper reads SLING_BINARY at import time and otherwise downloads a binary, and its
DuckDB target downloads a CLI and extensions. Everything here comes from wheels instead, so no
download is ever attempted.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from elt_repo.settings import Settings, own_secret_names


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def sling_binary() -> str | None:
    """The Sling binary from the platform wheel (sling-linux-amd64 / -arm64)."""
    for package, binary in (
        ("sling_linux_amd64", "sling-linux-amd64"),
        ("sling_linux_arm64", "sling-linux-arm64"),
    ):
        folder = _package_dir(package)
        if folder and (folder / "bin" / binary).is_file():
            return str(folder / "bin" / binary)
    return None


def duckdb_cli() -> str | None:
    """The DuckDB CLI from the duckdb-cli wheel, the same version as the Python duckdb."""
    folder = _package_dir("duckdb_cli")
    return str(folder / "duckdb") if folder and (folder / "duckdb").is_file() else None


def duckdb_version() -> str:
    import duckdb

    return duckdb.__version__


def install_duckdb_extensions(home: Path) -> None:
    """Copy the json and httpfs extensions from their wheels where the DuckDB CLI looks."""
    target = home / ".duckdb" / "extensions" / f"v{duckdb_version()}" / "linux_amd64"
    for package in ("duckdb_extension_json", "duckdb_extension_httpfs"):
        folder = _package_dir(package)
        if folder is None:
            continue
        for ext in folder.glob("extensions/*/*.duckdb_extension"):
            if not (target / ext.name).is_file():
                target.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(ext, target / ext.name)


def sling_environment(sling_state: Path) -> dict[str, str]:
    """Variables for the Sling subprocess only; its HOME is where DuckDB's CLI finds extensions."""
    home = sling_state / "home"
    install_duckdb_extensions(home)
    env = {"HOME": str(home), "SLING_HOME_DIR": str(sling_state), "DO_NOT_TRACK": "1"}
    if os.environ.get("DUCKDB_PATH") is None and duckdb_cli():
        env["DUCKDB_PATH"] = duckdb_cli() or ""
    return env


def configure_process(settings: Settings) -> None:
    """Set process-wide defaults before dlt or sling is imported; the user's values win."""
    binary = sling_binary()
    if binary:
        os.environ.setdefault("SLING_BINARY", binary)
    os.environ.setdefault("DLT_DATA_DIR", str(settings.dlt_dir))
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")


def pipeline_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` as pipeline code may see it."""
    hidden = set(own_secret_names(environ))
    return {k: v for k, v in environ.items() if k not in hidden}


@contextmanager
def without_own_secrets() -> Iterator[None]:
    """Run pipeline code (a dlt source, a Sling subprocess) without elt_repo's credentials in
    os.environ; they are back when it returns."""
    saved = {k: os.environ.pop(k) for k in own_secret_names(os.environ)}
    try:
        yield
    finally:
        os.environ.update(saved)
