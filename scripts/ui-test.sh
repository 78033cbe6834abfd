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
# The custom-trained model as an S3 object on moto (make setup-test installs it), loaded by MODEL_URI.
MOTO_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$CACHE/test/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" > "$LOGS/ui-moto.log" 2>&1 &
echo $! >> "$LOGS/ui-pids"
S3_ENV=(AWS_ENDPOINT_URL_S3="http://127.0.0.1:$MOTO_PORT" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
        AWS_REGION=us-east-1 S3_FORCE_PATH_STYLE=true)
for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$MOTO_PORT/" 2>/dev/null && break; sleep 0.1; done
curl -fsS -X PUT "http://127.0.0.1:$MOTO_PORT/ui-models" > /dev/null
curl -fsS -T tests/fixtures/models/shapes-yolo11n.onnx \
  "http://127.0.0.1:$MOTO_PORT/ui-models/detectors/shapes-yolo11n.onnx" > /dev/null
BASE_CUSTOM=$(start "$LOGS/ui-serve-custom.log" "${S3_ENV[@]}" MODEL_URI=s3://ui-models/detectors/shapes-yolo11n.onnx)
# Masks, keypoints and rotated boxes: the task fixtures (python/fixtures/make_tasks.py).
BASE_SEGMENT=$(start "$LOGS/ui-serve-segment.log" MODEL_PATH=tests/fixtures/models/yolo11n-seg.onnx)
BASE_POSE=$(start "$LOGS/ui-serve-pose.log" MODEL_PATH=tests/fixtures/models/yolo11n-pose.onnx)
BASE_OBB=$(start "$LOGS/ui-serve-obb.log" MODEL_PATH=tests/fixtures/models/yolo11n-obb.onnx)
BASE_SEGMENT=$BASE_SEGMENT BASE_POSE=$BASE_POSE BASE_OBB=$BASE_OBB \
BASE=$BASE BASE_WITH_TOKEN=$BASE_WITH_TOKEN BASE_CUSTOM=$BASE_CUSTOM TOKEN=$TOKEN ROOT=$ROOT ARTIFACTS=$ROOT/target/ui-artifacts \
  PLAYWRIGHT_PREFIX="$CACHE/ui" node "$ROOT/tests/ui/page.test.mjs"
