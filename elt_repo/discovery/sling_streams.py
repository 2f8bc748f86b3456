"""A replication's streams resolved by Sling's own rules: wildcards, runtime variables, defaults."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from elt_repo.discovery.pipeline_files import resolve_local
from elt_repo.redact import plain, redact
from elt_repo.schemas import SlingStreamSpec, config_error
from elt_repo.settings import SettingsError, interpolate_tree
from elt_repo.tool_env import sling_binary, sling_environment
from elt_repo.warehouse import Warehouse

WAREHOUSE = "WAREHOUSE"
# Connection properties that name a local file; a relative one resolves against the pipeline folder.
PATH_PROPS = ("instance", "database", "url", "connection_string", "path")
# Sling expands a file glob into one stream per file only when the object names the file;
# otherwise it reads the whole glob as one stream (verified with `sling run`, see the tests).
_PER_FILE_VARS = {"stream_file_name", "stream_table", "stream_name", "stream_file_path"}
_DEFAULT_SCHEMA = {"duckdb": "main", "motherduck": "main", "sqlite": "main", "postgres": "public"}
_VARIABLE = re.compile(r"\{([A-Za-z_]+)\}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


# Sling's Postgres driver knows no sslmode `prefer` (libpq's default, which dlt and psycopg
# use) and defaults to `require`, which a server without TLS refuses.
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def warehouse_connection(warehouse: Warehouse) -> dict[str, Any]:
    """The warehouse as a Sling connection; a URL's `${VAR}` stay until a run fills them."""
    if warehouse.is_duckdb:
        return {"type": "duckdb", "instance": str(warehouse.file)}
    parts = warehouse.parts
    conn = {"type": "postgres", "host": parts.host, "user": parts.user, "database": parts.database}
    if parts.password is not None:
        conn["password"] = parts.password
    if parts.port:
        conn["port"] = parts.port
    if "sslmode" not in parts.query and parts.host in _LOOPBACK:
        conn["sslmode"] = "disable"  # a loopback connection: TLS would protect nothing
    return {**conn, **parts.query}


def connection_configs(
    own: Mapping[str, Any], shared: Mapping[str, Any], warehouse: Warehouse
) -> dict[str, Mapping[str, Any]]:
    """Every connection a pipeline may name: the warehouse, the settings' ones, its own."""
    return {WAREHOUSE: warehouse_connection(warehouse), **shared, **own}


def filled_connection(
    name: str, config: Mapping[str, Any], folder: Path, environ: Mapping[str, str]
) -> dict[str, Any]:
    """A connection as Sling gets it: `${VAR}` filled, relative paths resolved in the folder."""
    filled = interpolate_tree(dict(config), environ, f"sling.connections.{name}: ")
    for prop in PATH_PROPS:
        if prop in filled:
            filled[prop] = resolve_local(filled[prop], folder)
    return filled


def connection_json(
    name: str, config: Mapping[str, Any], folder: Path, environ: Mapping[str, str]
) -> str:
    """A connection as the JSON value of the env var Sling reads."""
    return json.dumps(filled_connection(name, config, folder, environ))


def _clean(value: str) -> str:
    return _UNSAFE.sub("_", value)


def is_file_stream(stream: str) -> bool:
    """File streams are URLs (`file://`, `s3://`); database streams are `schema.table`."""
    return "://" in stream


def is_wildcard(stream: str, config: Mapping[str, Any]) -> bool:
    """A stream Sling expands: a glob, but not a custom SQL one (`select * from x`)."""
    if is_file_stream(stream):
        return "*" in stream or "?" in stream
    custom_sql = bool(config.get("sql")) or len(stream.split()) > 1
    return not custom_sql and ("*" in stream or "?" in stream)


def stream_variables(stream: str, folder: Path) -> dict[str, str]:
    """Sling's per-stream runtime variables, cleaned as Sling cleans them."""
    if is_file_stream(stream):
        path = PurePosixPath(stream.split("://", 1)[1])
        if stream.startswith("file://./") or stream.startswith("file://../"):
            path = PurePosixPath(str((folder / stream[len("file://") :]).resolve()))
        if "*" in str(path) or "?" in str(path):
            # Sling names a glob read as one stream after the folder it starts in (verified).
            path = PurePosixPath(str(path).split("*")[0].split("?")[0].rsplit("/", 1)[0])
            stream = str(path) + "/"
        ext = path.suffix[1:] if not stream.endswith("/") else ""
        values = {
            "stream_schema": "",
            "stream_table": "",
            "stream_name": _clean(str(path)).lower(),
            "stream_full_name": str(path),
            "stream_file_folder": _clean(path.parent.name),
            "stream_file_name": _clean(path.stem if ext else path.name),
            "stream_file_ext": ext,
            "stream_file_path": _clean(str(path).lstrip("/")),
        }
    else:
        schema, _, table = stream.rpartition(".")
        schema, table = schema.strip('"'), table.strip('"')
        values = {
            "stream_schema": _clean(schema),
            "stream_table": _clean(table),
            "stream_name": _clean(stream.replace('"', "")).lower(),
            "stream_full_name": f'"{schema}"."{table}"' if schema else f'"{table}"',
        }
    for key, value in list(values.items()):
        values[f"{key}_lower"], values[f"{key}_upper"] = value.lower(), value.upper()
    return values


def fill_object(template: str, variables: Mapping[str, str]) -> str:
    """An object with Sling's variables filled; others (ours, unknown ones) stay as written."""
    return _VARIABLE.sub(lambda m: variables.get(m.group(1), m.group(0)), template)


def split_object(obj: str, default_schema: str) -> tuple[str, str]:
    """(schema, table) of a resolved object; DuckDB keeps the case as written (verified)."""
    parts = [p.strip('"') for p in obj.split(".")]
    table = _clean(parts[-1]) if "{" in parts[-1] else parts[-1]
    return (parts[-2] if len(parts) > 1 else default_schema), table


class ListingError(ValueError):
    """The source could not be listed (refused, timed out, no Sling): the environment's fault."""


class _Lister:
    """Lists a source's streams the way Sling expands a wildcard: `sling conns discover`."""

    def __init__(self, name: str, config: str | None, environ: Mapping[str, str], timeout: float):
        self.name, self.config, self.environ, self.timeout = name, config, environ, timeout

    def __call__(self, pattern: str) -> list[tuple[str, str]]:
        """(stream, type) rows Sling lists for `pattern`."""
        binary = os.environ.get("SLING_BINARY") or sling_binary() or "sling"
        with tempfile.TemporaryDirectory(prefix="elt-sling-") as state:
            # Only what Sling needs: its home, and the one connection; never our own secrets.
            env = {**sling_environment(Path(state)), "SLING_OUTPUT": "json"}
            env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
            if self.config is not None:
                env[self.name] = self.config
            elif self.name in self.environ:
                env[self.name] = self.environ[self.name]
            command = [binary, "conns", "discover", self.name, "--pattern", pattern]
            try:
                done = subprocess.run(
                    command, env=env, capture_output=True, text=True, timeout=self.timeout
                )
            except subprocess.TimeoutExpired:
                raise ListingError(
                    f"listing {self.name} timed out after {self.timeout:g}s"
                ) from None
            except OSError as exc:
                raise ListingError(f"cannot start sling: {exc}") from None
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        if done.returncode != 0 or not lines:
            if done.returncode == 0 and "no result" in done.stderr + done.stdout:
                return []
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            message = plain(" ".join(tail))
            raise ListingError(f"cannot list {self.name}: {redact(message, self.environ)}")
        table = json.loads(lines[-1])
        fields = [f.lower() for f in table["fields"]]
        rows = [dict(zip(fields, row, strict=False)) for row in table["rows"]]
        if "schema" in fields:
            return [(f"{r['schema']}.{r['name']}", str(r.get("type", ""))) for r in rows]
        return [(str(r["name"]), str(r.get("type", ""))) for r in rows]


def _expand(
    pattern: str, merged: Mapping[str, Any], folder: Path, rel: str, lister: _Lister
) -> list[str]:
    """The concrete streams a wildcard stream stands for, as Sling would name them."""
    if not is_wildcard(pattern, merged):
        return [pattern]
    if is_file_stream(pattern):
        used = set(_VARIABLE.findall(str(merged.get("object") or "")))
        if not used & _PER_FILE_VARS:
            return [pattern]  # one stream over the whole glob
        if not pattern.startswith(("file://./", "file://../")):
            raise config_error(rel, f"streams.{pattern}", "only file://./ globs can be listed")
        local = folder / pattern[len("file://") :]
        root = folder.resolve()
        found = []
        for name, kind in lister(str(local.resolve())):
            path = Path(name).resolve()
            if kind != "file":
                continue
            if not path.is_relative_to(root):
                raise ValueError(f"{name} is outside the pipeline folder")
            found.append("file://./" + path.relative_to(root).as_posix())
        return sorted(found)
    return sorted(name for name, _ in lister(pattern))


def _inside(stream: str, folder: Path) -> bool:
    """Whether a relative file stream (its glob's fixed part) stays in the folder, links followed."""
    fixed = stream[len("file://") :].split("*")[0].split("?")[0]
    return (folder / fixed).resolve().is_relative_to(folder.resolve())


def _under(path: str, roots: tuple[Path, ...]) -> bool:
    """Whether an absolute local path (its glob's fixed part), links followed, is under a root."""
    fixed = path.split("*")[0].split("?")[0]
    if not fixed.startswith("/"):
        return False  # relative to wherever Sling runs: never allowed
    resolved = Path(fixed).resolve()
    return any(resolved.is_relative_to(root.resolve()) for root in roots)


def resolve_streams(
    config: Mapping[str, Any],
    folder: Path,
    rel: str,
    connections: Mapping[str, Any],
    environ: Mapping[str, str],
    timeout: float,
    shared: Mapping[str, Mapping[str, Any]] | None = None,
    local_roots: tuple[Path, ...] = (),
) -> tuple[SlingStreamSpec, ...]:
    """Every enabled stream Sling would run for a replication, with the table it lands in.

    `connections` are the pipeline's own; `shared` the warehouse and the settings' ones
    (`connection_configs`), which the pipeline's override. A local file stream reads inside
    the pipeline's folder, or under one of `local_roots` (ELT_LOCAL_ROOTS), nowhere else.
    """
    configs = {**(shared or {WAREHOUSE: {"type": "duckdb"}}), **connections}
    source, target = str(config["source"]), str(config["target"])
    target_conf = configs.get(target) or {}
    target_type = str(target_conf.get("type", "")).lower()
    default_schema = str(target_conf.get("schema") or _DEFAULT_SCHEMA.get(target_type, "main"))
    source_conf = configs.get(source)
    try:
        source_json = connection_json(source, source_conf, folder, environ) if source_conf else None
    except SettingsError as exc:
        raise config_error(rel, "source", str(exc)) from None
    lister = _Lister(source, source_json, environ, timeout)
    defaults = config.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise config_error(rel, "defaults", "must be a mapping")
    for pattern, own in config["streams"].items():
        if own is not None and not isinstance(own, Mapping):
            raise config_error(rel, f"streams.{pattern}", "must be a mapping (or empty)")
    explicit = {
        name
        for name, own in config["streams"].items()
        if not is_wildcard(name, {**defaults, **(own or {})})
    }
    specs: list[SlingStreamSpec] = []
    seen: dict[tuple[str, str], str] = {}
    keys: dict[str, str] = {}
    for pattern, own in config["streams"].items():
        merged = {**defaults, **(own or {})}
        if merged.get("disabled"):
            continue
        if not merged.get("object"):
            raise config_error(rel, f"streams.{pattern}.object", "required: Sling needs an object")
        try:
            names = _expand(pattern, merged, folder, rel, lister)
        except ValueError as exc:
            retry = isinstance(exc, ListingError)
            raise config_error(rel, f"streams.{pattern}", str(exc), retry) from None
        for name in names:
            if name != pattern and name in explicit:
                continue  # Sling lets a stream listed by name override its wildcard
            if name.startswith(("file://./", "file://../")) and not _inside(name, folder):
                raise config_error(rel, f"streams.{pattern}", f"{name} leaves the pipeline folder")
            elsewhere = not name.startswith(("file://./", "file://../"))
            if name.startswith("file://") and elsewhere and not _under(name[7:], local_roots):
                raise config_error(
                    rel,
                    f"streams.{pattern}",
                    f"{name} reads outside the pipeline folder; write it file://./..., "
                    "or list its host folder in ELT_LOCAL_ROOTS",
                )
            variables = {
                **stream_variables(name, folder),
                "target_schema": default_schema,
                "source_name": source.lower(),
                "target_name": target.lower(),
            }
            schema, table = split_object(
                fill_object(str(merged["object"]), variables), default_schema
            )
            where = (schema.lower(), table.lower())  # DuckDB names are case-insensitive
            if where in seen or table in keys:
                other = seen.get(where) or keys[table]
                message = f"{name!r} lands in table {table!r} of schema {schema!r}, like {other!r}"
                raise config_error(rel, f"streams.{pattern}", message)
            seen[where], keys[table] = name, name
            specs.append(SlingStreamSpec(name=name, table=table, pattern=pattern, schema=schema))
    if not specs:
        raise config_error(rel, "streams", "no enabled streams")
    return tuple(specs)
