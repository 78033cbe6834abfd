#!/usr/bin/env bash
# API contract test (make contract-test): schemathesis generates requests from src/openapi.json
# (the schema the server itself serves at /openapi.json) and sends them to a real `objdet serve`
# backed by a local S3 (moto). It fails on any 5xx and on any response that does not match the
# schema: status code, content type, headers, body.
# Usage: scripts/contract-test.sh [MAX_EXAMPLES]   (default 100 per operation)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
"$ROOT/scripts/setup.sh" ort test contract
EXAMPLES=${1:-100}
LOGS=$ROOT/target/contract
mkdir -p "$LOGS"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
S3_PORT=$(free_port)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

.cache/test/bin/moto_server -H 127.0.0.1 -p "$S3_PORT" >"$LOGS/moto.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$S3_PORT/" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf -X PUT "http://127.0.0.1:$S3_PORT/objdet-uploads" >/dev/null

export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$S3_PORT S3_FORCE_PATH_STYLE=true UPLOAD_BUCKET=objdet-uploads \
       AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true \
       ORT_DYLIB_PATH=$ROOT/.cache/ort/libonnxruntime.so ORT_OPTIMIZED_MODEL_PATH=off RUST_LOG=warn
target/release/objdet serve --port 0 >"$LOGS/serve.out" 2>"$LOGS/serve.log" &
pids+=($!)
for _ in $(seq 300); do grep -q "listening on" "$LOGS/serve.out" 2>/dev/null && break; sleep 0.1; done
BASE=$(sed -n 's/^listening on //p' "$LOGS/serve.out")
[ -n "$BASE" ] || { echo "objdet serve did not start"; cat "$LOGS/serve.log"; exit 1; }
echo "contract test against $BASE ($EXAMPLES examples per operation)"

.cache/contract/bin/schemathesis run "$BASE/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection \
  --max-examples "$EXAMPLES" --workers 2 --suppress-health-check all \
  --report junit --report-dir "$LOGS"
