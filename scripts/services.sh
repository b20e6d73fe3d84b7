#!/usr/bin/env bash
# Local PostgreSQL 15 and Redis on 127.0.0.1, for the test run and the benchmarks; Kannel's packages.
#   source scripts/services.sh; start_postgres; start_redis; ensure_kannel; ...; stop_services
# start_* export DATABASE_URL / REDIS_URL. Everything lives in one temp dir, removed on stop.
# ensure_kannel installs the Debian packages of the Kannel recipe (../shared/kannel) and exports
# KANNEL_RECIPE_DIR; each Kannel test starts (start.sh) and stops (stop.sh) its own instance, since
# Kannel must call back the test's own live server.

SERVICES_DIR="${SERVICES_DIR:-$(mktemp -d /tmp/masthead-services.XXXXXX)}"
export SERVICES_DIR

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

pg_bin() {
  for dir in /usr/lib/postgresql/15/bin /usr/local/bin /usr/bin; do
    [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
  done
  return 1
}

ensure_apt() {  # ensure_apt COMMAND PACKAGE...
  command -v "$1" >/dev/null 2>&1 && return 0
  shift
  echo "installing $* (apt)" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    sudo apt-get update -qq >/dev/null && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}

as_pg_user() {
  if [ "$(id -u)" = 0 ]; then
    id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

start_postgres() {
  local bin
  bin=$(pg_bin) || { ensure_apt initdb postgresql-15 && bin=$(pg_bin); } || { echo "no PostgreSQL 15 found" >&2; return 1; }
  local dir="$SERVICES_DIR/pg" port
  port=$(free_port)
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && { id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres; chown postgres "$dir"; chmod 755 "$SERVICES_DIR"; }
  as_pg_user "$bin/initdb" -D "$dir/data" -U masthead --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  as_pg_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" start >/dev/null
  as_pg_user "$bin/createdb" -h 127.0.0.1 -p "$port" -U masthead masthead
  export PG_DATA_DIR="$dir/data" PG_BIN="$bin"
  export DATABASE_URL="postgresql://masthead@127.0.0.1:$port/masthead"
  echo "PostgreSQL on 127.0.0.1:$port" >&2
}

start_redis() {
  ensure_apt redis-server redis-server || { echo "no redis-server" >&2; return 1; }
  local port
  port=$(free_port)
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile "$SERVICES_DIR/redis.pid" --logfile "$SERVICES_DIR/redis.log" >/dev/null
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  export REDIS_TEST_URL="redis://127.0.0.1:$port/0"
  echo "Redis on 127.0.0.1:$port" >&2
}

ensure_kannel() {
  local recipe="${KANNEL_RECIPE_DIR:-}" candidate
  if [ -z "$recipe" ]; then  # beside the checkout, or the workspace's shared folder
    for candidate in "$PWD/../shared/kannel" /work/shared/kannel; do
      if [ -x "$candidate/start.sh" ]; then recipe="$candidate"; break; fi
    done
  fi
  if [ ! -x "$recipe/start.sh" ]; then
    echo "no Kannel recipe at $recipe (the Kannel integration tests will fail under CI)" >&2
    return 0
  fi
  KANNEL_RECIPE_DIR=$(cd "$recipe" && pwd)
  export KANNEL_RECIPE_DIR
  if [ ! -x /usr/sbin/bearerbox ] || [ ! -x /usr/sbin/smsbox ] || [ ! -x /usr/lib/kannel/test/fakesmsc ] \
      || ! command -v curl >/dev/null 2>&1; then
    echo "installing kannel kannel-extras curl (apt)" >&2
    local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq >/dev/null && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      kannel kannel-extras curl >/dev/null || { echo "could not install Kannel" >&2; return 1; }
  fi
  echo "Kannel recipe $KANNEL_RECIPE_DIR" >&2
}

stop_services() {
  if [ -n "${PG_DATA_DIR:-}" ] && [ -d "$PG_DATA_DIR" ]; then
    as_pg_user "$PG_BIN/pg_ctl" -D "$PG_DATA_DIR" -m fast -w stop >/dev/null 2>&1 || true
  fi
  if [ -f "$SERVICES_DIR/redis.pid" ]; then
    kill "$(cat "$SERVICES_DIR/redis.pid")" 2>/dev/null || true
  fi
  rm -rf "$SERVICES_DIR"
}
