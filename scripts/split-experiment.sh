#!/usr/bin/env bash
# The split-offloading experiment (README, "Split offloading"): each side on its own core —
# `objdet serve` with one session on core 1, the client with its in-process side (one session) on
# core 0 — and an emulated uplink. For 20, 50 and 200 images at 8 and 80 Mbit/s: the makespan of
# local-only, remote-only and split, and the ideal (both throughputs added: L·R / (L + R)).
# Writes docs/split-this-machine.{csv,md,png}; exits 1 when split misses its targets
# (≤ 1.05 × the better single side; ≤ 1.15 × the ideal where both sides worked).
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT="${REPEAT:-5}"
SIZES="${SIZES:-20,50,200}"
LINKS="${LINKS:-8 80}"
OUT="${OUT:-docs/split-this-machine}"
BIN="${BIN:-target/release/objdet}" # the objdet measured (another build, for an A/B)
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/.cache/ort/libonnxruntime.so}" RUST_LOG=warn ORT_SESSIONS=1
[ "$(nproc --all)" -ge 2 ] || { echo "split-experiment: needs two cores (one per side)" >&2; exit 1; }

work=target/split-experiment
rm -rf "$work" && mkdir -p "$work"
[ -d target/dataset ] || "$BIN" dataset --count 200 --out target/dataset
taskset -c 1 "$BIN" serve --port 0 > "$work/serve.out" 2> "$work/serve.err" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "listening on" "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/serve.out")
[ -n "$url" ] || { cat "$work/serve.err" >&2; exit 1; }

csv="$work/rows.csv"
bench() { taskset -c 0 "$BIN" bench --images target/dataset --sizes "$SIZES" --quiet --out "$csv" "$@" 2>> "$work/bench.err" > /dev/null; }
# A warm-up batch each way, not recorded.
taskset -c 0 "$BIN" bench --target "split:$url" --images target/dataset --sizes 10 --quiet --out "$work/warm.csv" > /dev/null 2>&1
for r in $(seq "$REPEAT"); do
  echo "split-experiment: repeat $r of $REPEAT ($(date -u +%H:%M:%S))" >&2
  bench --target local --label "here (core 0)"
  for mbps in $LINKS; do
    bench --target "$url" --uplink-mbps "$mbps" --label "remote at $mbps Mbit/s"
  done
  for mbps in $LINKS; do
    cp "$csv" "$work/profile.csv"
    echo "link $mbps" >> "$work/bench.err"
    bench --target "split:$url" --uplink-mbps "$mbps" --profile "$work/profile.csv" --label "split at $mbps Mbit/s"
  done
done
cp "$csv" "$OUT.csv"
"$BIN" plot "$OUT.csv" --out "$OUT.png" > /dev/null

python3 - "$OUT.csv" "$work/bench.err" "$OUT.md" "$LINKS" <<'EOF'
import csv, re, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
links = [float(x) for x in sys.argv[4].split()]
# "link M" then "split, N images: K here (...), J on remote in R requests (...)" lines, in order.
shares, link = {}, None
for line in open(sys.argv[2]):
    if line.startswith("link "):
        link = float(line.split()[1])
    m = re.match(r"split, (\d+) images: (\d+) here \(done at ([\d.]+) s\), (\d+) (?:on \S+|remote) in (\d+) requests \(done at ([\d.]+) s\)", line)
    if m and link is not None:
        n, nl, tl, nr, tr = int(m[1]), int(m[2]), float(m[3]), int(m[4]), float(m[6])
        # The ideal at the rates each side reached while both ran (contention included).
        both_rate = (nl / tl if nl else 0) + (nr / tr if nr else 0)
        shares.setdefault((link, n), []).append((nl, nr, int(m[5]), n / both_rate))
def med(loc, n):
    v = [float(r["round_trip_s"]) for r in rows if r["location"] == loc and int(r["total_images"]) == n]
    return statistics.median(v) if v else float("nan")
sizes = sorted({int(r["total_images"]) for r in rows})
out = ["| link | images | local-only s | remote-only s | split s | here / remote images | ideal s | split ÷ better single | split ÷ ideal | split ÷ ideal at the rates reached in split |",
       "|---|---|---|---|---|---|---|---|---|---|"]
ok = True
for mbps in links:
    tag = f"{mbps:g} Mbit/s"
    for n in sizes:
        l, r, s = med("here (core 0)", n), med(f"remote at {tag}", n), med(f"split at {tag}", n)
        ideal = l * r / (l + r)
        sh = shares.get((mbps, n), [])
        here = statistics.median(x[0] for x in sh) if sh else float("nan")
        there = statistics.median(x[1] for x in sh) if sh else float("nan")
        both = bool(sh) and min(x[0] for x in sh) > 0 and min(x[1] for x in sh) > 0
        vs_single, vs_ideal = s / min(l, r), s / ideal
        contended = statistics.median(x[3] for x in sh) if sh else float("nan")
        ok &= vs_single <= 1.05 and (vs_ideal <= 1.15 or not both)
        out.append(f"| {tag} | {n} | {l:.3f} | {r:.3f} | {s:.3f} | {here:g} / {there:g} | {ideal:.3f} | {vs_single:.2f} | {vs_ideal:.2f}{'' if both else ' (one side idle)'} | {s / contended:.2f} |")
text = "\n".join(out) + "\n"
open(sys.argv[3], "w").write(text)
print(text)
print("targets met: split <= 1.05 x the better single side, <= 1.15 x the ideal" if ok else "TARGETS MISSED")
sys.exit(0 if ok else 1)
EOF
