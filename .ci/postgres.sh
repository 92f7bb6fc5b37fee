#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for the integration tests: a temp dir, 127.0.0.1 only,
# a free port, a generated password (scram over TCP; trust only on its private Unix socket).
#
# Sourced (what .ci/run does):
#     source .ci/postgres.sh || exit 1      # starts it and exports ORGSYNC_TEST_PG_*
#     trap orgsync_pg_stop EXIT             # stops it at exit, also on failure
# Run:
#     eval "$(bash .ci/postgres.sh start)"  # prints the export lines (also in $ORGSYNC_TEST_PG_DIR/env.sh)
#     bash .ci/postgres.sh stop [DIR]       # DIR defaults to $ORGSYNC_TEST_PG_DIR
#
# Exported: ORGSYNC_TEST_PG_HOST PORT USER PASSWORD DB (connection), ORGSYNC_TEST_PG_CTL (a
# pg_ctl that runs as the server's user), ORGSYNC_TEST_PG_DATA (data dir), ORGSYNC_TEST_PG_LOG,
# ORGSYNC_TEST_PG_DIR (everything lives under it and goes with `stop`). Tests stop and restart
# the server with "$ORGSYNC_TEST_PG_CTL" stop|start -D "$ORGSYNC_TEST_PG_DATA" ...
#
# Written so that sourcing it never changes the caller's shell options: no set -e here, every
# step checks its own status. Installs postgresql-15 with apt-get when initdb is missing.

ORGSYNC_PG_BIN="${ORGSYNC_PG_BIN:-/usr/lib/postgresql/15/bin}"
ORGSYNC_PG_START_TIMEOUT_S="${ORGSYNC_PG_START_TIMEOUT_S:-60}"

_orgsync_pg_log() { echo "postgres.sh: $*" >&2; }

# Runs a command as the cluster's owner: `postgres` when we are root (the server refuses root).
_orgsync_pg_as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

_orgsync_pg_install() {
    [ -x "$ORGSYNC_PG_BIN/initdb" ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        _orgsync_pg_log "$ORGSYNC_PG_BIN/initdb is missing and we are not root to install postgresql-15"
        return 1
    fi
    _orgsync_pg_log "installing postgresql-15 with apt-get"
    # Keep the package's own cluster from being started: we only want the binaries.
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
    fi
    local status=0
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || status=$?
    if [ "$status" -eq 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >&2 || status=$?
    fi
    [ "$made_policy" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
    [ "$status" -eq 0 ] && [ -x "$ORGSYNC_PG_BIN/initdb" ]
}

# A port nobody listens on now, away from 5432.
_orgsync_pg_free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
    else
        echo $((20000 + RANDOM % 20000))
    fi
}

orgsync_pg_start() {
    _orgsync_pg_install || return 1
    if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
        _orgsync_pg_log "user postgres is missing (it comes with the postgresql-common package)"
        return 1
    fi
    local dir
    dir="$(mktemp -d "${TMPDIR:-/tmp}/orgsync-pg.XXXXXX")" || return 1
    [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
    chmod 700 "$dir"
    local user=orgsync db=orgsync_test password
    password="$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')" || return 1
    printf '%s\n' "$password" >"$dir/pwfile"
    [ "$(id -u)" -eq 0 ] && chown postgres "$dir/pwfile"
    chmod 600 "$dir/pwfile"
    if ! _orgsync_pg_as_owner "$ORGSYNC_PG_BIN/initdb" -D "$dir/data" -U "$user" --pwfile="$dir/pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-locale >"$dir/initdb.log" 2>&1; then
        _orgsync_pg_log "initdb failed:"; cat "$dir/initdb.log" >&2
        rm -rf "$dir"; return 1
    fi
    rm -f "$dir/pwfile"
    # Everything on loopback and in the temp dir; nothing under /var/run/postgresql.
    cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 100
log_min_messages = warning
# Logical decoding for the PostgreSQL source's tests (a slot per test; pgoutput is built in).
wal_level = logical
max_replication_slots = 20
max_wal_senders = 10
EOF
    # pg_ctl for the tests, running as the owner (they stop and restart the server).
    cat >"$dir/pg_ctl" <<EOF
#!/usr/bin/env bash
if [ "\$(id -u)" -eq 0 ]; then exec runuser -u postgres -- "$ORGSYNC_PG_BIN/pg_ctl" "\$@"; fi
exec "$ORGSYNC_PG_BIN/pg_ctl" "\$@"
EOF
    chmod 755 "$dir/pg_ctl"

    local port attempt started=0
    for attempt in 1 2 3; do
        port="$(_orgsync_pg_free_port)"
        sed -i "/^port = /d" "$dir/data/postgresql.conf"
        echo "port = $port" >>"$dir/data/postgresql.conf"
        # -w waits until the server accepts connections, bounded by -t seconds.
        if _orgsync_pg_as_owner "$ORGSYNC_PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" \
            -w -t "$ORGSYNC_PG_START_TIMEOUT_S" start >"$dir/pg_ctl.out" 2>&1; then
            started=1; break
        fi
        _orgsync_pg_log "start on port $port failed (attempt $attempt):"; tail -5 "$dir/server.log" >&2
        _orgsync_pg_as_owner "$ORGSYNC_PG_BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1
    done
    if [ "$started" -ne 1 ]; then rm -rf "$dir"; return 1; fi
    # Readiness over TCP as the tests will connect, bounded.
    local deadline=$((SECONDS + ORGSYNC_PG_START_TIMEOUT_S))
    until "$ORGSYNC_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U "$user" -d postgres; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            _orgsync_pg_log "server on 127.0.0.1:$port not ready after ${ORGSYNC_PG_START_TIMEOUT_S}s"
            orgsync_pg_stop "$dir"; return 1
        fi
        sleep 0.1
    done
    if ! _orgsync_pg_as_owner "$ORGSYNC_PG_BIN/createdb" -h "$dir" -p "$port" -U "$user" "$db" >"$dir/createdb.log" 2>&1; then
        _orgsync_pg_log "createdb failed:"; cat "$dir/createdb.log" >&2
        orgsync_pg_stop "$dir"; return 1
    fi
    cat >"$dir/env.sh" <<EOF
export ORGSYNC_TEST_PG_HOST=127.0.0.1
export ORGSYNC_TEST_PG_PORT=$port
export ORGSYNC_TEST_PG_USER=$user
export ORGSYNC_TEST_PG_PASSWORD=$password
export ORGSYNC_TEST_PG_DB=$db
export ORGSYNC_TEST_PG_CTL=$dir/pg_ctl
export ORGSYNC_TEST_PG_DATA=$dir/data
export ORGSYNC_TEST_PG_LOG=$dir/server.log
export ORGSYNC_TEST_PG_DIR=$dir
EOF
    chmod 600 "$dir/env.sh"
    # shellcheck disable=SC1091
    . "$dir/env.sh"
    _orgsync_pg_log "PostgreSQL $("$ORGSYNC_PG_BIN/postgres" -V | awk '{print $3}') on 127.0.0.1:$port, database $db, dir $dir"
    return 0
}

# Stops the cluster and removes its dir. Safe to call twice, and after a test left it stopped.
orgsync_pg_stop() {
    local dir="${1:-${ORGSYNC_TEST_PG_DIR:-}}"
    [ -n "$dir" ] && [ -d "$dir" ] || return 0
    if [ -f "$dir/data/postmaster.pid" ]; then
        if ! _orgsync_pg_as_owner "$ORGSYNC_PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1; then
            # The server did not stop in time: end it by the PID it wrote, nothing broader.
            local pid
            pid="$(head -1 "$dir/data/postmaster.pid" 2>/dev/null)"
            if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
                kill -QUIT "$pid" 2>/dev/null
                local i
                for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
    fi
    rm -rf "$dir"
    if [ "${ORGSYNC_TEST_PG_DIR:-}" = "$dir" ]; then
        unset ORGSYNC_TEST_PG_HOST ORGSYNC_TEST_PG_PORT ORGSYNC_TEST_PG_USER ORGSYNC_TEST_PG_PASSWORD \
            ORGSYNC_TEST_PG_DB ORGSYNC_TEST_PG_CTL ORGSYNC_TEST_PG_DATA ORGSYNC_TEST_PG_LOG ORGSYNC_TEST_PG_DIR
    fi
    _orgsync_pg_log "stopped and removed $dir"
    return 0
}

# Sourced: start now (unless ORGSYNC_PG_NO_AUTOSTART=1) and leave the functions defined.
# Executed: `start` prints the export lines, `stop [DIR]` stops.
if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    if [ "${ORGSYNC_PG_NO_AUTOSTART:-0}" != 1 ]; then
        orgsync_pg_start
    fi
else
    case "${1:-}" in
    start)
        orgsync_pg_start || exit 1
        cat "$ORGSYNC_TEST_PG_DIR/env.sh"
        ;;
    stop)
        orgsync_pg_stop "${2:-}"
        ;;
    *)
        echo "usage: $0 start | stop [DIR]   (or: source $0; trap orgsync_pg_stop EXIT)" >&2
        exit 2
        ;;
    esac
fi
