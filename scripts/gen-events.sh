#!/usr/bin/env bash
# Regenerates events/*.json: shapes from `sam local generate-event` (AWS's own templates), bodies
# from the fixture photos. Needs the lint tools (scripts/setup.sh lint). Usage: scripts/gen-events.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/scripts/setup.sh" lint
SAM=$ROOT/.cache/lint/bin/sam
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1} SAM_CLI_TELEMETRY=0
BUCKET=${EVENT_BUCKET:-objdet-uploads}
OUT=$ROOT/events
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# Raw shapes (sam prefixes the path with "/" itself).
"$SAM" local generate-event apigateway http-api-proxy --method POST --path api/detect --body '{}' > "$TMP/http-detect.json"
"$SAM" local generate-event apigateway http-api-proxy --method POST --path api/uploads --body '{}' > "$TMP/http-uploads.json"
"$SAM" local generate-event apigateway aws-proxy --method POST --path api/detect --resource /api/detect --body '{}' > "$TMP/rest-detect.json"
"$SAM" local generate-event s3 put --bucket "$BUCKET" --key 'uploads/my photo.jpg' > "$TMP/s3-put.json"

python3 - "$ROOT" "$TMP" "$OUT" "$BUCKET" <<'PY'
import base64, json, sys
root, tmp, out, bucket = sys.argv[1:]
load = lambda n: json.load(open(f"{tmp}/{n}"))
photo = lambda n: base64.b64encode(open(f"{root}/tests/fixtures/images/{n}", "rb").read()).decode()

def http_v2(ev, path, body, content_type, b64=True, query=None):
    """An HTTP API (payload 2.0) event as API Gateway sends it."""
    ev["rawPath"] = path
    ev["requestContext"]["http"]["path"] = path
    ev["routeKey"] = ev["requestContext"]["routeKey"] = f"POST {path}"
    ev["headers"] = {"content-type": content_type, "host": ev["requestContext"]["domainName"]}
    ev.pop("cookies", None)
    ev.pop("pathParameters", None)
    ev.pop("stageVariables", None)
    ev["requestContext"].pop("authentication", None)
    ev["requestContext"].pop("authorizer", None)
    ev["rawQueryString"] = "&".join(f"{k}={v}" for k, v in (query or {}).items())
    if query:
        ev["queryStringParameters"] = query
    else:
        ev.pop("queryStringParameters", None)
    if isinstance(body, bytes):
        ev["body"], ev["isBase64Encoded"] = base64.b64encode(body).decode(), True
    elif b64:  # API Gateway base64-encodes bodies it does not treat as text; exercise that path too
        ev["body"], ev["isBase64Encoded"] = base64.b64encode(body.encode()).decode(), True
    else:
        ev["body"], ev["isBase64Encoded"] = body, False
    return ev

def write(name, ev):
    with open(f"{out}/{name}", "w") as f:
        json.dump(ev, f, indent=2)
        f.write("\n")

write("apigw-http-detect-inline.json", http_v2(load("http-detect.json"), "/api/detect",
      json.dumps({"images": [photo("person.jpg")], "names": ["person.jpg"]}), "application/json"))
write("apigw-http-detect-binary.json", http_v2(load("http-detect.json"), "/api/detect",
      open(f"{root}/tests/fixtures/images/eagle.jpg", "rb").read(), "image/jpeg", query={"name": "eagle.jpg"}))
write("apigw-http-detect-s3.json", http_v2(load("http-detect.json"), "/api/detect",
      json.dumps({"s3": {"bucket": bucket, "keys": ["uploads/demo/dog.jpg", "uploads/demo/person.jpg"]}}),
      "application/json", b64=False))
write("apigw-http-uploads.json", http_v2(load("http-uploads.json"), "/api/uploads",
      json.dumps({"files": [{"size": 57000, "content_type": "image/jpeg"}, {"size": 61000, "content_type": "image/jpeg"}]}), "application/json", b64=False))

rest = load("rest-detect.json")
rest["headers"] = {"Content-Type": "application/json", "Host": "1234567890.execute-api.us-east-1.amazonaws.com"}
rest["multiValueHeaders"] = {k: [v] for k, v in rest["headers"].items()}
rest["queryStringParameters"] = None
rest["multiValueQueryStringParameters"] = None
rest["pathParameters"] = None
rest["stageVariables"] = None
rest["requestContext"]["resourcePath"] = "/api/detect"
rest["requestContext"]["path"] = "/prod/api/detect"
rest["body"] = json.dumps({"images": [photo("dog.jpg")], "names": ["dog.jpg"]})
rest["isBase64Encoded"] = False
write("apigw-rest-detect-inline.json", rest)

s3 = load("s3-put.json")
# S3 form-encodes keys in notifications: the object "uploads/my photo.jpg" arrives as "uploads/my+photo.jpg".
s3["Records"][0]["s3"]["object"]["key"] = "uploads/my+photo.jpg"
s3["Records"][0]["s3"]["object"]["size"] = 163759
write("s3-put-upload.json", s3)
PY
ls -la "$OUT"
