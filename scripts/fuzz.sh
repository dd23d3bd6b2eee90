#!/usr/bin/env bash
# Runs keyward's fuzz targets (fuzz/, cargo-fuzz + libFuzzer), each for a
# bounded time, one after the other; exits non-zero if any target found a
# crash (its input is then in fuzz/artifacts/<target>/).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default: 60 s, every target
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and a C++ compiler
# (libfuzzer-sys builds libFuzzer). cargo-fuzz passes nightly `-Z` flags;
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. Environment:
#   FUZZ_SANITIZER   address (default) or none (faster; the crates forbid
#                    unsafe code, so ASan mostly guards the dependencies)
#   FUZZ_TARGET_DIR  build directory (default fuzz/target)
#   FUZZ_NICE        niceness of the runs (default 10)
# Inputs found go to fuzz/corpus/<target>/ (not in git); fuzz/regressions/
# <target>/ seeds every run and is replayed by `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
shift || true
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  targets=(h1_head chunked credential key_parse cidr path)
fi
sanitizer="${FUZZ_SANITIZER:-address}"
target_dir="${FUZZ_TARGET_DIR:-$PWD/fuzz/target}"
nice_level="${FUZZ_NICE:-10}"
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
  exit 2
fi

cd fuzz
nice -n "$nice_level" cargo fuzz build -O --sanitizer "$sanitizer" --target-dir "$target_dir"

failed=()
mkdir -p artifacts
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "regressions/$t"
  echo "== $t for ${secs}s (sanitizer: $sanitizer)"
  if nice -n "$nice_level" cargo fuzz run -O --sanitizer "$sanitizer" --target-dir "$target_dir" \
      "$t" "corpus/$t" "regressions/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"artifacts/$t.log" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "artifacts/$t.log" || true
  else
    echo "!! $t failed: see fuzz/artifacts/$t.log and fuzz/artifacts/$t/" >&2
    tail -n 30 "artifacts/$t.log" >&2
    failed+=("$t")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "Crashes in: ${failed[*]}" >&2
  exit 1
fi
echo "No crashes."
