#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on 127.0.0.1 for the test suite, installing and starting
# them if needed, and make sure the `tidings_test` database exists. Exports nothing.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_PORT=6379
TEST_DB=tidings_test

say() { printf 'test-services: %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root to run: $*"; return 1; fi
}

pg_up() { command -v pg_isready >/dev/null && pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }
redis_up() {
  if command -v redis-cli >/dev/null; then
    [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]
  else
    # No client installed: a bare TCP connect is enough to know something listens.
    (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null
  fi
}

apt_updated=""
apt_install() {
  [ -n "$apt_updated" ] || { as_root apt-get update -q; apt_updated=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

wait_for() {  # wait_for NAME CHECK_FUNCTION
  for _ in $(seq 1 30); do "$2" && return 0; sleep 0.5; done
  say "$1 did not come up"; return 1
}

# --- PostgreSQL ---------------------------------------------------------------------------------
if pg_up; then
  say "PostgreSQL is reachable on $PG_HOST:$PG_PORT"
else
  say "PostgreSQL is not reachable on $PG_HOST:$PG_PORT; installing/starting it"
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  version="$(ls /etc/postgresql | sort -V | tail -n1)"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for PostgreSQL pg_up
  # Tests connect as postgres without a password over TCP; allow that for localhost only.
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  if ! as_root grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    say "enabling trust authentication for 127.0.0.1 in $hba (test machine only)"
    as_root sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  fi
  say "PostgreSQL started"
fi

if psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$TEST_DB'" | grep -q 1; then
  say "database $TEST_DB exists"
else
  psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -qc "CREATE DATABASE $TEST_DB"
  say "created database $TEST_DB"
fi

# --- Redis --------------------------------------------------------------------------------------
if redis_up; then
  say "Redis is reachable on 127.0.0.1:$REDIS_PORT"
else
  say "Redis is not reachable on 127.0.0.1:$REDIS_PORT; installing/starting it"
  command -v redis-server >/dev/null || apt_install redis-server
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no
  wait_for Redis redis_up
  say "Redis started"
fi
