#!/usr/bin/env bash
# IaC and container checks (make lint-iac). Usage: scripts/lint-iac.sh [TEMPLATE]  (default template.yaml)
#  1. sam validate --lint
#  2. translate the SAM template to CloudFormation with samtranslator (placeholder ImageUri and nested
#     TemplateURL) and run cfn-lint on the result - plain cfn-lint on the SAM file misses circular
#     dependencies and typos inside events; infra/*.yaml are linted as they are
#  3. checkov --skip-download on the templates and the Dockerfile
#  4. hadolint on the Dockerfile
# The glibc check of the release binaries is scripts/check-glibc.sh (make check-glibc).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TEMPLATE=${1:-$ROOT/template.yaml}
"$ROOT/scripts/setup.sh" lint
BIN=$ROOT/.cache/lint/bin
OUT=$ROOT/target/iac
mkdir -p "$OUT"
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1} SAM_CLI_TELEMETRY=0
step() { printf '\n== %s\n' "$*"; }

step "sam validate --lint $TEMPLATE"
"$BIN/sam" validate --lint --template-file "$TEMPLATE"

step "samtranslator -> $OUT/template.cfn.json, then cfn-lint"
"$BIN/python" "$ROOT/scripts/sam-translate.py" "$TEMPLATE" "$OUT/template.cfn.json"
"$BIN/cfn-lint" "$OUT/template.cfn.json"
"$BIN/cfn-lint" "$ROOT"/infra/*.yaml
echo "cfn-lint: clean"

step "checkov"
"$BIN/checkov" --skip-download --quiet --compact -f "$TEMPLATE" -f "$ROOT"/infra/*.yaml -f "$ROOT/Dockerfile"

step "hadolint Dockerfile"
"$BIN/hadolint" "$ROOT/Dockerfile"
echo "hadolint: clean"
