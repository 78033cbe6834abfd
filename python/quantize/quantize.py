"""make quantize: int8 variants of an ONNX detector, measured against fp32 on this CPU.

    make quantize MODEL=path/to/model.onnx DATA=path/to/data.yaml [CALIB=other/data.yaml] [OUT=target/quantize]

CALIB (default DATA) is the set the calibration tensors come from: use images the evaluation does
not score (a train or val split) so that the table's mAP is not measured on the calibration images.

1. Calibration tensors come from objdet itself (`objdet calibration`): the set's images decoded and
   letterboxed by the serving pipeline, so the quantizer sees exactly what the model will be fed.
2. Two static QDQ variants with ONNX Runtime's quantizer, only Conv/Gemm/MatMul quantized (every
   other node, the head's decode and concatenations among them, stays float: one int8 scale for
   box pixels and class probabilities would round every score to 0):
     s8s8      Ultralytics' recipe (`export(format="onnx", int8=True)`): int8 activations and weights
     u8s8-rr   uint8 activations, int8 weights, 7-bit `reduce_range` (ORT's advice for CPUs without
               VNNI, where u8s8 with full range can saturate)
     u8s8-rr-pc  the same with per-channel weight scales (7-bit weights lose less per channel)
   The model's metadata (names, imgsz, stride, task) is kept, so objdet loads each from MODEL_PATH alone.
3. Each variant and fp32: `objdet eval` on the set (mAP50-95, mAP50, server time per image with every
   session busy), the bare `session.run` floor (one thread, the variants interleaved, median), the
   file size; and the CPU features that decide int8 speed.
Writes OUT/NAME.{s8s8,u8s8-rr}.onnx, OUT/quantize.json and OUT/quantize.md (the table).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

VARIANTS = {
    "s8s8": dict(activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, reduce_range=False, per_channel=False),
    "u8s8-rr": dict(activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True, per_channel=False),
    "u8s8-rr-pc": dict(activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True, per_channel=True),
}
QUANTIZED_OPS = {"Conv", "Gemm", "MatMul"}


class Tensors(CalibrationDataReader):
    def __init__(self, name, array):
        self.items = iter([{name: array[i : i + 1]} for i in range(array.shape[0])])

    def get_next(self):
        return next(self.items, None)


def quantize(model, calib, out, options):
    m = onnx.load(model)
    name = m.graph.input[0].name
    exclude = [n.name for n in m.graph.node if n.op_type not in QUANTIZED_OPS]
    quantize_static(model, out, Tensors(name, calib), quant_format=QuantFormat.QDQ, nodes_to_exclude=exclude,
                    **options)
    q = onnx.load(out)
    have = {p.key for p in q.metadata_props}
    missing = [p for p in m.metadata_props if p.key not in have]
    if missing:  # keep names, imgsz, stride, task: objdet reads the model's description from them
        q.metadata_props.extend(missing)
        onnx.save(q, out)


def cpu():
    flags, model = [], ""
    try:
        for line in open("/proc/cpuinfo"):
            k, _, v = line.partition(":")
            if k.strip() in ("flags", "Features") and not flags:
                flags = v.split()
            if k.strip() == "model name" and not model:
                model = v.strip()
    except OSError:
        pass
    wanted = ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"]
    return model, [f for f in wanted if f in flags]


def floors(paths, calib, reps, per=8):
    """The bare session.run floor per image: one single-thread session per core running in parallel
    (as objdet's pool runs them), wall time per image; the models interleaved rep by rep, median."""
    from concurrent.futures import ThreadPoolExecutor

    cores = os.cpu_count() or 1
    sessions = {}
    for name, p in paths.items():
        o = ort.SessionOptions()
        o.intra_op_num_threads, o.inter_op_num_threads = 1, 1
        ss = [ort.InferenceSession(p, o, providers=["CPUExecutionProvider"]) for _ in range(cores)]
        sessions[name] = (ss, ss[0].get_inputs()[0].name)
    n = calib.shape[0]

    def work(s, i, k):
        for j in range(per):
            r = (k * per + j) % n
            s.run(None, {i: calib[r : r + 1]})

    times = {name: [] for name in sessions}
    with ThreadPoolExecutor(cores) as pool:
        for ss, i in sessions.values():  # warm every session
            list(pool.map(lambda s: s.run(None, {i: calib[:1]}), ss))
        for _ in range(reps):
            for name, (ss, i) in sessions.items():
                t = time.perf_counter()
                list(pool.map(lambda a: work(a[1], i, a[0]), enumerate(ss)))
                times[name].append((time.perf_counter() - t) * 1e3 / (cores * per))
    return {name: statistics.median(v) for name, v in times.items()}


def evaluate(objdet, model, data, out):
    env = dict(os.environ, MODEL_PATH=model, ORT_OPTIMIZED_MODEL_PATH="off", RUST_LOG="warn")
    subprocess.run([objdet, "eval", "--data", data, "--quiet", "--json", out], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return json.load(open(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--calib-data", default=None, help="the set calibration images come from (default: --data)")
    ap.add_argument("--out", default="target/quantize")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--objdet", default="target/release/objdet")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    stem = os.path.splitext(os.path.basename(a.model))[0]
    calib_path = os.path.join(a.out, stem + ".calibration.npy")
    env = dict(os.environ, MODEL_PATH=a.model, ORT_OPTIMIZED_MODEL_PATH="off", RUST_LOG="warn")
    subprocess.run([a.objdet, "calibration", "--data", a.calib_data or a.data, "--count", str(a.count), "--out", calib_path],
                   env=env, check=True)
    calib = np.load(calib_path)
    paths = {"fp32": a.model}
    for name, options in VARIANTS.items():
        out = os.path.join(a.out, f"{stem}.{name}.onnx")
        print(f"quantizing {name} ...", flush=True)
        quantize(a.model, calib, out, options)
        paths[name] = out
    rows = {}
    for name, p in paths.items():
        r = evaluate(a.objdet, p, a.data, os.path.join(a.out, f"{stem}.{name}.eval.json"))
        rows[name] = {"map50_95": r["map50_95"], "map50": r["map50"], "server_ms": r["ms_per_image"],
                      "inference_ms": r["stages"]["inference_ms"], "mb": os.path.getsize(p) / 1e6, "path": p}
    # Timed again after the accuracy runs, interleaved: eval's wall time per image (every session busy)
    # against the floor; medians of `reps` rounds.
    server = {name: [] for name in paths}
    for rep in range(a.reps):
        for name, p in paths.items():
            r = evaluate(a.objdet, p, a.data, os.path.join(a.out, f"{stem}.{name}.timing.json"))
            server[name].append(r["ms_per_image"])
    for name, ms in floors(paths, calib, a.reps).items():
        rows[name]["floor_ms"] = ms
        rows[name]["server_ms"] = statistics.median(server[name])
    model, features = cpu()
    lines = [f"CPU: {model or 'unknown'}; int8-relevant features: {', '.join(features) or 'none'}",
             f"ONNX Runtime {ort.__version__}; {calib.shape[0]} calibration tensors of {a.calib_data or a.data} from "
             f"objdet's pipeline; eval on {a.data}",
             "",
             f"times: ms per image with {os.cpu_count()} single-thread sessions busy (objdet's pool; the bare "
             "session.run floor the same way), medians of interleaved rounds",
             "",
             "| variant | mAP50-95 | mAP50 | server ms/image | floor ms/image | server ÷ floor | speed vs fp32 (floor) | file MB |",
             "|---|---|---|---|---|---|---|---|"]
    base = rows["fp32"]["floor_ms"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['map50_95']:.3f} | {r['map50']:.3f} | {r['server_ms']:.2f} | {r['floor_ms']:.2f} | "
                     f"{r['server_ms'] / r['floor_ms']:.2f} | {base / r['floor_ms']:.2f}x | {r['mb']:.2f} |")
    table = "\n".join(lines)
    print(table)
    with open(os.path.join(a.out, "quantize.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(a.out, "quantize.json"), "w") as f:
        json.dump({"cpu": model, "features": features, "onnxruntime": ort.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
