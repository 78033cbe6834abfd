#!/usr/bin/env bash
# `make lint-iac` must catch what `sam validate --lint` alone lets through: a copy of template.yaml
# whose function environment references the bucket with !Ref (bucket -> notification -> function ->
# bucket) must fail with cfn-lint's circular-dependency error E3004.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=$ROOT/target/iac/broken
rm -rf "$DIR" && mkdir -p "$DIR/infra"
cp "$ROOT/infra/ec2.yaml" "$DIR/infra/"
mkdir -p "$DIR/statemachine" && cp "$ROOT"/statemachine/*.json "$DIR/statemachine/"
python3 - "$ROOT/template.yaml" "$DIR/template.yaml" <<'PY'
import sys
src = open(sys.argv[1]).read()
needle = 'UPLOAD_BUCKET: !Sub "${BucketNamePrefix}-${AWS::AccountId}-${AWS::Region}"'
assert needle in src, "template.yaml changed: update scripts/test-lint-iac.sh"
open(sys.argv[2], "w").write(src.replace(needle, "UPLOAD_BUCKET: !Ref UploadsBucket"))
PY
if make -s -C "$ROOT" lint-iac TEMPLATE="$DIR/template.yaml" > "$DIR/lint.log" 2>&1; then
  cat "$DIR/lint.log"
  echo "test-lint-iac: FAIL - the circular template passed make lint-iac" >&2
  exit 1
fi
if ! grep -q E3004 "$DIR/lint.log"; then
  cat "$DIR/lint.log"
  echo "test-lint-iac: FAIL - lint-iac failed, but not with the circular-dependency error E3004" >&2
  exit 1
fi
grep -m1 E3004 "$DIR/lint.log"
echo "test-lint-iac: ok - the circular template fails make lint-iac (E3004)"
