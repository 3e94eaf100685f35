#!/usr/bin/env bash
# Run a command with a throwaway PostgreSQL cluster and redis-server, both on 127.0.0.1 only:
#   .ci/services.sh make test
# exports MULTISERVE_TEST_POSTGRES_URL and MULTISERVE_TEST_REDIS_URL for the command, and stops
# both servers and deletes their data on exit (trap), whatever the command's outcome.
# PostgreSQL's initdb/pg_ctl refuse to run as root: as root they run as the `postgres` user.
set -euo pipefail

PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
TMP=$(mktemp -d /tmp/multiserve-services.XXXXXX)
PGDATA="$TMP/pg"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

REDIS_PID=
cleanup() {
  set +e
  [ -d "$PGDATA" ] && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1
  [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

# -- PostgreSQL: initdb + pg_ctl on a free port, socket dir and data in $TMP ----------------------
[ "$(id -u)" = 0 ] && chown postgres "$TMP"
PG_PORT=$(free_port)
as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres -A trust --no-sync >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$TMP/pg.log" -w -t 60 \
  -o "-p $PG_PORT -k $TMP -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
export MULTISERVE_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"

# -- Redis: AOF with fsync always (what the ticket store needs for durable sales) -----------------
REDIS_PORT=$(free_port)
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$TMP" --appendonly yes --appendfsync always \
  --save '' --daemonize no --logfile "$TMP/redis.log" &
REDIS_PID=$!
for _ in $(seq 100); do  # redis-server has no ready line on stdout: ask it, up to ~10 s
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null
export MULTISERVE_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"

echo "services: postgres $MULTISERVE_TEST_POSTGRES_URL, redis $MULTISERVE_TEST_REDIS_URL" >&2
"$@"
