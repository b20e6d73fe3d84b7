#!/usr/bin/env bash
# The whole suite, as `make test` runs it:
#   sqlite   - unit and API tests on SQLite
#   postgres - the same on a PostgreSQL 15 started here, plus integration tests (Redis started here,
#              Kannel installed here and started by its tests)
#   e2e      - browser tests in Debian's Chromium
#   all      - the three in that order; non-zero exit on any failure
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh
trap stop_services EXIT
PYTEST=".venv/bin/pytest"
leg="${1:-all}"
export MASTHEAD_TESTING=1
unset DATABASE_URL REDIS_URL
ensure_apt xgettext gettext   # the i18n test re-extracts marked strings

run_sqlite() {
  echo "=== SQLite ==="
  $PYTEST -q -m "not e2e and not integration"
}

run_postgres() {
  echo "=== PostgreSQL 15 (+ Redis and Kannel integration) ==="
  start_postgres
  start_redis
  ensure_kannel
  DATABASE_URL="$DATABASE_URL" $PYTEST -q -m "not e2e"
}

run_e2e() {
  echo "=== Browser (Chromium) ==="
  ensure_apt chromium chromium
  $PYTEST -q -m e2e
}

case "$leg" in
  sqlite) run_sqlite ;;
  postgres) run_postgres ;;
  e2e) run_e2e ;;
  all) run_sqlite; run_postgres; run_e2e ;;
  *) echo "unknown leg: $leg (sqlite|postgres|e2e|all)" >&2; exit 2 ;;
esac
