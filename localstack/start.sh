#!/usr/bin/env bash
# Start LocalStack (host mode, KMS + STS + SQS + EventBridge) on 127.0.0.1:PORT and wait until it is healthy.
# Usage: localstack/start.sh [PORT]   (default 4566). Prints the endpoint; writes the pid to .run/PORT.pid.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${LOCALSTACK_VENV:-$here/.venv}"
port="${1:-4566}"
run_dir="$here/.run"
pid_file="$run_dir/$port.pid"
log_file="$run_dir/$port.log"
endpoint="http://127.0.0.1:$port"
timeout_s="${LOCALSTACK_START_TIMEOUT:-120}"

if [[ ! -x "$venv/bin/python" ]]; then
  echo "error: LocalStack is not installed; run localstack/install.sh first" >&2
  exit 1
fi
mkdir -p "$run_dir"

# Test binaries may call this concurrently: one starts LocalStack, the others wait and reuse it.
exec 9>"$run_dir/$port.lock"
flock 9

if [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
  if curl -fsS "$endpoint/_localstack/health" >/dev/null 2>&1; then
    echo "$endpoint"
    exit 0
  fi
fi

# Each instance gets its own state dir so parallel instances never share files.
state_dir="$run_dir/state-$port"
rm -rf "$state_dir"
mkdir -p "$state_dir"

GATEWAY_LISTEN="127.0.0.1:$port" \
SERVICES="kms,sts,iam,sqs,events" \
EAGER_SERVICE_LOADING=1 \
SKIP_SSL_CERT_DOWNLOAD=1 \
DISABLE_EVENTS=1 \
DNS_ADDRESS=0 \
LOCALSTACK_CLI=0 \
PERSISTENCE=0 \
FILESYSTEM_ROOT="$state_dir" \
  setsid "$venv/bin/python" -m localstack.runtime.main >"$log_file" 2>&1 </dev/null 9>&- &
echo $! >"$pid_file"

deadline=$((SECONDS + timeout_s))
until curl -fsS "$endpoint/_localstack/health" 2>/dev/null | grep -q '"kms": *"\(available\|running\)"'; do
  if ! kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    echo "error: LocalStack exited during start-up; last log lines:" >&2
    tail -n 30 "$log_file" >&2
    exit 1
  fi
  if ((SECONDS > deadline)); then
    echo "error: LocalStack did not become healthy within ${timeout_s}s; last log lines:" >&2
    tail -n 30 "$log_file" >&2
    exit 1
  fi
  sleep 0.5
done
echo "$endpoint"
