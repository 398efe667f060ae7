#!/usr/bin/env bash
# Runs the whole test suite. Starts what the tests need: LocalStack (installed on first use into
# localstack/.venv) on BYOK_TEST_LOCALSTACK_PORT (default 4599), unless LOCALSTACK_ENDPOINT names
# one already running. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

for tool in cargo python3 curl flock node npm; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: '$tool' is required to run the tests" >&2; exit 1; }
done

if [[ -z "${LOCALSTACK_ENDPOINT:-}" ]]; then
  port="${BYOK_TEST_LOCALSTACK_PORT:-4599}"
  bash localstack/install.sh
  LOCALSTACK_ENDPOINT="$(bash localstack/start.sh "$port" | tail -n 1)"
  export LOCALSTACK_ENDPOINT
  trap 'bash localstack/stop.sh "$port" >/dev/null' EXIT
  echo "LocalStack at $LOCALSTACK_ENDPOINT"
fi

cargo test --locked "$@"
bash scripts/sdk-compat.sh
