#!/usr/bin/env bash
# cargo fuzz on the three hostile-input surfaces (make fuzz / make fuzz-smoke).
# Usage: scripts/fuzz.sh RUNS TARGET...   Crashes land in fuzz/artifacts/<target>/ and fail the run;
# the corpus grows in fuzz/corpus/<target>/ (commit what a long run found worth keeping: `cargo fuzz cmin`).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=$1
shift
"$ROOT/scripts/setup.sh" fuzz
export PATH=$ROOT/.cache/tools/bin:$PATH
cd "$ROOT/fuzz"
# No sanitizer: the targets look for panics and wrong answers in safe Rust; the build stays fast.
cargo +nightly fuzz build -s none --release "$@" 2>/dev/null || cargo +nightly fuzz build -s none --release
for target in "$@"; do
  case $target in
    image_decode) len=65536 ;;
    lambda_event) len=8192 ;;
    *) len=4096 ;;
  esac
  echo "== fuzz $target: $RUNS runs"
  # A scratch copy of the corpus: a smoke run must not grow the committed one.
  work=$ROOT/fuzz/target/corpus-$target
  rm -rf "$work" && mkdir -p "$work" && cp "$ROOT/fuzz/corpus/$target"/* "$work"/
  cargo +nightly fuzz run -s none --release "$target" "$work" -- -runs="$RUNS" -max_len="$len" -rss_limit_mb=2048 \
    -print_final_stats=1 2>&1 | grep -E "^(Done|stat::number_of_executed_units|==|.*panicked|.*SUMMARY)" || true
  if ls "$ROOT/fuzz/artifacts/$target"/crash-* >/dev/null 2>&1; then
    echo "fuzz $target: crash found (fuzz/artifacts/$target)"; exit 1
  fi
done
