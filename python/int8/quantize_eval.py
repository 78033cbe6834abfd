"""int8 experiment (issue 6, optional): quantize the bundled model and check it against fp32.

Makes static QDQ int8 variants with onnxruntime's quantization tools, calibrated on the fixture
photos (and their mirror images), keeping the CenterNet head (peak picking, box decoding) in float,
then measures on the fixture photos:
  - agreement: fp32 boxes (score >= 0.3, NMS 0.4) matched by an int8 box with IoU >= 0.7 and the
    same label (target >= 90 %);
  - speed: median bare session.run, fp32 and int8 interleaved, 1 intra-op thread (target >= 1.25x).
Run with `make int8-experiment`; models go to target/int8/. Exit status 0 only if a variant meets
both targets (none did on the development machine: see docs/performance.md, int8).
"""
import glob
import os
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "models/centernet_mobilenetv3_coco.onnx")
PHOTOS = sorted(glob.glob(os.path.join(ROOT, "tests/fixtures/images/*")))
OUT = os.path.join(ROOT, "target/int8")
INPUT, OUTPUT = "tower_0/images:0", "tower_0/detections"
# Everything after the backbone: the CenterNet neck/head and the decoding of peaks into boxes.
HEAD = ["CenternetHead", "tower_0/mul", "tower_0/Sigmoid", "Transpose__6", "tower_0/max_pooling",
        "tower_0/Equal", "tower_0/Cast", "tower_0/Reshape", "TopK", "BatchGather"]
VARIANTS = {
    # name: (quantized op types (None = all supported), reduce_range)
    "backbone-conv-7bit": (["Conv"], True),
    "backbone-conv-8bit": (["Conv"], False),
    "backbone-all-ops": (None, False),
}


def tensor(path, flip=False):
    img = Image.open(path).convert("RGB").resize((512, 512), Image.BILINEAR)
    a = np.asarray(img, dtype=np.float32)
    if flip:
        a = a[:, ::-1, :]
    return np.ascontiguousarray(a[None])


class Photos(CalibrationDataReader):
    def __init__(self):
        self.items = iter([{INPUT: tensor(p, f)} for p in PHOTOS for f in (False, True)])

    def get_next(self):
        return next(self.items, None)


def quantize(name, ops, reduce_range):
    pre = os.path.join(OUT, "preprocessed.onnx")
    if not os.path.exists(pre):
        quant_pre_process(MODEL, pre, skip_symbolic_shape=True)
    exclude = [n.name for n in onnx.load(pre).graph.node if any(s in n.name for s in HEAD)]
    out = os.path.join(OUT, f"centernet_mobilenetv3_coco.{name}.int8.onnx")
    quantize_static(pre, out, Photos(), quant_format=QuantFormat.QDQ, op_types_to_quantize=ops,
                    nodes_to_exclude=exclude, per_channel=True, reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    return out


def session(path):
    o = ort.SessionOptions()
    o.intra_op_num_threads, o.inter_op_num_threads = 1, 1
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def detect(s, x):
    rows = sorted((r for r in s.run([OUTPUT], {INPUT: x})[0][0] if r[4] >= 0.3), key=lambda r: -r[4])
    keep = []
    for r in rows:
        if all(iou(r, k) <= 0.4 for k in keep):
            keep.append(r)
    return keep


def evaluate(fp32, int8, reps=15):
    total = matched = 0
    for p in PHOTOS:
        x = tensor(p)
        a, b = detect(fp32, x), detect(int8, x)
        total += len(a)
        matched += sum(1 for r in a if any(int(r[5]) == int(s[5]) and iou(r, s) >= 0.7 for s in b))
    x = tensor(PHOTOS[0])
    tf, ti = [], []
    for s in (fp32, int8):
        s.run([OUTPUT], {INPUT: x})
    for _ in range(reps):
        for s, t in ((fp32, tf), (int8, ti)):
            t0 = time.perf_counter()
            s.run([OUTPUT], {INPUT: x})
            t.append(time.perf_counter() - t0)
    return matched, total, float(np.median(tf)) * 1e3, float(np.median(ti)) * 1e3


def main():
    os.makedirs(OUT, exist_ok=True)
    fp32 = session(MODEL)
    met = False
    print("| variant | fp32 boxes matched | fp32 ms | int8 ms | speed-up |")
    print("|---|---|---|---|---|")
    for name, (ops, reduce_range) in VARIANTS.items():
        path = quantize(name, ops, reduce_range)
        m, n, f, i = evaluate(fp32, session(path))
        ok = n > 0 and m / n >= 0.9 and f / i >= 1.25
        met |= ok
        print(f"| {name} | {m}/{n} ({m / max(n, 1):.0%}) | {f:.1f} | {i:.1f} | {f / i:.2f}x{' (meets both targets)' if ok else ''} |",
              flush=True)
    print("a variant meets both targets" if met else "no variant meets both targets (>= 90 % matched, >= 1.25x): none shipped")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
