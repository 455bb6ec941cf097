"""A real PostgreSQL server (Debian's binaries) on a loopback port, for tests and benchmarks.

``initdb`` refuses to run as root, so when we are root the server runs as the
``postgres`` system user (created by Debian's package) through ``runuser``.
The server can be stopped and started again on the same port with the same
data, which is how tests take the database "down" and bring it back. Given a
directory of certificates it serves TLS too, for tests of ``sslmode=verify-full``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2
import psycopg2.extensions

from blacklist_devtools.lifecycle import Server
from blacklist_devtools.net import free_port
from blacklist_devtools.processes import stop_process
from blacklist_operator.model.resource import DEFAULT_DATABASE_NAME, DEFAULT_DATABASE_USER


def postgres_bindir() -> Path:
    """Find the newest Debian PostgreSQL bin directory, or explain how to get one."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    for candidate in reversed(candidates):
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    raise FileNotFoundError(
        "PostgreSQL server binaries are missing: install them with `apt-get install -y postgresql`"
    )


class PostgresServer(Server):
    """One PostgreSQL cluster in its own directory, with one database and one password user."""

    def __init__(
        self,
        base_dir: Path | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        database: str = DEFAULT_DATABASE_NAME,
        user: str = DEFAULT_DATABASE_USER,
        tls_dir: Path | None = None,
    ) -> None:
        """``tls_dir``: serve TLS with its ``server.crt``/``server.key`` (pki.create_server_pki)."""
        self.base_dir = base_dir or Path(tempfile.mkdtemp(prefix="blacklist-pg-"))
        self.tls_dir = tls_dir
        self.host = host
        self.port = port or free_port(host)
        self.database = database
        self.user = user
        self.password = secrets.token_urlsafe(12).replace("-", "x").replace("_", "y")
        self._bindir = postgres_bindir()
        self._process: subprocess.Popen[bytes] | None = None
        self._as_root = os.geteuid() == 0

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        """Directory of the server's Unix socket (kept out of /var/run)."""
        return self.base_dir / "socket"

    @property
    def log_path(self) -> Path:
        """Where the server's own log goes."""
        return self.base_dir / "postgres.log"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the database."""
        return (
            f"postgresql+psycopg2://{self.user}:{self.password}"
            f"@{self.host}:{self.port}/{self.database}"
        )

    @property
    def dsn(self) -> str:
        """The libpq connection string of the database."""
        return (
            f"host={self.host} port={self.port} dbname={self.database} "
            f"user={self.user} password={self.password}"
        )

    def _command(self, *argv: str) -> list[str]:
        """Wrap a command so it runs as the ``postgres`` user when we are root."""
        if self._as_root:
            return ["runuser", "-u", "postgres", "--", *argv]
        return list(argv)

    def _initialise(self) -> None:
        """Create the cluster, the user with its password and the database."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o755)
        self.socket_dir.mkdir(exist_ok=True)
        if self._as_root:
            shutil.chown(self.base_dir, "postgres")
            shutil.chown(self.socket_dir, "postgres")
        password_file = self.base_dir / "superuser-password"
        password_file.write_text(self.password + "\n")
        if self._as_root:
            shutil.chown(password_file, "postgres")
        subprocess.run(
            self._command(
                str(self._bindir / "initdb"),
                "--pgdata",
                str(self.data_dir),
                "--username",
                "postgres",
                "--auth-local",
                "trust",
                "--auth-host",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--no-sync",
            ),
            check=True,
            capture_output=True,
        )
        password_file.unlink()
        if self.tls_dir is not None:
            # The server refuses a key that others may read, or that it does not own.
            for name in ("server.crt", "server.key"):
                copy = self.base_dir / name
                shutil.copyfile(self.tls_dir / name, copy)
                copy.chmod(0o600)
                if self._as_root:
                    shutil.chown(copy, "postgres")

    def _tls_settings(self) -> list[str]:
        if self.tls_dir is None:
            return []
        return [
            "-c", "ssl=on",
            "-c", f"ssl_cert_file={self.base_dir / 'server.crt'}",
            "-c", f"ssl_key_file={self.base_dir / 'server.key'}",
        ]  # fmt: skip

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (initialising it on first start) and wait until it accepts."""
        if self._process is not None and self._process.poll() is None:
            return
        if not (self.data_dir / "PG_VERSION").exists():
            self._initialise()
            first_start = True
        else:
            first_start = False
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._command(
                    str(self._bindir / "postgres"),
                    "-D",
                    str(self.data_dir),
                    "-p",
                    str(self.port),
                    "-h",
                    self.host,
                    "-k",
                    str(self.socket_dir),
                    # Tests value speed over durability of a throwaway cluster.
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=300",
                    *self._tls_settings(),
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready(timeout)
        if first_start:
            self._create_user_and_database()

    def superuser_connection(self, dbname: str = "postgres") -> psycopg2.extensions.connection:
        """An autocommit connection as the superuser, over the Unix socket (roles, grants)."""
        connection = psycopg2.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", dbname=dbname
        )
        connection.autocommit = True
        return connection

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(
                    f"PostgreSQL exited with {self._process.returncode}; "
                    f"see {self.log_path}:\n{self.log_path.read_text()[-2000:]}"
                )
            try:
                self.superuser_connection().close()
                return
            except psycopg2.OperationalError as error:
                last_error = error
                time.sleep(0.1)
        raise TimeoutError(f"PostgreSQL did not accept connections in {timeout} s: {last_error}")

    def _create_user_and_database(self) -> None:
        connection = self.superuser_connection()
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE ROLE {self.user} LOGIN PASSWORD %s", (self.password,))
                cursor.execute(f"CREATE DATABASE {self.database} OWNER {self.user}")
        finally:
            connection.close()

    def connect(self) -> psycopg2.extensions.connection:
        """Open a connection to the database as the password user, over TCP."""
        return psycopg2.connect(self.dsn)

    def create_database(self, name: str) -> None:
        """Another database owned by the password user (several tenants on one server)."""
        connection = self.superuser_connection()
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                cursor.execute(f"CREATE DATABASE {name} OWNER {self.user}")
        finally:
            connection.close()

    def create_role(self, name: str, password: str) -> None:
        """A login role with no rights of its own (a DBA's narrower role for the service)."""
        connection = self.superuser_connection()
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP ROLE IF EXISTS {name}")
                cursor.execute(f"CREATE ROLE {name} LOGIN PASSWORD %s", (password,))
        finally:
            connection.close()

    def connect_to(self, name: str) -> psycopg2.extensions.connection:
        """Open a connection to database ``name`` as the password user, over TCP."""
        return psycopg2.connect(self.dsn.replace(f"dbname={self.database}", f"dbname={name}"))

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server with a fast shutdown; the data stays for the next ``start``."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        # SIGINT is PostgreSQL's "fast" shutdown: open sessions are ended.
        stop_process(process, timeout, signal.SIGINT, whole_group=True)
        self._process = None

    def destroy(self) -> None:
        """Stop the server and delete its files."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def close(self) -> None:
        """Leaving a ``with`` block destroys the server: it was made for that block."""
        self.destroy()
