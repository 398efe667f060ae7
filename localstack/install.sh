#!/usr/bin/env bash
# Install LocalStack (host mode, no Docker) into localstack/.venv.
#
# LocalStack >= 4.10 needs Python >= 3.12; these machines have 3.11, so we pin 4.9.2 and resolve its
# dependencies as of its release day. Re-running is a no-op once the pinned version is installed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${LOCALSTACK_VENV:-$here/.venv}"
version="4.9.2"
resolve_date="2025-10-07"
marker="$venv/.byok-broker-localstack-$version"

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [[ -f "$marker" ]]; then
  echo "localstack $version already installed in $venv"
  exit 0
fi

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python="$candidate"; break; fi
  done
fi
if [[ -z "$python" ]]; then
  echo "error: no python3 found; LocalStack host mode needs Python 3.11 or 3.12" >&2
  exit 1
fi

echo "installing localstack-core $version into $venv (python: $($python --version 2>&1))"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check uv
"$venv/bin/python" -m uv pip install --python "$venv/bin/python" --quiet \
  --exclude-newer "$resolve_date" "localstack-core[runtime]==$version"
"$venv/bin/python" -c 'import localstack.runtime.main' # fails loudly if the install is broken
touch "$marker"
echo "localstack $version installed"
