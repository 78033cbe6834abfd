#!/usr/bin/env bash
# make scaled-decode-study: does JPEG_SCALED_DECODE (large JPEGs decoded at a DCT scale, never below
# the model's input) cost accuracy? A labelled set of phone-size photos (python/fixtures/shapes.py at
# 4032x3024, objects 6-20 % of the short side, seed 23, never trained on) evaluated by `objdet eval`
# with the setting on and off, each fixture model in MODELS, REPS interleaved repetitions for the
# timings. Prints a Markdown table (docs/scaled-decode.md holds this machine's).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-target/scaled-decode}
COUNT=${COUNT:-100}
REPS=${REPS:-2}
MODELS=${MODELS:-tests/fixtures/models/shapes-yolo11n.onnx tests/fixtures/models/yolo26n.onnx}
OBJDET=${OBJDET:-target/release/objdet}
scripts/setup.sh pyref
if [ ! -f "$OUT/data.yaml" ]; then
  .cache/pyref/bin/python python/fixtures/shapes.py "$OUT" --count "$COUNT" --seed 23 --split val --size 4032x3024
  printf 'train: images\nval: images\nnames: [circle, square, triangle, star]\n' > "$OUT/data.yaml"
fi
for model in $MODELS; do
  name=$(basename "$model" .onnx)
  for rep in $(seq 1 "$REPS"); do
    for scaled in true false; do
      JPEG_SCALED_DECODE=$scaled MODEL_PATH=$model ORT_OPTIMIZED_MODEL_PATH=off RUST_LOG=warn \
        "$OBJDET" eval --data "$OUT/data.yaml" --quiet --json "$OUT/$name-$scaled-$rep.json" > /dev/null
    done
  done
done
python3 - "$OUT" "$REPS" $MODELS <<'PY'
import glob, json, os, statistics, sys
out, reps, models = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
photos = sorted(glob.glob(os.path.join(out, "images", "*.jpg")))
mb = sum(os.path.getsize(p) for p in photos) / len(photos) / 1e6
print(f"{len(photos)} photos of 4032x3024, {mb:.2f} MB on average; median of {reps} interleaved runs for the times\n")
print("| model | JPEG_SCALED_DECODE | mAP50-95 | mAP50 | ms/image (2 sessions) | decode ms/image | Δ mAP50-95 |")
print("|---|---|---|---|---|---|---|")
for m in models:
    name = os.path.basename(m)[:-5]
    rows = {}
    for s in ("true", "false"):
        runs = [json.load(open(os.path.join(out, f"{name}-{s}-{r}.json"))) for r in range(1, reps + 1)]
        rows[s] = (runs[0]["map50_95"], runs[0]["map50"], statistics.median(r["ms_per_image"] for r in runs),
                   statistics.median(r["stages"]["decode_ms"] for r in runs))
    for s in ("true", "false"):
        a, a50, ms, dec = rows[s]
        delta = a - rows["false"][0]
        print(f"| {name} | {s} | {a:.4f} | {a50:.4f} | {ms:.1f} | {dec:.1f} | {delta:+.4f} |")
PY
