#!/usr/bin/env bash
# WorkOS SDK compatibility: starts the broker binary against LOCALSTACK_ENDPOINT and drives the
# official @workos-inc/node 11.x and 8.x (tests/sdk/run.mjs), then the official WorkOS Python SDK
# (PyPI `workos`, pinned with hashes in tests/sdk/python/requirements.txt; tests/sdk/python/run.py,
# its sync and async clients) through every Vault method (and, with the admin key, the Admin Portal's
# link generation: Node `adminPortal.generateLink` / `portal.generateLink`, Python
# `admin_portal.generate_link`), twice: over plain HTTP, then over TLS (a
# test CA made here with openssl, given to Node through NODE_EXTRA_CA_CERTS with `https: true`, and
# to Python through SSL_CERT_FILE with an https:// base_url).
# The Python SDK is installed on first use into tests/sdk/python/.venv (again whenever
# requirements.txt changes).
# Called by scripts/test.sh after `cargo test` (which builds the binary). With BYOK_TEST_DATABASE_URL
# set, the broker runs on PostgreSQL, on a fresh database created through that URL and dropped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

for tool in node npm curl python3 openssl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: '$tool' is required for the SDK compatibility test" >&2; exit 1; }
done
: "${LOCALSTACK_ENDPOINT:?set LOCALSTACK_ENDPOINT (scripts/test.sh does)}"

binary="${CARGO_TARGET_DIR:-target}/debug/byok-broker"
[[ -x "$binary" ]] || cargo build --locked --bin byok-broker
(cd tests/sdk && npm ci --no-audit --no-fund --loglevel=error)

# The Python SDK in a virtualenv of its own; the copy of requirements.txt inside it says what it holds.
py_dir=tests/sdk/python
py_venv="$py_dir/.venv"
if ! cmp -s "$py_dir/requirements.txt" "$py_venv/installed-requirements.txt"; then
  echo "== installing the WorkOS Python SDK into $py_venv"
  rm -rf "$py_venv"
  python3 -m venv "$py_venv" ||
    { echo "error: 'python3 -m venv' failed (on Debian or Ubuntu: apt-get install python3-venv)" >&2; exit 1; }
  "$py_venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes \
    -r "$py_dir/requirements.txt" ||
    { echo "error: cannot install the WorkOS Python SDK from $py_dir/requirements.txt (is PyPI reachable?)" >&2; exit 1; }
  cp "$py_dir/requirements.txt" "$py_venv/installed-requirements.txt"
fi

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
data_dir="$(mktemp -d)"
app_key="sdk-compat-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
admin_key="sdk-compat-admin-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
broker_pid=""
database=""
cleanup() {
  if [[ -n "$broker_pid" ]]; then kill "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; fi
  rm -rf "$data_dir"
  if [[ -n "$database" ]]; then
    psql "$BYOK_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" >/dev/null ||
      echo "warning: cannot drop the test database $database" >&2
  fi
}
trap cleanup EXIT

# The store: SQLite in the data directory, or a database of its own (the byok_t_ prefix is the
# one scripts/test.sh drops leftovers by).
unset BYOK_BROKER_DATABASE_URL
if [[ -n "${BYOK_TEST_DATABASE_URL:-}" ]]; then
  command -v psql >/dev/null 2>&1 || { echo "error: 'psql' is required for the SDK compatibility test on PostgreSQL" >&2; exit 1; }
  database="byok_t_sdk_$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
  psql "$BYOK_TEST_DATABASE_URL" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE \"$database\""
  # The same URL with its database (the path) replaced, query parameters kept.
  base="${BYOK_TEST_DATABASE_URL%%\?*}"
  query="${BYOK_TEST_DATABASE_URL:${#base}}"
  authority="${base#*://}"
  export BYOK_BROKER_DATABASE_URL="${base%%://*}://${authority%%/*}/$database$query"
  echo "SDK compatibility test on PostgreSQL (database $database)"
fi

# A test CA and a server certificate for 127.0.0.1 (and localhost), for the TLS run.
tls_dir="$data_dir/tls"
mkdir -p "$tls_dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=sdk-compat test CA" \
  -keyout "$tls_dir/ca-key.pem" -out "$tls_dir/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout "$tls_dir/key.pem" -out "$tls_dir/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$tls_dir/ext.cnf"
openssl x509 -req -in "$tls_dir/server.csr" -CA "$tls_dir/ca.pem" -CAkey "$tls_dir/ca-key.pem" -CAcreateserial \
  -days 1 -extfile "$tls_dir/ext.cnf" -out "$tls_dir/cert.pem" 2>/dev/null

# Starts the broker (over TLS with "tls") and drives the Node and Python SDKs against it; the broker
# stops after.
run() {
  local scheme=http
  local -a tls_env=()
  if [[ "$1" == tls ]]; then
    scheme=https
    tls_env=(BYOK_BROKER_TLS_CERT="$tls_dir/cert.pem" BYOK_BROKER_TLS_KEY="$tls_dir/key.pem")
  fi
  echo "== WorkOS SDKs over $scheme"
  env "${tls_env[@]}" \
  BYOK_BROKER_KMS=aws AWS_ENDPOINT_URL="$LOCALSTACK_ENDPOINT" AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
  BYOK_BROKER_APP_KEY="$app_key" BYOK_BROKER_ADMIN_KEY="$admin_key" BYOK_BROKER_DATA_DIR="$data_dir" \
  BYOK_BROKER_LISTEN="127.0.0.1:$port" BYOK_BROKER_KEK_ALIAS_PREFIX="sdk-compat/$port-$$" \
    "$binary" serve >>"$data_dir/broker.log" 2>&1 &
  broker_pid=$!

  for _ in $(seq 1 100); do
    curl -fsS --cacert "$tls_dir/ca.pem" "$scheme://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    kill -0 "$broker_pid" 2>/dev/null || { echo "error: broker exited:" >&2; cat "$data_dir/broker.log" >&2; exit 1; }
    sleep 0.1
  done

  local status=0
  if [[ "$1" == tls ]]; then
    BROKER_HTTPS=1 NODE_EXTRA_CA_CERTS="$tls_dir/ca.pem" BROKER_PORT="$port" WORKOS_API_KEY="$app_key" WORKOS_ADMIN_KEY="$admin_key" node tests/sdk/run.mjs || status=$?
    BROKER_HTTPS=1 SSL_CERT_FILE="$tls_dir/ca.pem" BROKER_PORT="$port" WORKOS_API_KEY="$app_key" WORKOS_ADMIN_KEY="$admin_key" \
      "$py_venv/bin/python" "$py_dir/run.py" || status=$?
  else
    BROKER_PORT="$port" WORKOS_API_KEY="$app_key" WORKOS_ADMIN_KEY="$admin_key" node tests/sdk/run.mjs || status=$?
    BROKER_PORT="$port" WORKOS_API_KEY="$app_key" WORKOS_ADMIN_KEY="$admin_key" "$py_venv/bin/python" "$py_dir/run.py" || status=$?
  fi
  kill "$broker_pid" 2>/dev/null || true
  wait "$broker_pid" 2>/dev/null || true
  broker_pid=""
  return "$status"
}

run plain
run tls
