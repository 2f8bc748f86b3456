"""The Dagster instance's storage on Postgres, from a plain postgresql:// URL (deploy/dagster.yaml).

dagster-postgres takes the URL to SQLAlchemy as written, and SQLAlchemy 2.1 gives a bare
`postgresql://` (or `postgres://`) to psycopg 3. dagster-postgres is written for psycopg2: its
webserver hook sets the statement timeout inside `with conn:`, which closes a psycopg 3
connection (every webserver query then fails with "the connection is closed"), and its retry
of a table two processes create at once reads psycopg2's `pgcode`. This storage names the
psycopg2 driver for such a URL; a URL that names a driver itself is left as it is.
"""

from __future__ import annotations

import re
from typing import Any

from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

_BARE = re.compile(r"^postgres(?:ql)?://", re.IGNORECASE)


def with_psycopg2(url: str) -> str:
    """`url` with the psycopg2 driver named, when its scheme names none."""
    return _BARE.sub("postgresql+psycopg2://", url, count=1)


class PostgresStorage(DagsterPostgresStorage):
    """DagsterPostgresStorage for a plain postgresql://user:pass@host:port/db URL."""

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> DagsterPostgresStorage:
        return DagsterPostgresStorage(
            inst_data=inst_data,
            postgres_url=with_psycopg2(pg_url_from_config(config_value)),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )
