"""The throwaway PostgreSQL server of tests/postgres_server.py, and the `postgres` extra."""

from __future__ import annotations

import socket

import psycopg
import pytest

from tests.postgres_server import PostgresServer


def test_password_login_on_loopback_only(postgres: PostgresServer) -> None:
    rows = postgres.execute(
        "SELECT current_user, current_database(), host(inet_server_addr()),"
        " current_setting('listen_addresses'), current_setting('fsync')"
    )
    assert rows == [(postgres.user, postgres.dbname, "127.0.0.1", "127.0.0.1", "off")]
    # Leak check first, and URLs compared with the password masked: no failure prints it.
    leaked = postgres.password in repr(postgres) + postgres.redacted_url
    assert not leaked, "the password is in repr() or redacted_url"
    masked = postgres.url.replace(postgres.password, "***")
    assert masked == f"postgresql://{postgres.user}:***@127.0.0.1:{postgres.port}/elt"
    assert masked == postgres.redacted_url


@pytest.mark.parametrize("password", ["wrong-password", ""])
def test_wrong_or_missing_password_is_rejected(postgres: PostgresServer, password: str) -> None:
    with pytest.raises(psycopg.OperationalError, match="password"):
        postgres.connect(password=password).close()


def test_data_written_is_read_back(postgres: PostgresServer) -> None:
    postgres.execute("CREATE TABLE roundtrip (id int PRIMARY KEY, name text)")
    postgres.execute("INSERT INTO roundtrip VALUES (%s, %s), (%s, %s)", (1, "ada", 2, "grace"))
    with postgres.connect() as other:  # a second connection sees the committed rows
        rows = other.execute("SELECT id, name FROM roundtrip ORDER BY id").fetchall()
    assert rows == [(1, "ada"), (2, "grace")]


def test_stop_closes_the_port_and_removes_the_dir(postgres: PostgresServer) -> None:
    # `postgres` only gates on the binaries (skip or fail); this test runs its own server.
    server = PostgresServer(user="stopper").start()
    port, directory = server.port, server.dir
    assert directory is not None and directory.is_dir()
    assert server.execute("SELECT 1") == [(1,)]
    server.stop()
    assert not directory.exists()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 2):
        pass
    server.stop()  # a second stop is harmless


def test_startup_failure_shows_the_log_tail_without_the_password(
    postgres: PostgresServer,
) -> None:
    server = PostgresServer(settings={"shared_buffers": "bogus"}, startup_timeout=20)
    with pytest.raises(RuntimeError, match="did not start") as failure:
        server.start()
    message = str(failure.value)
    assert 'invalid value for parameter "shared_buffers"' in message
    leaked = server.password in message
    assert not leaked, "the password is in the startup error"
    assert server.dir is None  # cleaned up


def test_plain_url_works_with_sqlalchemy_and_dlt_sql_database(postgres: PostgresServer) -> None:
    import sqlalchemy as sa
    from dlt.sources.sql_database import sql_database

    engine = sa.create_engine(postgres.url)  # plain postgresql://, no +driver
    try:
        assert engine.dialect.driver == "psycopg"
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 42")).scalar() == 42
    finally:
        engine.dispose()

    postgres.execute("CREATE TABLE customers (id int PRIMARY KEY, email text)")
    source = sql_database(credentials=postgres.url, schema="public")
    assert "customers" in source.resources
