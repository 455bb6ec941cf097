"""Stand-in for the official ``postgres`` image's entrypoint, for the local pod runner.

It does what ``docker-entrypoint.sh`` of the image does, with Debian's
PostgreSQL: on an empty ``PGDATA`` it runs ``initdb`` with ``POSTGRES_USER``
and ``POSTGRES_PASSWORD``, creates ``POSTGRES_DB``, and allows password logins
from any host (``host all all all scram-sha-256``); then it runs the server as
the ``postgres`` user. The server listens on the pod's own loopback address
(``BLACKLIST_POD_ADDRESS``, set by the runner) instead of ``*``, because the
pods share this machine's network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2

from blacklist_devtools.postgres import postgres_bindir

RUN_DIR = Path("/run/postgresql")


def _as_postgres(*argv: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def initialise(data: Path, user: str, password: str, database: str) -> None:
    """Create the cluster, its superuser with a password, and the database."""
    bindir = postgres_bindir()
    with tempfile.NamedTemporaryFile("w", dir=RUN_DIR, delete=False) as password_file:
        password_file.write(password + "\n")
    _own(Path(password_file.name))
    try:
        subprocess.run(
            _as_postgres(
                str(bindir / "initdb"),
                f"--pgdata={data}",
                f"--username={user}",
                f"--pwfile={password_file.name}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
            ),
            check=True,
        )
    finally:
        os.unlink(password_file.name)
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write("host all all all scram-sha-256\n")
    if database == user or database == "postgres":
        return
    # A server on the private socket only, as the image's entrypoint does, to create the database.
    server = subprocess.Popen(
        _as_postgres(
            str(bindir / "postgres"), "-D", str(data), "-c", "listen_addresses=",
            "-k", str(RUN_DIR),
        )
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                connection = psycopg2.connect(host=str(RUN_DIR), user=user, dbname="postgres")
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{database}"')
        connection.close()
    finally:
        server.terminate()
        server.wait(60)


def main() -> None:
    """Initialise ``PGDATA`` if it is empty, then become the server."""
    data = Path(os.environ.get("PGDATA", "/var/lib/postgresql/data"))
    user = os.environ.get("POSTGRES_USER", "postgres")
    password = os.environ.get("POSTGRES_PASSWORD", "")
    database = os.environ.get("POSTGRES_DB", user)
    address = os.environ.get("BLACKLIST_POD_ADDRESS", "127.0.0.1")
    if not password:
        sys.exit("Error: Database is uninitialized and superuser password is not specified.")
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    _own(RUN_DIR)
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o700)
    _own(data)
    if not (data / "PG_VERSION").exists():
        initialise(data, user, password, database)
    argv = _as_postgres(
        str(postgres_bindir() / "postgres"), "-D", str(data),
        "-c", f"listen_addresses={address}", "-k", str(RUN_DIR),
    )  # fmt: skip
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
