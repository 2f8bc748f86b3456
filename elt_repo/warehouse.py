"""The warehouse dlt and Sling load into by default: a DuckDB file, or a Postgres database.

`ELT_WAREHOUSE` (or `warehouse:` in elt.yaml) is a path, or
`postgresql://user:password@host:port/db`. The URL is kept as written, `${VAR}` unresolved,
until a run needs it, and it is only ever shown redacted: it may hold a literal password.
Each tool gets its parts as separate values, so a password taken from `${VAR}` needs no quoting.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode

from elt_repo.redact import redact, remember_secret
from elt_repo.settings import VARIABLE, SettingsError, interpolate

DUCKDB = "duckdb"
POSTGRES = "postgres"
SETTING = "ELT_WAREHOUSE"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_POSTGRES_SCHEMES = ("postgresql", "postgres")
# scheme://[userinfo@]host[:port][/database][?query]; userinfo may not hold @ / ? # unquoted.
_URL = re.compile(
    r"^[^:]+://(?:(?P<userinfo>[^@/?#]*)@)?(?P<host>\[[^\]/]*\]|[^:/?#\[\]]*)"
    r"(?::(?P<port>[^/?#]*))?(?:/(?P<database>[^?#]*))?(?:\?(?P<query>[^#]*))?$"
)


class WarehouseError(SettingsError):
    """An ELT_WAREHOUSE that cannot be used. The message never shows the URL's credentials."""

    def __init__(self, problem: str):
        super().__init__(f"{SETTING}: {problem}")


def _decoded(text: str) -> str:
    """Percent-decode what is written literally; `${VAR}` references stay for later."""
    out, last = [], 0
    for match in VARIABLE.finditer(text):
        out += [unquote(text[last : match.start()]), match.group(0)]
        last = match.end()
    return "".join([*out, unquote(text[last:])])


@dataclass(frozen=True)
class PostgresParts:
    """A Postgres URL taken apart, each part decoded, `${VAR}` references unresolved."""

    host: str
    database: str
    user: str
    password: str | None = field(default=None, repr=False)
    port: str | None = None
    query: Mapping[str, str] = field(default_factory=dict)  # libpq parameters (sslmode, ...)


def parse_postgres_url(url: str) -> PostgresParts:
    """The parts of a postgresql:// URL; a WarehouseError that shows none of them if it is not one."""
    scheme = _SCHEME.match(url)
    if scheme is None or scheme.group(1).lower() not in _POSTGRES_SCHEMES:
        shown = f"a {scheme.group(1)}:// URL" if scheme else "no URL"
        raise WarehouseError(
            f"expected a DuckDB file or a postgresql://user:password@host:port/db URL, got {shown}"
        )
    match = _URL.match(url)
    if match is None or url.count("@") > 1 or (match["userinfo"] is None and "@" in url):
        raise WarehouseError(
            "the Postgres URL does not parse; write @ / ? # in the user or password as "
            "%40 %2F %3F %23, or take the password from the environment: ${PG_PASSWORD}"
        )
    userinfo, host = match.group("userinfo"), match.group("host").strip("[]")
    port, database = match.group("port"), match.group("database")
    if not host:
        raise WarehouseError("the Postgres URL names no host")
    if port is not None and not (port.isdigit() or VARIABLE.fullmatch(port)):
        raise WarehouseError("the Postgres URL's port is not a number")
    if not database or "/" in database:
        raise WarehouseError("the Postgres URL names no database (…@host:port/database)")
    user, has_password, password = (userinfo or "").partition(":")
    if not user:
        raise WarehouseError("the Postgres URL names no user (postgresql://user:…@host/db)")
    try:
        query = dict(parse_qsl(match.group("query") or "", strict_parsing=bool(match["query"])))
    except ValueError:
        raise WarehouseError("the Postgres URL's query is not key=value&...") from None
    return PostgresParts(
        host=_decoded(host),
        database=_decoded(database),
        user=_decoded(user),
        password=_decoded(password) if has_password else None,
        port=port or None,
        query=query,
    )


@dataclass(frozen=True)
class Warehouse:
    """Where dlt and Sling load by default: `path` for DuckDB, `url` (as written) for Postgres."""

    kind: str  # DUCKDB or POSTGRES
    path: Path | None = None
    url: str | None = field(default=None, repr=False)  # may hold a literal password

    @property
    def is_duckdb(self) -> bool:
        return self.kind == DUCKDB

    @property
    def file(self) -> Path:
        """The DuckDB file; an error for a warehouse that is not one."""
        if self.path is None:
            raise ValueError(f"the warehouse is not a DuckDB file: {self}")
        return self.path

    @property
    def display(self) -> str:
        """The warehouse as it may be shown: the file, or the URL without its credentials."""
        return str(self.path) if self.path is not None else redact(self.url or "", {})

    def __str__(self) -> str:
        return self.display

    @property
    def parts(self) -> PostgresParts:
        """The Postgres URL's parts, `${VAR}` unresolved."""
        if self.url is None:
            raise ValueError(f"the warehouse is not a Postgres database: {self}")
        return parse_postgres_url(self.url)

    def resolved(self, environ: Mapping[str, str]) -> PostgresParts:
        """The parts with `${VAR}` filled from `environ`. From here on, redaction masks the
        password wherever this process shows text."""
        parts = self.parts

        def fill(value: str) -> str:
            return interpolate(value, environ, f"{SETTING}: ")

        password = fill(parts.password) if parts.password is not None else None
        if password:
            remember_secret(password)
        return PostgresParts(
            host=fill(parts.host),
            database=fill(parts.database),
            user=fill(parts.user),
            password=password,
            port=fill(parts.port) if parts.port else None,
            query={k: fill(v) for k, v in parts.query.items()},
        )

    def resolved_url(self, environ: Mapping[str, str]) -> str:
        """A libpq URL with `${VAR}` filled and every part quoted: for dlt and psycopg only."""
        p = self.resolved(environ)
        login = quote(p.user, safe="") + (
            f":{quote(p.password, safe='')}" if p.password is not None else ""
        )
        host = f"[{p.host}]" if ":" in p.host else p.host
        port = f":{p.port}" if p.port else ""
        query = f"?{urlencode(dict(p.query))}" if p.query else ""
        return f"postgresql://{login}@{host}{port}/{quote(p.database, safe='')}{query}"

    def catalog(self, environ: Mapping[str, str]) -> str:
        """What `dagster/table_name` starts with: the file's stem, or the database's name."""
        return self.file.stem if self.is_duckdb else self.resolved(environ).database


def parse_warehouse(raw: str, environ: Mapping[str, str], project_dir: Path) -> Warehouse:
    """ELT_WAREHOUSE: a DuckDB path (relative to the project) or a Postgres URL.

    A URL keeps its `${VAR}` references; a path is filled in at once, as it always was.
    """
    text = raw.strip()
    if _SCHEME.match(text) is None:
        text = interpolate(text, environ, f"{SETTING}: ")
        if _SCHEME.match(text) is None:  # a path, as before
            path = Path(text)
            return Warehouse(DUCKDB, path=path if path.is_absolute() else project_dir / path)
    parse_postgres_url(text)
    return Warehouse(POSTGRES, url=text)
