#!/usr/bin/env bash
# Stop a LocalStack started by start.sh. Usage: localstack/stop.sh [PORT]   (default 4566)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${1:-4566}"
pid_file="$here/.run/$port.pid"

if [[ ! -f "$pid_file" ]]; then
  echo "no LocalStack recorded on port $port"
  exit 0
fi
pid="$(cat "$pid_file")"
if kill -0 "$pid" 2>/dev/null; then
  # start.sh ran it under setsid, so the pid is also its process group: stop the whole group.
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
fi
rm -f "$pid_file"
echo "stopped LocalStack on port $port"
