#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS seconds each, from the committed seeds
# plus the corpus grown so far, and prints one line per target: executions, speed, outcome.
# Stops at the first target that finds a crash, a timeout or a leak (libFuzzer leaves the input
# in fuzz/artifacts/<target>/). Usage: fuzz/run.sh SECONDS [target...]
# FUZZ_SANITIZER=none builds without AddressSanitizer (several times faster, finds only panics,
# hangs and out-of-memory; for volume on slow targets such as `config`).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:?usage: fuzz/run.sh SECONDS [target...]}
shift
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
targets=("$@")
sanitizer=${FUZZ_SANITIZER:-address}
if [ ${#targets[@]} -eq 0 ]; then
  # Every fuzz target (the seeds writer is a binary of the crate, not a target).
  mapfile -t targets < <(cargo +nightly fuzz list | grep -vx seeds)
fi
# One target at a time: building every binary of the crate at once also links `seeds` (no
# libFuzzer in it), which fails without a sanitizer runtime to provide the coverage hooks.
for target in "${targets[@]}"; do
  cargo +nightly fuzz build -s "$sanitizer" "$target"
done
mkdir -p ../target/fuzz-logs
printf '| target | executions | exec/s | seconds | result |\n|---|---|---|---|---|\n'
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  log="../target/fuzz-logs/$target.log"
  status=0
  cargo +nightly fuzz run -s "$sanitizer" "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  runs=$(grep -oE '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
  speed=$(grep -oE '^stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
  if [ "$status" -eq 0 ]; then result=clean; else result="FAILED (see $log)"; fi
  printf '| %s | %s | %s | %s | %s |\n' "$target" "$runs" "$speed" "$seconds" "$result"
  [ "$status" -eq 0 ] || exit "$status"
done
