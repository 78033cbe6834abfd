"""A straightforward Python reference service (Flask + onnxruntime + PIL, same model, same API).

Used by `make bench` to compare objdet against what a plain Python port of the original study's
service would do. Not part of objdet. Usage: python app.py PORT
"""
import base64
import io
import os
import sys
import time

import numpy as np
import onnxruntime as ort
from flask import Flask, jsonify, request
from PIL import Image

ROOT = os.path.dirname(os.path.abspath(__file__))
MODEL = os.environ.get("MODEL_PATH", os.path.join(ROOT, "..", "..", "models", "centernet_mobilenetv3_coco.onnx"))
LABELS = [l.strip() for l in open(os.path.splitext(MODEL)[0] + ".labels.txt") if l.strip()]
SCORE, IOU, SIZE = 0.3, 0.4, 512
# PIL_DRAFT=1: JPEGs decoded at the smallest DCT scale still >= SIZE (PIL's Image.draft), as a
# careful Python service would for phone-size photos.
DRAFT = os.environ.get("PIL_DRAFT") == "1"

session = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
INPUT = session.get_inputs()[0].name
app = Flask(__name__)


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def detect(data):
    img = Image.open(io.BytesIO(data))
    w, h = img.size
    if DRAFT:
        img.draft("RGB", (SIZE, SIZE))
    img = img.convert("RGB")
    x = np.asarray(img.resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float32)[None]
    t = time.perf_counter()
    rows = session.run(["tower_0/detections"], {INPUT: x})[0][0]
    inference_ms = (time.perf_counter() - t) * 1e3
    rows = rows[rows[:, 4] >= SCORE]
    rows = rows[np.argsort(-rows[:, 4])]
    kept = []
    for r in rows:
        box = [float(np.clip(r[0] * w / SIZE, 0, w)), float(np.clip(r[1] * h / SIZE, 0, h)),
               float(np.clip(r[2] * w / SIZE, 0, w)), float(np.clip(r[3] * h / SIZE, 0, h))]
        if all(iou(box, k["b"]) <= IOU for k in kept):
            kept.append({"b": box, "score": float(r[4]), "class_id": int(round(r[5]))})
    objects = [{"label": LABELS[k["class_id"]], "class_id": k["class_id"], "score": k["score"],
                "box": dict(zip(("x1", "y1", "x2", "y2"), k["b"]))} for k in kept]
    return w, h, objects, inference_ms


@app.post("/api/detect")
def api_detect():
    start = time.perf_counter()
    body = request.get_json()
    names = body.get("names") or [f"image-{i}" for i in range(len(body["images"]))]
    results, total_inf = [], 0.0
    for name, b64 in zip(names, body["images"]):
        w, h, objects, inf = detect(base64.b64decode(b64))
        total_inf += inf
        results.append({"name": name, "width": w, "height": h, "objects": objects, "inference_ms": inf})
    n = max(len(results), 1)
    return jsonify({"results": results, "timing": {
        "payload_bytes": request.content_length or 0, "receive_ms": 0.0, "decode_ms": 0.0,
        "inference_ms_total": total_inf, "avg_inference_ms": total_inf / n,
        "total_ms": (time.perf_counter() - start) * 1e3}})


@app.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5001
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    app.run(host="127.0.0.1", port=port, threaded=False)
