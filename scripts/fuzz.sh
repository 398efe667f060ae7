#!/usr/bin/env bash
# Fuzzes the parsers of untrusted bytes (fuzz/fuzz_targets/) for a bounded time each and exits
# non-zero if any target crashed. Usage: scripts/fuzz.sh [seconds-per-target] [target...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-30}"
shift $(( $# > 0 ? 1 : 0 ))
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -gt 0 ]] || { echo "usage: $0 [seconds-per-target] [target...]" >&2; exit 2; }

# The fuzz build compiles the whole library (AWS SDK included) with coverage instrumentation, so it
# keeps its own target dir, never the main package's (different flags would rebuild both each time).
target_dir="${BYOK_FUZZ_TARGET_DIR:-/var/cache/byok-broker/fuzz-target}"
# No sanitizer by default: the library forbids unsafe code, so what fuzzing can find here is panics,
# overflows and broken round trips, which libFuzzer catches without AddressSanitizer; ASan would
# roughly double build and run time. BYOK_FUZZ_SANITIZER=address turns it on.
sanitizer="${BYOK_FUZZ_SANITIZER:-none}"
cargo_fuzz_version=0.13.2

# cargo-fuzz passes nightly-only rustc flags (-Z sanitizer and coverage options); only the stable
# toolchain is installed, and RUSTC_BOOTSTRAP=1 makes stable rustc accept them.
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $cargo_fuzz_version" ]]; then
  echo "== installing cargo-fuzz $cargo_fuzz_version"
  cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi

# cargo fuzz has no --locked: check here that fuzz/Cargo.lock needs no change, so the build is the
# reviewed one. It goes stale when the main package's dependencies change.
if ! cargo metadata --locked --offline --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null 2>&1 &&
   ! cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null; then
  echo "FUZZ ERROR: fuzz/Cargo.lock is out of date. Refresh it from the main lock file and commit it:" >&2
  echo "  cp Cargo.lock fuzz/Cargo.lock && cargo metadata --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null" >&2
  exit 1
fi

# Same flags for build and run, or `cargo fuzz run` would rebuild with its defaults.
fuzz_flags=(--sanitizer "$sanitizer" --codegen-units 16 --target-dir "$target_dir")

if [[ $# -gt 0 ]]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

echo "== building fuzz targets (sanitizer: $sanitizer, target dir: $target_dir)"
mkdir -p "$target_dir"
build_started=$SECONDS
cargo fuzz build "${fuzz_flags[@]}"
echo "built in $(( SECONDS - build_started )) s"

failed=()
for target in "${targets[@]}"; do
  # New inputs go to a scratch corpus outside the repository; the committed seeds are read only
  # (libFuzzer writes to the first corpus dir only), so a run never dirties the work tree.
  scratch="$target_dir/corpus/$target"
  log="$target_dir/logs/$target.log"
  mkdir -p "$scratch" "$(dirname "$log")" "fuzz/corpus/$target"
  echo "== fuzzing $target for ${seconds} s"
  if cargo fuzz run "${fuzz_flags[@]}" "$target" "$scratch" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    executions="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    echo "ok: $target, $executions executions, corpus $(find "$scratch" -type f | wc -l) inputs (log: $log)"
  else
    echo "FUZZ CRASH in $target (input saved under fuzz/artifacts/$target/); end of $log:" >&2
    tail -n 60 "$log" >&2
    failed+=("$target")
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "FUZZING FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzzing passed: ${targets[*]}"
