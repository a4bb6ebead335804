#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) are running.
# Starts them if they are installed but stopped; installs them from Debian's packages if
# they are missing (needs root). Idempotent: does nothing when both already answer.
set -euo pipefail

PG_PORT="${GOV_TEST_PG_PORT:-5432}"
REDIS_PORT="${GOV_TEST_REDIS_PORT:-6379}"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # name port
  for _ in $(seq 1 60); do
    if listening "$2"; then echo "$1 is up on 127.0.0.1:$2"; return 0; fi
    sleep 0.5
  done
  echo "error: $1 did not start on 127.0.0.1:$2" >&2
  return 1
}

apt_install() {
  if [ "$(id -u)" != "0" ]; then
    echo "error: $* missing and not root: install it or start it yourself" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  listening "$PG_PORT" && { echo "postgres is up on 127.0.0.1:$PG_PORT"; return 0; }
  local fresh=0
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    apt_install postgresql
    fresh=1
  fi
  local version
  version="$(ls /etc/postgresql | sort -V | tail -1)"
  if [ "$fresh" = 1 ]; then
    # A fresh install authenticates by password on TCP; the tests connect as postgres over
    # loopback with trust, as on the project's machines.
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/' "$hba"
    sed -i -E 's/^(host\s+all\s+all\s+::1\/128\s+)\S+/\1trust/' "$hba"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for postgres "$PG_PORT"
  if [ "$fresh" = 1 ]; then
    su postgres -c "psql -qc 'CREATE DATABASE test'" 2>/dev/null || true
  fi
}

ensure_redis() {
  listening "$REDIS_PORT" && { echo "redis is up on 127.0.0.1:$REDIS_PORT"; return 0; }
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for redis "$REDIS_PORT"
}

ensure_postgres
ensure_redis
