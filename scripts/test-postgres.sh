#!/bin/sh
# A throwaway PostgreSQL 15 cluster for the tests (docs/testing.md): no service, no TCP, a unix socket in DIR.
#   scripts/test-postgres.sh start DIR   initdb + pg_ctl start (as user postgres when run as root); idempotent
#   scripts/test-postgres.sh stop DIR    pg_ctl stop, then DIR is removed (-m immediate: the data is thrown away,
#                                        so the shutdown checkpoint -m fast writes, 30 s on a busy disk, buys nothing)
# Connect with postgresql:///DB?host=DIR&user=nodeform (trust); members of role password_roles must give a
# password (scram-sha-256). ctest starts one for the run (fixture "postgres", tests/CMakeLists.txt); a test binary
# run by hand starts its own (tests/support/postgres_cluster.cpp). $NODEFORM_TEST_PG_BIN: the server's binaries.
set -eu
BIN=${NODEFORM_TEST_PG_BIN:-/usr/lib/postgresql/15/bin}
cmd=${1:-}
DIR=${2:-}
[ -n "$DIR" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
as_server() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case "$cmd" in
start)
    [ -x "$BIN/initdb" ] || { echo "test-postgres.sh: $BIN/initdb missing: install postgresql-15 (scripts/install-deps.sh test)" >&2; exit 1; }
    if [ -f "$DIR/data/postmaster.pid" ] && as_server "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
        exit 0
    fi
    rm -rf "$DIR"
    mkdir -p "$DIR"
    chmod 0700 "$DIR"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$DIR"
    as_server "$BIN/initdb" -D "$DIR/data" -U nodeform --auth=trust --no-sync -E UTF8 >"$DIR/initdb.log" 2>&1 || {
        cat "$DIR/initdb.log" >&2; exit 1; }
    printf 'local all +password_roles scram-sha-256\nlocal all all trust\n' >"$DIR/data/pg_hba.conf"
    as_server "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
        -o "-k $DIR -c listen_addresses='' -c shared_buffers=16MB -c max_connections=300" start >"$DIR/pg_ctl.log" 2>&1 || {
        cat "$DIR/pg_ctl.log" "$DIR/server.log" >&2; exit 1; }
    psql_bin=$BIN/psql
    [ -x "$psql_bin" ] || psql_bin=psql
    "$psql_bin" -X -q -h "$DIR" -U nodeform -d postgres -c "CREATE ROLE password_roles NOLOGIN" >/dev/null
    ;;
stop)
    if [ -f "$DIR/data/postmaster.pid" ]; then
        as_server "$BIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$DIR"
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
