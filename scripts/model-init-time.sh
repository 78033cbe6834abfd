#!/usr/bin/env bash
# Init time of the Lambda bootstrap with its model in S3 (MODEL_URI), against Lambda's 10 s Init
# limit: AWS's Runtime Interface Emulator running target/release/bootstrap, moto as S3 on loopback.
# Prints, per model and repeat: the download (bytes, ms), the model load, and the time from the
# emulator's start to the first answered API event (Init + that invocation).
# Usage: scripts/model-init-time.sh MODEL.onnx... (REPEATS=3). Not run by CI. Needs make setup-test
# and a release build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${OBJDET_CACHE:-$ROOT/.cache}
REPEATS=${REPEATS:-3}
LOGS=$ROOT/target/test-logs/model-init; mkdir -p "$LOGS"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
MOTO=$(free_port)
"$CACHE/test/bin/moto_server" -H 127.0.0.1 -p "$MOTO" > "$LOGS/moto.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$MOTO/" 2>/dev/null && break; sleep 0.1; done
curl -fsS -X PUT "http://127.0.0.1:$MOTO/init-models" > /dev/null
EVENT=$LOGS/event.json
python3 - "$ROOT" > "$EVENT" <<'PY'
import base64, json, sys
root = sys.argv[1]
ev = json.load(open(f"{root}/events/apigw-http-detect-s3.json"))
img = base64.b64encode(open(f"{root}/tests/fixtures/images/dog.jpg", "rb").read()).decode()
ev["body"], ev["isBase64Encoded"] = json.dumps({"images": [img]}), False
print(json.dumps(ev))
PY
printf '| model | MB | repeat | download ms | load ms | RIE start → first answer ms |\n|---|---|---|---|---|---|\n'
for model in "$@"; do
  name=$(basename "$model")
  curl -fsS -T "$model" "http://127.0.0.1:$MOTO/init-models/$name" > /dev/null
  mb=$(python3 -c "import os,sys; print(f'{os.path.getsize(sys.argv[1])/1e6:.1f}')" "$model")
  for r in $(seq 1 "$REPEATS"); do
    p1=$(free_port); p2=$(free_port); log=$LOGS/$name-$r.log
    start=$(date +%s%N)
    env -i PATH="$PATH" ORT_DYLIB_PATH="$CACHE/ort/libonnxruntime.so" _HANDLER=http LOG_FORMAT=json RUST_LOG=info \
      AWS_LAMBDA_FUNCTION_MEMORY_SIZE=3538 AWS_ENDPOINT_URL_S3="http://127.0.0.1:$MOTO" S3_FORCE_PATH_STYLE=true \
      AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 \
      MODEL_URI="s3://init-models/$name" MODEL_DOWNLOAD_DIR="$LOGS/tmp-$r" \
      "$CACHE/test/bin/aws-lambda-rie" --runtime-interface-emulator-address "127.0.0.1:$p1" \
      --runtime-api-address "127.0.0.1:$p2" "$ROOT/target/release/bootstrap" > "$log" 2>&1 &
    rie=$!; pids+=($rie)
    until curl -fsS -o /dev/null -X POST -d @"$EVENT" "http://127.0.0.1:$p1/2015-03-31/functions/function/invocations" 2>/dev/null; do
      sleep 0.02
    done
    end=$(date +%s%N)
    kill "$rie" 2>/dev/null || true; wait "$rie" 2>/dev/null || true
    dl=$(grep -o '"message":"model downloaded".*' "$log" | grep -o '"ms":[0-9.]*' | head -1 | cut -d: -f2)
    load=$(grep -o '"load_ms":[0-9.]*' "$log" | head -1 | cut -d: -f2)
    printf '| %s | %s | %s | %.0f | %.0f | %.0f |\n' "$name" "$mb" "$r" "${dl:-0}" "${load:-0}" "$(( (end - start) / 1000000 ))"
    rm -rf "$LOGS/tmp-$r"
  done
done
