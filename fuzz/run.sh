#!/usr/bin/env bash
# A bounded fuzz run of every target (docs/fuzzing.md): SECS seconds each (default 30), seeded
# with the checked-in corpus, new inputs kept in a scratch directory (the corpus stays as
# checked in). Fails, naming the target and the crashing input, as soon as a target crashes.
#
#   bash fuzz/run.sh [SECS] [TARGET...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). Stable toolchain: RUSTC_BOOTSTRAP=1
# lets cargo-fuzz pass the sanitizer flags only nightly would otherwise take.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-30}
[ $# -gt 0 ] && shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
export RUSTC_BOOTSTRAP=1
# -a: debug assertions and overflow checks, so an arithmetic overflow is a crash too.
flags=(-a --sanitizer "${FUZZ_SANITIZER:-address}")
if [ $# -eq 0 ]; then
  cargo fuzz build "${flags[@]}"
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "corpus/$t"
  log="$scratch/$t.log"
  if cargo fuzz run "${flags[@]}" "$t" "$scratch/$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
    runs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log")
    echo "fuzz: $t: ${runs:-?} runs in ${secs}s, no crash"
  else
    grep -E "panicked at|ERROR: |SUMMARY|Test unit written to" -A2 "$log" | head -20 >&2 || tail -20 "$log" >&2
    echo "fuzz: $t CRASHED (input kept under fuzz/artifacts/$t; reproduce: cargo fuzz run $t fuzz/artifacts/$t/<file>)" >&2
    exit 1
  fi
done
