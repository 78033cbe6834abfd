#!/usr/bin/env python3
"""Cold start of Lambda `bootstrap` builds under AWS's Runtime Interface Emulator (RIE).

Usage: scripts/bootstrap-cold-start.py [--rounds 15] NAME=path/to/bootstrap [NAME=path ...]

Each round starts a fresh emulator per build, in turn (interleaved, so the machine's drift hits
every build alike), and times the first invocation of events/apigw-http-detect-inline.json: the
emulator starts the function on that invocation, so the time is Init (ONNX Runtime, model,
sessions) plus the first detection, as a cold API Gateway request sees it. Prints the median,
minimum and maximum per build, and each build's file size. Needs `make setup-test` (the RIE).
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, deadline=30.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError("the emulator exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("the emulator did not listen")


def cold_start_ms(binary, event):
    rie = os.path.join(ROOT, ".cache/test/bin/aws-lambda-rie")
    p1, p2 = free_port(), free_port()
    env = dict(
        os.environ,
        MODEL_PATH=os.path.join(ROOT, "models/centernet_mobilenetv3_coco.onnx"),
        ORT_DYLIB_PATH=os.environ.get("ORT_DYLIB_PATH", os.path.join(ROOT, ".cache/ort/libonnxruntime.so")),
        RUST_LOG="warn",
        _HANDLER="http",
    )
    args = [rie, "--runtime-interface-emulator-address", f"127.0.0.1:{p1}",
            "--runtime-api-address", f"127.0.0.1:{p2}", binary]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(p1, proc)
        url = f"http://127.0.0.1:{p1}/2015-03-31/functions/function/invocations"
        req = urllib.request.Request(url, data=event, headers={"Content-Type": "application/json"})
        t = time.monotonic()
        with urllib.request.urlopen(req, timeout=120) as res:
            answer = json.loads(res.read())
        ms = (time.monotonic() - t) * 1e3
        if answer.get("statusCode") != 200:
            raise RuntimeError(f"{binary} answered {str(answer)[:300]}")
        return ms
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("builds", nargs="+", help="NAME=path/to/bootstrap")
    opts = ap.parse_args()
    builds = [b.split("=", 1) for b in opts.builds]
    with open(os.path.join(ROOT, "events/apigw-http-detect-inline.json"), "rb") as f:
        event = f.read()
    times = {name: [] for name, _ in builds}
    for r in range(opts.rounds):
        for name, path in builds:
            times[name].append(cold_start_ms(path, event))
        print(f"round {r + 1}/{opts.rounds}: " + ", ".join(f"{n} {times[n][-1]:.0f} ms" for n, _ in builds),
              file=sys.stderr)
    print("build,size_bytes,rounds,median_ms,min_ms,max_ms")
    for name, path in builds:
        t = times[name]
        print(f"{name},{os.path.getsize(path)},{len(t)},{statistics.median(t):.1f},{min(t):.1f},{max(t):.1f}")


if __name__ == "__main__":
    main()
