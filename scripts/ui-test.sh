#!/usr/bin/env bash
# make ui-test: the browser page in Debian's chromium, driven by playwright-core (npm), against
# `objdet serve` on 127.0.0.1 (one open, one with API_TOKEN). Installs chromium (apt) and
# playwright-core (npm, into .cache/ui) when missing; never downloads a browser.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${OBJDET_CACHE:-$ROOT/.cache}
PLAYWRIGHT_VERSION=1.65.1
sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
if ! command -v chromium > /dev/null; then
  echo "ui-test: installing chromium (apt)"
  $sudo apt-get install -y -qq chromium > /dev/null 2>&1 || { $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium > /dev/null; }
fi
if [ ! -f "$CACHE/ui/.v$PLAYWRIGHT_VERSION" ]; then
  echo "ui-test: installing playwright-core $PLAYWRIGHT_VERSION (npm; no browser download)"
  mkdir -p "$CACHE/ui"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund --prefix "$CACHE/ui" "playwright-core@$PLAYWRIGHT_VERSION"
  touch "$CACHE/ui/.v$PLAYWRIGHT_VERSION"
fi
BIN=${OBJDET_BIN:-$ROOT/target/release/objdet}
LOGS=$ROOT/target/test-logs; mkdir -p "$LOGS"
TOKEN=ui-test-token-$(date +%s)-$$
start() {  # start LOG [ENV=V...]: objdet serve on a free port; prints its base URL
  local log=$1; shift
  env "$@" PORT=0 RUST_LOG=warn "$BIN" serve > "$log" 2>&1 &
  echo $! >> "$LOGS/ui-pids"
  for _ in $(seq 1 200); do
    url=$(grep -o 'http://127.0.0.1:[0-9]*' "$log" | head -1 || true)
    [ -n "$url" ] && { echo "$url"; return; }
    sleep 0.1
  done
  echo "ui-test: objdet serve did not start (see $log)" >&2; exit 1
}
: > "$LOGS/ui-pids"
trap 'xargs -r kill < "$LOGS/ui-pids" 2>/dev/null || true' EXIT
cd "$ROOT"
BASE=$(start "$LOGS/ui-serve.log")
BASE_WITH_TOKEN=$(start "$LOGS/ui-serve-token.log" API_TOKEN="$TOKEN")
BASE=$BASE BASE_WITH_TOKEN=$BASE_WITH_TOKEN TOKEN=$TOKEN ROOT=$ROOT ARTIFACTS=$ROOT/target/ui-artifacts \
  PLAYWRIGHT_PREFIX="$CACHE/ui" node "$ROOT/tests/ui/page.test.mjs"
