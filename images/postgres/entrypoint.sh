#!/bin/sh
# Entrypoint of blacklist-postgres: Debian's PostgreSQL 15 behind the environment contract of
# the official postgres image, so that manifests written for that image work unchanged.
#
# `postgres [OPTION...]` (the default command; options alone mean the same):
#   - as root: hands PGDATA and the socket directory to the postgres user (uid 999) and runs
#     itself again as that user; as any other uid (Kubernetes' runAsUser) it goes on directly;
#   - on a PGDATA without PG_VERSION (missing, empty, or holding only a filesystem's
#     lost+found): initdb with the superuser POSTGRES_USER (default postgres) and its password
#     POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust), then creates
#     POSTGRES_DB (default: the user's name), runs /docker-entrypoint-initdb.d/*.sql, *.sql.gz
#     and *.sh, listens on every address and admits password logins from all of them
#     (`host all all all scram-sha-256`);
#   - execs the server, so that it is PID 1 and receives the stop signal itself.
# Any other command runs as given. Nothing is written outside PGDATA and the socket
# directory, so the root filesystem can be read-only.
set -eu

: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
: "${POSTGRES_INITDB_ARGS:=}"
export PGDATA
SOCKET_DIR=/var/run/postgresql
INITDB_SCRIPTS=/docker-entrypoint-initdb.d

say() {
    printf 'postgres-entrypoint: %s\n' "$*" >&2
}

fail() {
    say "$*"
    exit 1
}

run_psql() {
    psql --no-psqlrc --quiet --set ON_ERROR_STOP=1 --username "$POSTGRES_USER" "$@"
}

# Root may own anything: give the server's directories to postgres, then drop to it.
become_postgres() {
    mkdir -p "$PGDATA" "$SOCKET_DIR"
    find "$PGDATA" ! -user postgres -exec chown postgres:postgres {} +
    chmod 0700 "$PGDATA"
    chown postgres:postgres "$SOCKET_DIR"
    chmod 2775 "$SOCKET_DIR"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" postgres "$@"
}

# Everything initdb leaves in DIRECTORY, where the server expects it: PGDATA.
initdb_into() {
    directory=$1
    if [ "$POSTGRES_HOST_AUTH_METHOD" = trust ]; then
        say "POSTGRES_HOST_AUTH_METHOD=trust: every client may log in as any user, unchecked"
        # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of options
        initdb --pgdata="$directory" --username="$POSTGRES_USER" \
            --auth-local=trust --auth-host=trust $POSTGRES_INITDB_ARGS
    else
        # The password reaches initdb through a pipe: it is never written to a file.
        # shellcheck disable=SC2086
        printf '%s\n' "$POSTGRES_PASSWORD" | initdb --pgdata="$directory" \
            --username="$POSTGRES_USER" --pwfile=/dev/stdin \
            --auth-local=trust --auth-host=scram-sha-256 $POSTGRES_INITDB_ARGS
    fi
    printf '\n# Added by postgres-entrypoint: clients come from other hosts.\n%s\n' \
        "listen_addresses = '*'" >>"$directory/postgresql.conf"
    printf '\n# Added by postgres-entrypoint: logins from every address.\n%s\n' \
        "host all all all $POSTGRES_HOST_AUTH_METHOD" >>"$directory/pg_hba.conf"
}

# Creates POSTGRES_DB and runs the init scripts on a server reachable only by its socket.
populate() {
    pg_ctl --pgdata="$PGDATA" --wait --silent \
        --options="-c listen_addresses='' -c unix_socket_directories='$SOCKET_DIR'" start
    if [ "$POSTGRES_DB" != postgres ]; then
        printf 'CREATE DATABASE :"name";\n' \
            | run_psql --dbname postgres --set name="$POSTGRES_DB"
    fi
    for script in "$INITDB_SCRIPTS"/*; do
        case $script in
            *.sh)
                say "running $script"
                # shellcheck source=/dev/null  # the user's script
                if [ -x "$script" ]; then "$script"; else . "$script"; fi
                ;;
            *.sql)
                say "running $script"
                run_psql --dbname "$POSTGRES_DB" --file "$script"
                ;;
            *.sql.gz)
                say "running $script"
                gzip --decompress --stdout "$script" | run_psql --dbname "$POSTGRES_DB"
                ;;
            "$INITDB_SCRIPTS/*") ;;
            *) say "ignoring $script" ;;
        esac
    done
    pg_ctl --pgdata="$PGDATA" --wait --silent --mode=fast stop
}

initialise() {
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
        fail "PGDATA $PGDATA holds no database and POSTGRES_PASSWORD is empty: set" \
            "POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust, which checks no password)"
    fi
    for entry in "$PGDATA"/* "$PGDATA"/.[!.]* "$PGDATA"/..?*; do
        if [ "$entry" != "$PGDATA/lost+found" ] && { [ -e "$entry" ] || [ -L "$entry" ]; }; then
            fail "PGDATA $PGDATA is not empty but holds no PG_VERSION: refusing to initialise it"
        fi
    done
    say "initialising a database cluster in $PGDATA"
    if [ -e "$PGDATA/lost+found" ]; then
        # initdb refuses a non-empty directory, as a filesystem's root is.
        initdb_into "$PGDATA/.initdb"
        mv "$PGDATA/.initdb"/* "$PGDATA/"
        rmdir "$PGDATA/.initdb"
    else
        initdb_into "$PGDATA"
    fi
    populate
    say "initialised; database $POSTGRES_DB, superuser $POSTGRES_USER"
}

# True when the server's options only ask it to print something (a version, a setting).
only_prints() {
    for option in "$@"; do
        case $option in
            -'?' | --help | -V | --version | --describe-config | -C | -C*) return 0 ;;
        esac
    done
    return 1
}

case ${1:-postgres} in
    -*) set -- postgres "$@" ;;
esac
if [ "${1:-postgres}" != postgres ]; then
    exec "$@"
fi
[ $# -gt 0 ] && shift
if only_prints "$@"; then
    exec postgres "$@"
fi

if [ "$(id -u)" = 0 ]; then
    become_postgres "$@"
fi

if [ ! -w "$SOCKET_DIR" ]; then
    fail "the socket directory $SOCKET_DIR is not writable by uid $(id -u): mount a volume there"
fi
if ! mkdir -p "$PGDATA" 2>/dev/null; then
    fail "cannot create PGDATA $PGDATA as uid $(id -u): mount a volume writable by this user"
fi
if [ ! -O "$PGDATA" ]; then
    fail "PGDATA $PGDATA belongs to uid $(stat -c %u "$PGDATA"), not to uid $(id -u)" \
        "(the server refuses that): point PGDATA at a subdirectory of the volume"
fi
# The server requires 0700 (or 0750); Kubernetes' fsGroup adds group rights at every mount.
chmod 0700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    initialise
fi
exec postgres "$@"
