#!/usr/bin/env bash
# Runs the whole test suite on both store backends: everything on the embedded SQLite, then the
# integration suite, the SDK compatibility test and the schemathesis run (scripts/schemathesis.sh)
# again on PostgreSQL, each test on a fresh
# database of its own created through BYOK_TEST_DATABASE_URL (default: a server answering on
# 127.0.0.1:5432 as postgres@.../postgres; the PostgreSQL run is skipped, with one line saying so,
# when none answers). BYOK_TEST_BACKENDS=sqlite|postgres|both (default both) picks the runs.
# Installs Debian's chromium and chromium-driver (the portal's browser test) when missing.
# Starts what the tests need: LocalStack (installed on first use into localstack/.venv) on
# BYOK_TEST_LOCALSTACK_PORT (default 4599), unless LOCALSTACK_ENDPOINT names one already running.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

for tool in cargo python3 curl flock node npm; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: '$tool' is required to run the tests" >&2; exit 1; }
done

backends="${BYOK_TEST_BACKENDS:-both}"
case "$backends" in
  sqlite | postgres | both) ;;
  *) echo "error: BYOK_TEST_BACKENDS is sqlite, postgres or both, not '$backends'" >&2; exit 1 ;;
esac

# A server that accepts this URL's user and database (psql also creates and drops the test databases).
pg_answers() { command -v psql >/dev/null 2>&1 && PGCONNECT_TIMEOUT=5 psql "$1" -Atqc 'SELECT 1' >/dev/null 2>&1; }
# The URL without its password, for messages.
redact() { sed -E 's#(://[^:@/]*):[^@/]*@#\1:***@#' <<<"$1"; }

# Which PostgreSQL, decided before the long runs: a URL given explicitly must answer.
pg_url=""
if [[ "$backends" != sqlite ]]; then
  if [[ -n "${BYOK_TEST_DATABASE_URL:-}" ]]; then
    pg_answers "$BYOK_TEST_DATABASE_URL" || {
      echo "error: no PostgreSQL answers at BYOK_TEST_DATABASE_URL=$(redact "$BYOK_TEST_DATABASE_URL") (or psql is missing)" >&2
      exit 1
    }
    pg_url="$BYOK_TEST_DATABASE_URL"
  elif pg_answers "postgres://postgres@127.0.0.1:5432/postgres"; then
    pg_url="postgres://postgres@127.0.0.1:5432/postgres"
  elif [[ "$backends" == postgres ]]; then
    echo "error: BYOK_TEST_BACKENDS=postgres but no PostgreSQL answers on 127.0.0.1:5432 (or psql is missing); set BYOK_TEST_DATABASE_URL" >&2
    exit 1
  fi
fi
# The SQLite run must not see it: the fixture picks the backend from it.
unset BYOK_TEST_DATABASE_URL

# The portal's browser test (tests/integration/portal_browser.rs) drives Debian's headless Chromium
# through chromedriver: installed here when missing; without it that test fails, it is never skipped.
if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
  echo "== installing chromium and chromium-driver (the portal's browser test)"
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null ||
      { echo "error: apt-get could not install chromium and chromium-driver (the portal's browser test needs them)" >&2; exit 1; }
  else
    echo "error: /usr/bin/chromium and /usr/bin/chromedriver are missing: install Debian's chromium and chromium-driver (as root: apt-get install chromium chromium-driver)" >&2
    exit 1
  fi
fi
# The browser test generates its link with the WorkOS Node SDK of tests/sdk.
(cd tests/sdk && npm ci --no-audit --no-fund --loglevel=error)

if [[ -z "${LOCALSTACK_ENDPOINT:-}" ]]; then
  port="${BYOK_TEST_LOCALSTACK_PORT:-4599}"
  bash localstack/install.sh
  LOCALSTACK_ENDPOINT="$(bash localstack/start.sh "$port" | tail -n 1)"
  export LOCALSTACK_ENDPOINT
  trap 'bash localstack/stop.sh "$port" >/dev/null' EXIT
  echo "LocalStack at $LOCALSTACK_ENDPOINT"
fi

if [[ "$backends" != postgres ]]; then
  echo "== store backend: SQLite (embedded default)"
  cargo test --locked "$@"
  bash scripts/sdk-compat.sh
  bash scripts/schemathesis.sh
fi

if [[ -n "$pg_url" ]]; then
  echo "== store backend: PostgreSQL ($(redact "$pg_url")): the integration suite, the SDK compatibility test and schemathesis"
  # Databases a crashed or killed run left behind (a passing run drops its own). byok_t_ is the
  # prefix of tests/integration/common/database.rs and scripts/sdk-compat.sh.
  psql "$pg_url" -v ON_ERROR_STOP=1 -Atq <<'SQL'
SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', datname) FROM pg_database
WHERE datname LIKE 'byok\_t\_%' \gexec
SQL
  export BYOK_TEST_DATABASE_URL="$pg_url"
  cargo test --locked --test integration "$@"
  bash scripts/sdk-compat.sh
  bash scripts/schemathesis.sh
elif [[ "$backends" == both ]]; then
  echo "note: the PostgreSQL suite did not run: no PostgreSQL answers on 127.0.0.1:5432 (or psql is missing); run it with BYOK_TEST_DATABASE_URL=postgres://user@host:port/db scripts/test.sh (the user must be allowed to CREATE DATABASE)"
fi
