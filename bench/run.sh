#!/usr/bin/env bash
# The byok-broker benchmark: starts LocalStack (unless LOCALSTACK_ENDPOINT names one), builds the
# broker and the bench driver in release mode, and runs every workload with its baselines.
# Usage: bench/run.sh [--quick]     (--quick: ~1.5 s per point, the CI smoke run)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -z "${LOCALSTACK_ENDPOINT:-}" ]]; then
  port="${BYOK_BENCH_LOCALSTACK_PORT:-4597}"
  bash localstack/install.sh >/dev/null
  LOCALSTACK_ENDPOINT="$(bash localstack/start.sh "$port" | tail -n 1)"
  trap 'bash localstack/stop.sh "$port" >/dev/null' EXIT
fi

cargo build --release --locked --bin byok-broker --example bench
target_dir="${CARGO_TARGET_DIR:-target}"
"$target_dir/release/examples/bench" --broker "$target_dir/release/byok-broker" --localstack "$LOCALSTACK_ENDPOINT" "$@"
