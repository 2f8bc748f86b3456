"""A throwaway PostgreSQL cluster for tests: initdb in a temp dir, a server on 127.0.0.1 only.

The binaries come from Debian's `postgresql` package (scripts/install_postgres.sh installs it).
The server refuses to run as root, so as root every server command runs as the `postgres` OS
user through `runuser`, in a directory that user owns. Clients log in over TCP with a password
(scram-sha-256); the unix socket, inside the temp dir, is for the superuser's setup only.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

PG_LIB = Path("/usr/lib/postgresql")
OS_USER = "postgres"  # the account Debian's package creates; used only when we are root
SUPERUSER = "postgres"
HOST = "127.0.0.1"


class PostgresNotInstalled(RuntimeError):
    """No PostgreSQL server binaries (initdb) were found."""


def find_bin_dir() -> Path | None:
    """The bin dir of the newest installed major version (/usr/lib/postgresql/<v>/bin), if any."""
    found = [p.parent for p in PG_LIB.glob("*/bin/initdb") if p.parent.parent.name.isdigit()]
    return max(found, key=lambda p: int(p.parent.name)) if found else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One cluster: `start()` it, use `.url` or `.execute()`, then `stop()` (or use `with`)."""

    def __init__(
        self,
        user: str = "elt",
        password: str | None = None,
        dbname: str = "elt",
        *,
        settings: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
        bin_dir: Path | None = None,
    ):
        self.host = HOST
        self.port: int | None = None
        self.user = user
        self.password = password or secrets.token_urlsafe(18)
        self.dbname = dbname
        self.settings = dict(settings or {})
        self.startup_timeout = startup_timeout
        self.bin_dir = bin_dir
        self.dir: Path | None = None
        self._proc: subprocess.Popen | None = None

    # -- addresses -------------------------------------------------------------------------

    def _url(self, password: str, dbname: str | None = None) -> str:
        user = quote(self.user, safe="")
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{dbname or self.dbname}"

    def new_database(self, name: str | None = None) -> str:
        """Create an empty database owned by the test role; its URL (a secret, like `url`)."""
        import psycopg
        from psycopg import sql

        name = name or f"t_{secrets.token_hex(6)}"
        with psycopg.connect(
            host=str(self.dir), port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(self.user)
                )
            )
        return self._url(quote(self.password, safe=""), name)

    @property
    def url(self) -> str:
        """postgresql://user:password@127.0.0.1:port/db (a secret: never log it)."""
        return self._url(quote(self.password, safe=""))

    @property
    def redacted_url(self) -> str:
        return self._url("***")

    def __repr__(self) -> str:
        return f"PostgresServer({self.redacted_url}, dir={self.dir})"

    @property
    def data_dir(self) -> Path:
        assert self.dir is not None, "not started"
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        assert self.dir is not None, "not started"
        return self.dir / "server.log"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> PostgresServer:
        bin_dir = self.bin_dir or find_bin_dir()
        if bin_dir is None:
            raise PostgresNotInstalled(
                f"no PostgreSQL server binaries in {PG_LIB}/*/bin; run scripts/install_postgres.sh"
            )
        self.bin_dir = bin_dir
        # pytest's tmp dirs (/tmp/pytest-of-root, mode 700) are closed to the postgres user.
        self.dir = Path(tempfile.mkdtemp(prefix="elt-pg-", dir="/tmp"))
        try:
            if os.geteuid() == 0:
                try:
                    account = pwd.getpwnam(OS_USER)
                except KeyError:
                    raise RuntimeError(
                        f"running as root, but there is no {OS_USER!r} OS user to run the server"
                    ) from None
                os.chown(self.dir, account.pw_uid, account.pw_gid)
            self._initdb()
            for attempt in range(3):  # another process may take the free port before we bind it
                self.port = free_port()
                if self._start_server(last_try=attempt == 2):
                    break
            self._create_role_and_db()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (immediate mode) and remove its directory. Safe to call twice."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._run(
                    ["pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate", "-w"],
                    check=False,
                )
                try:
                    self._proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=15)
            self._proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients ---------------------------------------------------------------------------

    def connect(self, **kwargs: Any):
        """A psycopg connection as the test role, over TCP with the password."""
        import psycopg

        params = dict(host=self.host, port=self.port, user=self.user, dbname=self.dbname)
        params.update(password=self.password, connect_timeout=10, autocommit=True)
        params.update(kwargs)
        return psycopg.connect(**params)

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None):
        """Run one statement as the test role (autocommit); return its rows, or None."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description is not None else None

    # -- internals -------------------------------------------------------------------------

    def _command(self, args: list[str]) -> list[str]:
        assert self.bin_dir is not None
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        return ["runuser", "-u", OS_USER, "--", *cmd] if os.geteuid() == 0 else cmd

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            self._command(args), cwd=self.dir, capture_output=True, text=True, timeout=120
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed with exit code {done.returncode}:\n"
                f"{self._redact(done.stdout + done.stderr)[-3000:]}"
            )
        return done

    def _initdb(self) -> None:
        self._run(
            [
                "initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "--encoding=UTF8",
                "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
            ]
        )  # fmt: skip

    def _start_server(self, last_try: bool) -> bool:
        """Start postgres and wait until it accepts connections; False if the port was taken."""
        assert self.dir is not None
        settings = {
            "listen_addresses": HOST,
            "port": str(self.port),
            "unix_socket_directories": str(self.dir),
            "unix_socket_permissions": "0700",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            # Never copy statement text into the log: CREATE ROLE ... PASSWORD is one.
            "log_min_error_statement": "panic",
            **self.settings,
        }
        args = ["postgres", "-D", str(self.data_dir)]
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self._command(args),
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in pytest must not stop it before teardown
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                if not last_try and "could not bind" in self._log_tail():
                    self._proc = None
                    return False
                self._fail(f"the server exited with code {self._proc.returncode}")
            # Our socket dir first: only our server answers there, so a stranger that holds the
            # TCP port cannot pass for it. It creates its unix socket after binding TCP.
            if self._isready(str(self.dir)) and self._isready(HOST):
                return True
            time.sleep(0.1)
        self._fail(f"the server was not ready within {self.startup_timeout:g} s")
        return False  # unreachable

    def _isready(self, host: str) -> bool:
        assert self.bin_dir is not None
        args = [str(self.bin_dir / "pg_isready"), "-q", "-t", "5", "-h", host, "-p", str(self.port)]
        return subprocess.run(args, capture_output=True, timeout=10).returncode == 0

    def _create_role_and_db(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            host=str(self.dir), port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(self.user), sql.Literal(self.password)
                )
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(self.dbname), sql.Identifier(self.user)
                )
            )

    def _log_tail(self, chars: int = 3000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return self._redact(text[-chars:])

    def _redact(self, text: str) -> str:
        return text.replace(self.password, "***") if self.password else text

    def _fail(self, what: str) -> None:
        raise RuntimeError(
            f"PostgreSQL at {self.redacted_url} did not start: {what}. "
            f"Tail of {self.log_path}:\n{self._log_tail()}"
        )
