#!/usr/bin/env bash
# cargo fuzz on the three hostile-input surfaces (make fuzz / make fuzz-smoke).
# Usage: scripts/fuzz.sh RUNS TARGET...   Any libFuzzer artifact (crash-, oom-, timeout-, leak-,
# slow-unit-, ...) in fuzz/artifacts/<target>/ fails the run, and so does a target that does not
# run all its executions (a binary that never starts, or stops early). The corpus grows in
# fuzz/corpus/<target>/ (commit what a long run found worth keeping: `cargo fuzz cmin`).
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
  artifacts=$ROOT/fuzz/artifacts/$target
  mkdir -p "$artifacts"
  log=$ROOT/fuzz/target/fuzz-$target.log
  status=0
  cargo +nightly fuzz run -s none --release "$target" "$work" -- -runs="$RUNS" -max_len="$len" -rss_limit_mb=2048 \
    -timeout=10 -print_final_stats=1 > "$log" 2>&1 || status=$?
  grep -E "^(Done|stat::number_of_executed_units|==|.*panicked|.*SUMMARY)" "$log" || true
  executed=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  left=$(find "$artifacts" -type f -printf '%f ')
  if [ -n "$left" ] || [ "$status" -ne 0 ]; then
    # An artifact of an earlier run counts too: delete it once its cause is mended.
    echo "fuzz $target: failed (exit $status; artifacts in fuzz/artifacts/$target: ${left:-none})"; tail -20 "$log"; exit 1
  fi
  if [ -z "$executed" ] || [ "$executed" -lt "$RUNS" ]; then
    echo "fuzz $target: ran ${executed:-no} executions of $RUNS (see $log)"; tail -20 "$log"; exit 1
  fi
done
