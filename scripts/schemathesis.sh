#!/usr/bin/env bash
# schemathesis against a real broker process: every operation of the OpenAPI document the broker
# serves (GET /openapi.json, the same as docs/openapi.json), in all four phases (the document's
# examples, coverage of its boundaries, generated cases, and stateful sequences that follow its
# `links`: create -> read -> update -> delete), positive and negative data, with these checks:
# no server error, status code documented, content type documented, response body conforms to its
# schema, response headers conform, requests without credentials refused, undocumented methods
# answer 405, deleted resources stay gone, created ones are readable. 0 failures required; the run is bounded by the examples per
# operation (BYOK_SCHEMATHESIS_MAX_EXAMPLES, default 25) and a fixed seed (BYOK_SCHEMATHESIS_SEED),
# so a failure reproduces.
#
# schemathesis (PyPI, 4.32.5, pinned with hashes in tests/schemathesis/requirements.txt) is installed
# on first use into tests/schemathesis/.venv (again whenever requirements.txt changes). The broker
# runs on KMS at LOCALSTACK_ENDPOINT, with SQLite in a temporary directory, or with
# BYOK_TEST_DATABASE_URL set on a fresh PostgreSQL database created through it and dropped on exit.
# Called by scripts/test.sh after scripts/sdk-compat.sh, for each backend.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

for tool in curl python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: '$tool' is required for the schemathesis run" >&2; exit 1; }
done
: "${LOCALSTACK_ENDPOINT:?set LOCALSTACK_ENDPOINT (scripts/test.sh does)}"

binary="${CARGO_TARGET_DIR:-target}/debug/byok-broker"
[[ -x "$binary" ]] || cargo build --locked --bin byok-broker

st_dir=tests/schemathesis
st_venv="$st_dir/.venv"
if ! cmp -s "$st_dir/requirements.txt" "$st_venv/installed-requirements.txt"; then
  echo "== installing schemathesis into $st_venv"
  rm -rf "$st_venv"
  python3 -m venv "$st_venv" ||
    { echo "error: 'python3 -m venv' failed (on Debian or Ubuntu: apt-get install python3-venv)" >&2; exit 1; }
  "$st_venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes \
    -r "$st_dir/requirements.txt" ||
    { echo "error: cannot install schemathesis from $st_dir/requirements.txt (is PyPI reachable?)" >&2; exit 1; }
  cp "$st_dir/requirements.txt" "$st_venv/installed-requirements.txt"
fi

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
data_dir="$(mktemp -d)"
token() { python3 -c 'import secrets; print(secrets.token_hex(16))'; }
app_key="schemathesis-$(token)"
admin_key="schemathesis-admin-$(token)"
base="http://127.0.0.1:$port"
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
backend=SQLite
if [[ -n "${BYOK_TEST_DATABASE_URL:-}" ]]; then
  command -v psql >/dev/null 2>&1 || { echo "error: 'psql' is required for the schemathesis run on PostgreSQL" >&2; exit 1; }
  database="byok_t_st_$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
  psql "$BYOK_TEST_DATABASE_URL" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE \"$database\""
  # The same URL with its database (the path) replaced, query parameters kept.
  url_base="${BYOK_TEST_DATABASE_URL%%\?*}"
  query="${BYOK_TEST_DATABASE_URL:${#url_base}}"
  authority="${url_base#*://}"
  export BYOK_BROKER_DATABASE_URL="${url_base%%://*}://${authority%%/*}/$database$query"
  backend="PostgreSQL (database $database)"
fi
echo "== schemathesis against the broker on $backend"

# The rate limit is raised so that generated cases reach the handlers rather than answer 429.
# The broker logs at debug level in JSON: afterwards its log must be JSON lines carrying none of
# the keys, cookies and tokens of this run (see the end).
RUST_LOG=debug BYOK_BROKER_LOG_FORMAT=json \
BYOK_BROKER_KMS=aws AWS_ENDPOINT_URL="$LOCALSTACK_ENDPOINT" AWS_REGION=us-east-1 \
AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
BYOK_BROKER_APP_KEY="$app_key" BYOK_BROKER_ADMIN_KEY="$admin_key" BYOK_BROKER_DATA_DIR="$data_dir" \
BYOK_BROKER_LISTEN="127.0.0.1:$port" BYOK_BROKER_KEK_ALIAS_PREFIX="schemathesis/$port-$$" \
BYOK_BROKER_RATE_LIMIT_PER_SECOND=100000 BYOK_BROKER_BYOK_ALLOW_DIRECT_KEY_ACCESS=true \
  "$binary" serve >>"$data_dir/broker.log" 2>&1 &
broker_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "$base/healthz" >/dev/null 2>&1 && break
  kill -0 "$broker_pid" 2>/dev/null || { echo "error: broker exited:" >&2; cat "$data_dir/broker.log" >&2; exit 1; }
  sleep 0.1
done

# A portal session for the /portal/api operations: a link from the admin API, opened as a browser
# would (the cookie), and the session's CSRF token.
link="$(curl -fsS -H "Authorization: Bearer $admin_key" -H 'Content-Type: application/json' \
  -d '{"organization": "org_schemathesis", "intent": "bring_your_own_key"}' "$base/portal/generate_link" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["link"])')"
cookie="$(curl -fsS -o /dev/null -D - "$base/portal/launch?${link#*\?}" |
  sed -nE 's/^[Ss]et-[Cc]ookie: byok_portal=([^;]*).*/\1/p')"
[[ -n "$cookie" ]] || { echo "error: the portal link did not start a session" >&2; exit 1; }
csrf="$(curl -fsS -H "Cookie: byok_portal=$cookie" "$base/portal/api/session" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["csrf_token"])')"

# BYOK keys for the byok and portal operations to find (their list answers link to them): tenant
# CMKs made in LocalStack (its KMS API, signed with the broker's test credentials), one registered
# through the admin API, one through the portal as the session's organization. Direct key access
# (no role to assume) is allowed above: LocalStack has one account.
new_cmk() {
  curl -fsS -X POST "$LOCALSTACK_ENDPOINT/" --aws-sigv4 'aws:amz:us-east-1:kms' --user test:test \
    -H 'X-Amz-Target: TrentService.CreateKey' -H 'Content-Type: application/x-amz-json-1.1' \
    -d '{"Description": "byok-broker schemathesis tenant key"}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["KeyMetadata"]["Arn"])'
}
curl -fsS -o /dev/null -H "Authorization: Bearer $admin_key" -H 'Content-Type: application/json' \
  -d "{\"match_context\": {\"organization_id\": \"org_schemathesis_admin\"}, \"provider\": \"aws_kms\", \"key_arn\": \"$(new_cmk)\"}" \
  "$base/admin/v1/byok-keys"
curl -fsS -o /dev/null -H "Cookie: byok_portal=$cookie" -H "X-CSRF-Token: $csrf" -H 'Content-Type: application/json' \
  -d "{\"key_arn\": \"$(new_cmk)\"}" "$base/portal/api/keys"

export BYOK_ST_APP_KEY="$app_key" BYOK_ST_ADMIN_KEY="$admin_key"
export BYOK_ST_PORTAL_COOKIE="$cookie" BYOK_ST_PORTAL_CSRF="$csrf"
# One worker: schemathesis's workers are threads, and this CPython (3.11.7) can fail parsing
# hypothesis's lambdas in two threads at once ("AST constructor recursion depth mismatch").
st() {
  "$st_venv/bin/schemathesis" --config-file "$st_dir/schemathesis.toml" run "$base/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,ignored_auth,unsupported_method,use_after_free,ensure_resource_availability \
    --max-examples "${BYOK_SCHEMATHESIS_MAX_EXAMPLES:-25}" --seed "${BYOK_SCHEMATHESIS_SEED:-16}" \
    --generation-database none --workers 1 --request-timeout 20 --no-color "$@"
}
session_status() { curl -sS -o /dev/null -w '%{http_code}' -H "Cookie: byok_portal=$cookie" "$base/portal/api/session"; }
status=0
# Signing out ends the session every other portal operation runs under: it goes last, alone.
st --exclude-operation-id portal_sign_out || status=$?
# (No stateful phase here: no link leads to it.) The session must be alive before and ended after,
# so the run did sign out, not only get refused.
[[ "$(session_status)" == 200 ]] || { echo "error: the portal session ended before sign_out was tested" >&2; status=1; }
st --include-operation-id portal_sign_out --phases examples,coverage,fuzzing || status=$?
[[ "$(session_status)" == 401 ]] || { echo "error: no sign_out case ended the portal session" >&2; status=1; }
if [[ "$status" != 0 ]]; then
  echo "schemathesis found failures (exit $status); the broker's log:" >&2
  tail -n 200 "$data_dir/broker.log" >&2
fi

# No secret of this run in the broker's debug log, and every line JSON.
link_token="${link#*token=}"
BYOK_ST_SECRETS="$app_key $admin_key $cookie $csrf $link_token" python3 - "$data_dir/broker.log" <<'PY' || status=1
import json, os, sys
secrets = os.environ["BYOK_ST_SECRETS"].split()
lines = open(sys.argv[1], encoding="utf-8", errors="replace").read().splitlines()
bad = [n for n, line in enumerate(lines, 1) if line.strip() and not line.startswith("{")]
for n in bad[:3]:
    print(f"error: broker log line {n} is not JSON: {lines[n - 1][:200]}", file=sys.stderr)
for n, line in enumerate(lines, 1):
    if line.startswith("{"):
        json.loads(line)
    for secret in secrets:
        if secret in line:
            print(f"error: broker log line {n} carries a key, cookie or token of this run", file=sys.stderr)
            sys.exit(1)
requests = sum('"target":"byok_broker::access"' in line for line in lines)
print(f"broker log: {len(lines)} JSON lines at debug level, {requests} request lines, none carrying this run's keys, cookies or tokens")
sys.exit(1 if bad else 0)
PY
exit "$status"
