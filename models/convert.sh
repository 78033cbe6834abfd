#!/usr/bin/env bash
# Reproduces models/centernet_mobilenetv3_coco.onnx from its published source:
#   npm @vladmandic/human@3.3.6 (TF.js graph model, fp16)  --tf2onnx-->  ONNX opset 17.
# Needs npm and PyPI (TensorFlow is ~600 MB). Not run by CI. Usage: models/convert.sh [OUT.onnx]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$HERE/centernet_mobilenetv3_coco.converted.onnx}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

# 1. The TF.js graph model from the npm package.
npm pack --silent @vladmandic/human@3.3.6 >/dev/null
tar xzf vladmandic-human-3.3.6.tgz package/models/centernet.json package/models/centernet.bin
mkdir tfjs && mv package/models/centernet.json package/models/centernet.bin tfjs/

# 2. A pinned converter stack.
python3 -m venv venv
venv/bin/pip install --quiet "tensorflow==2.21.*" "tf2onnx==1.17.*" "onnx==1.23.*" "tensorflowjs" "onnxruntime"

# 3. Fill op attributes that TF 2.21 requires but the old TF.js JSON lacks, from TF's op definitions.
venv/bin/python - <<'PY'
import json
from tensorflow.python.framework import op_def_registry
from google.protobuf.json_format import MessageToDict

path = "tfjs/centernet.json"
model = json.load(open(path))
nodes = model["modelTopology"]["node"]
filled = 0
for node in nodes:
    op_def = op_def_registry.get(node["op"])
    if op_def is None:
        continue
    attrs = node.setdefault("attr", {})
    for a in op_def.attr:
        if a.name in attrs:
            continue
        if a.name == "TArgs":  # fused ops: one type per extra input, all equal to T
            t = attrs.get("T", {"type": "DT_FLOAT"})["type"]
            n = int(attrs.get("num_args", {}).get("i", max(len(node.get("input", [])) - 2, 0)))
            attrs["TArgs"] = {"list": {"type": [t] * n}}
        elif a.HasField("default_value"):
            attrs[a.name] = MessageToDict(a.default_value)
        else:
            continue
        filled += 1
json.dump(model, open(path, "w"))
print(f"filled {filled} missing attributes")
PY

# 4. Convert (tf2onnx still calls np.product, removed in numpy 2).
venv/bin/python - "$OUT" <<'PY'
import sys
import numpy as np
np.product = np.prod
from tf2onnx import convert
sys.argv = ["tf2onnx", "--tfjs", "tfjs/centernet.json", "--output", sys.argv[1], "--opset", "17"]
convert.main()
PY

# 5. Check against the reference detections (same interface as the bundled file).
venv/bin/python - "$OUT" <<'PY'
import sys, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1])
print("inputs:", [(i.name, i.shape) for i in s.get_inputs()])
print("outputs:", [(o.name, o.shape) for o in s.get_outputs()])
PY
sha256sum "$OUT"
echo "Compare detections with models/README.md: MODEL_PATH=$OUT cargo run --release -- detect tests/fixtures/images/*"
