#!/usr/bin/env bash
# make test-models: rebuilds tests/fixtures/models and tests/fixtures/eval (see their README) with
# the real exporters and the reference evaluators (Ultralytics' val, pycocotools), in
# venvs under .cache/fixtures: Ultralytics (with torch) for the YOLO and RT-DETR families, its
# 8.3 release for the older RT-DETR export, TensorFlow + tf2onnx for the TF-OD graph. Offline.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
V=${OBJDET_CACHE:-$ROOT/.cache}/fixtures
PY=${PYTHON:-python3}
export YOLO_OFFLINE=1
[ -x "$V/ul/bin/python" ] || { "$PY" -m venv "$V/ul"; "$V/ul/bin/pip" install -q "ultralytics==8.4.190" onnx onnxslim onnxscript "onnxruntime==1.31.1" "pycocotools==2.0.11"; }
[ -d "$V/ul83/ultralytics" ] || "$V/ul/bin/pip" install -q --no-deps --target "$V/ul83" "ultralytics==8.3.200" scipy
[ -x "$V/tf/bin/python" ] || { "$PY" -m venv "$V/tf"; "$V/tf/bin/pip" install -q "tensorflow-cpu==2.21.*" "tf2onnx==1.17.*" "onnx==1.23.*"; }
cd "$ROOT"
export FIXTURE_WORK=${FIXTURE_WORK:-$ROOT/target/fixture-work}
"$V/ul/bin/python" python/fixtures/make_models.py
PYTHONPATH="$V/ul83" "$V/ul/bin/python" python/fixtures/make_rtdetr_old.py "$FIXTURE_WORK/runs/rtdetr/weights/last.pt"
"$V/ul/bin/python" python/fixtures/make_detr_split.py
"$V/tf/bin/python" python/fixtures/make_tfod.py
# Ultralytics' own int8 export (and its predictor's oracle), then the eval references: labels of
# the shapes test set, Ultralytics' val of every shapes model, pycocotools on stored detections.
(cd python/fixtures && "$V/ul/bin/python" make_int8.py)
# Masks, keypoints, rotated boxes: YOLO11 -seg, -pose, -obb on their synthetic sets (make_tasks.py).
"$V/ul/bin/python" python/fixtures/make_tasks.py
"$V/ul/bin/python" python/fixtures/make_task_eval.py
"$V/ul/bin/python" python/fixtures/make_eval.py
ls -la tests/fixtures/models
