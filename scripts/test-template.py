#!/usr/bin/env python3
"""Checks what template.yaml promises, on the CloudFormation samtranslator makes of it.

Usage: scripts/test-template.py target/iac/template.cfn.json   (written by scripts/lint-iac.sh)

For each ApiAuth value the parameters, conditions and Fn::If are resolved as CloudFormation
would, and the deployment is checked:
  - IAM (the default): every route that does work is AWS_IAM; only GET /healthz is open;
  - JWT: work routes are JWT with the authorizer; NONE: open, and every route throttled to
    OpenRateLimit;
  - the API and trigger functions have their own reserved concurrency, memory and timeout; the
    API function's timeout is under the HTTP API's 30 s and the service's own deadline under it;
  - every route has throttling; the Lambda permission is scoped to this API;
  - operations: every alarm and dashboard widget in objdet's namespace names a metric and a
    dimension set the code emits (infra/metrics.json, written from the code's catalog by
    `cargo test`), its `service` is one of the functions; the alarms the runbook
    (docs/operations.md) explains exist, each notifies the alarm topic, and each duration alarm
    sits at 80 % of its function's timeout.
Exit 1 with the failed checks listed. `--must-fail` checks the checks: each of a few broken
copies of target/iac/checked.cfn.json (an open detect route, a 60 s API timeout, one shared
concurrency) must fail them.
"""

import copy
import os
import re

import json
import sys

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


def resolver(template, overrides):
    params = {k: v.get("Default") for k, v in template.get("Parameters", {}).items()}
    params.update(overrides)
    conditions = {}

    def value(x):
        if isinstance(x, dict) and len(x) == 1:
            (k, v), = x.items()
            if k == "Ref":
                return params.get(v, {"Ref": v})
            if k == "Fn::If":
                cond, a, b = v
                return value(a if condition(cond) else b)
            if k == "Fn::Equals":
                return str(value(v[0])) == str(value(v[1]))
            if k == "Fn::Not":
                return not value(v[0])
            if k == "Fn::And":
                return all(value(c) for c in v)
            if k == "Fn::Or":
                return any(value(c) for c in v)
            if k == "Condition":
                return condition(v)
        if isinstance(x, dict):
            return {k: value(v) for k, v in x.items() if value(v) != {"Ref": "AWS::NoValue"}}
        if isinstance(x, list):
            return [value(v) for v in x if value(v) != {"Ref": "AWS::NoValue"}]
        return x

    def condition(name):
        if name not in conditions:
            conditions[name] = bool(value(template["Conditions"][name]))
        return conditions[name]

    def resources():
        out = {}
        for name, res in template["Resources"].items():
            if "Condition" in res and not condition(res["Condition"]):
                continue
            out[name] = value(res)
        return out

    return resources, params


def routes(resources):
    return {r["Properties"]["RouteKey"]: (name, r["Properties"]) for name, r in resources.items()
            if r["Type"] == "AWS::ApiGatewayV2::Route"}


def statements(resources, role_of):
    """The IAM statements of the role `role_of` (a function or state machine's logical id)."""
    role = resources.get(role_of + "Role", {}).get("Properties", {})
    out = []
    for policy in role.get("Policies", []):
        out.extend(policy["PolicyDocument"]["Statement"])
    return out


def as_list(x):
    return x if isinstance(x, list) else [x]


def text(x):
    return json.dumps(x)


def check_bulk(resources, template):
    """The bulk run's least privilege: the state machine invokes only the bulk function, lists only
    the input prefix and writes only run manifests; the bulk function reads only the input prefix
    and writes only results."""
    sm = statements(resources, "BulkStateMachine")
    check(sm, "the bulk state machine has no policy")
    for st in sm:
        actions = as_list(st["Action"])
        res = text(st["Resource"])
        check(st["Effect"] == "Allow", "a Deny in the bulk state machine's policy")
        if any(a.startswith("lambda:") for a in actions):
            check(actions == ["lambda:InvokeFunction"] and "BulkFunction" in res and "DetectApiFunction" not in res,
                  f"the state machine may {actions} on {res}")
        if "s3:ListBucket" in actions:
            check("BulkInputPrefix" in text(st.get("Condition")), "the state machine lists more than the input prefix")
        if any(a in actions for a in ["s3:PutObject", "s3:GetObject"]):
            check(res.count("/runs/*") == 1 and "uploads/" not in res and "results/" not in res,
                  f"the state machine reads or writes {res}")
        if any(a.startswith("states:") for a in actions):
            check("-bulk" in res, f"the state machine may {actions} on {res}")
    fn = statements(resources, "BulkFunction")
    for st in fn:
        actions, res = as_list(st["Action"]), text(st["Resource"])
        if "s3:PutObject" in actions:
            check("/results/*" in res and "BulkInputPrefix" not in res, f"the bulk function writes {res}")
        if actions == ["s3:GetObject"]:
            check("BulkInputPrefix" in res, f"the bulk function reads {res}")
        check(not any(a.endswith("*") for a in actions), f"a wildcard action {actions} for the bulk function")
    check(any("BulkInputPrefix" in text(st["Resource"]) for st in fn), "the bulk function cannot read the input prefix")
    bulk = template["Resources"]["BulkFunction"]["Properties"]
    check(bulk.get("ImageConfig", {}).get("Command") == ["bulk"], "the bulk function runs _HANDLER=bulk")
    check(bulk.get("ReservedConcurrentExecutions") not in [
        template["Resources"][f]["Properties"].get("ReservedConcurrentExecutions")
        for f in ["DetectApiFunction", "UploadTriggerFunction"]], "the bulk function shares a concurrency setting")


PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012",
          "AWS::URLSuffix": "amazonaws.com", "AWS::StackName": "objdet"}


def evaluate(x, params):
    """A resolved value's remaining Fn::Sub, Fn::Join, Fn::Split, Fn::Select and Ref as strings (for
    checking exact resource ARNs)."""
    if isinstance(x, list):
        return [evaluate(v, params) for v in x]
    if not isinstance(x, dict) or len(x) != 1:
        return x
    (k, v), = x.items()
    if k == "Ref":
        return PSEUDO.get(v, params.get(v, "${" + v + "}"))
    if k == "Fn::Join":
        return v[0].join(str(evaluate(p, params)) for p in v[1])
    if k == "Fn::Split":
        return str(evaluate(v[1], params)).split(v[0])
    if k == "Fn::Select":
        return evaluate(v[1], params)[int(v[0])]
    if k == "Fn::Sub":
        text, names = (v, {}) if isinstance(v, str) else (v[0], {n: evaluate(e, params) for n, e in v[1].items()})
        for name, val in list(names.items()) + list(PSEUDO.items()) + list(params.items()):
            text = text.replace("${" + name + "}", str(val))
        return text
    return x


MODEL = "s3://my-models/detectors/yolo11n.onnx"
MODEL_ARN = "arn:aws:s3:::my-models/detectors/yolo11n.onnx"
LABELS_ARN = "arn:aws:s3:::my-models/detectors/names.txt"
KEY = "arn:aws:kms:us-east-1:123456789012:key/0f1e2d3c-aaaa-bbbb-cccc-0123456789ab"


def check_model(template, roles, env_of=None):
    """ModelUri: with it, each role that loads the model may read exactly that object (and the
    labels object), GetObjectVersion only for a version, kms:Decrypt only on a named key, and
    nothing else of its bucket; without it, no role may read a model at all."""
    cases = [
        ({"ModelUri": ""}, [], None, None),
        ({"ModelUri": MODEL}, [MODEL_ARN], "s3:GetObject", None),
        ({"ModelUri": MODEL, "ModelVersionId": "3HL4kqtJlcpXroDTDmJ", "LabelsUri": "s3://my-models/detectors/names.txt",
          "ModelKmsKeyArn": KEY, "ModelSha256": "ab" * 32}, [MODEL_ARN, LABELS_ARN], "s3:GetObjectVersion", KEY),
    ]
    for overrides, arns, action, key in cases:
        resources_of, params = resolver(template, overrides)
        resources = resources_of()
        for role in roles:
            sts = statements(resources, role) if role + "Role" in resources else \
                [st for p in resources[role]["Properties"].get("Policies", []) for st in p["PolicyDocument"]["Statement"]]
            reads = [st for st in sts if "my-models" in text(evaluate(st["Resource"], params))]
            what = f"{role} with {overrides}"
            if not arns:
                check(not reads and not any(st.get("Sid") in ("ReadTheModel", "DecryptTheModel") for st in sts),
                      f"{what}: a model grant without ModelUri")
            else:
                check(len(reads) == 1, f"{what}: {len(reads)} statements touch the model's bucket")
                for st in reads:
                    check(as_list(st["Action"]) == [action], f"{what}: actions {st['Action']}")
                    check(sorted(as_list(evaluate(st["Resource"], params))) == sorted(arns),
                          f"{what}: the grant is {evaluate(st['Resource'], params)}, not exactly {arns}")
            kms = [st for st in sts if any(a.startswith("kms:") for a in as_list(st["Action"]))]
            check([as_list(st["Action"]) for st in kms] == ([["kms:Decrypt"]] if key else []), f"{what}: kms grants {kms}")
            check(all(evaluate(st["Resource"], params) == key for st in kms), f"{what}: kms:Decrypt beyond {key}")
            if env_of:
                env = env_of(resources, role)
                want = None if not arns else (MODEL + ("?versionId=3HL4kqtJlcpXroDTDmJ" if key else ""))
                check(evaluate(env.get("MODEL_URI"), params) == want, f"{what}: MODEL_URI={env.get('MODEL_URI')}")


def lambda_env(resources, role):
    return resources[role]["Properties"].get("Environment", {}).get("Variables", {})


def main(path):
    run(json.load(open(path)))
    check_model(json.load(open(path)), ["DetectApiFunction", "UploadTriggerFunction", "BulkFunction"], lambda_env)
    ec2 = path.replace("checked.cfn.json", "ec2.cfn.json")
    if ec2 != path:
        check_model(json.load(open(ec2)), ["InstanceRole"])
    if failures:
        print("template checks failed:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("template checks: IAM by default on every work route, JWT/NONE as asked, separate limits per function")


def must_fail(path):
    template = json.load(open(path))
    r = template["Resources"]

    def dashboard_metric_renamed(t):
        board = t["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
        board[0] = board[0].replace('"InferenceMs"', '"InferenceMillis"')

    def alarm_on_a_label_never_emitted(t):
        stat = t["Resources"]["ImageErrorRateAlarm"]["Properties"]["Metrics"][1]["MetricStat"]["Metric"]
        stat["Dimensions"].append({"Name": "image", "Value": "x"})

    def duration_alarm_at_the_timeout(t):
        t["Resources"]["DetectApiDurationAlarm"]["Properties"]["Threshold"] = 28000

    def open_route(t):
        t["Resources"]["DetectRoute"]["Properties"]["AuthorizationType"] = "NONE"

    def long_timeout(t):
        t["Resources"]["DetectApiFunction"]["Properties"]["Timeout"] = 60

    def shared_concurrency(t):
        t["Resources"]["UploadTriggerFunction"]["Properties"]["ReservedConcurrentExecutions"] = \
            r["DetectApiFunction"]["Properties"]["ReservedConcurrentExecutions"]

    def no_throttle(t):
        del t["Resources"]["ApiStage"]["Properties"]["RouteSettings"]["POST /api/uploads"]

    def bulk_writes_uploads(t):
        role = t["Resources"]["BulkStateMachineRole"]["Properties"]["Policies"][0]["PolicyDocument"]
        role["Statement"].append({"Effect": "Allow", "Action": "s3:PutObject",
                                  "Resource": "arn:aws:s3:::b/uploads/*"})

    def bulk_invokes_the_api(t):
        role = t["Resources"]["BulkStateMachineRole"]["Properties"]["Policies"][0]["PolicyDocument"]
        role["Statement"].append({"Effect": "Allow", "Action": "lambda:InvokeFunction",
                                  "Resource": {"Fn::GetAtt": ["DetectApiFunction", "Arn"]}})

    def model_bucket_wide(t):
        role = t["Resources"]["DetectApiFunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]
        role["Statement"].append({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::my-models/*"})

    def model_grant_always(t):
        for policy in t["Resources"]["UploadTriggerFunctionRole"]["Properties"]["Policies"]:
            doc = policy["PolicyDocument"]
            doc["Statement"] = [st["Fn::If"][1] if isinstance(st, dict) and "Fn::If" in st and st["Fn::If"][0] == "ModelFromS3"
                                else st for st in doc["Statement"]]

    for mutate in [dashboard_metric_renamed, alarm_on_a_label_never_emitted, duration_alarm_at_the_timeout, open_route, long_timeout, shared_concurrency, no_throttle, bulk_writes_uploads, bulk_invokes_the_api,
                   model_bucket_wide, model_grant_always]:
        broken = copy.deepcopy(template)
        mutate(broken)
        failures.clear()
        run(broken)
        check_model(broken, ["DetectApiFunction", "UploadTriggerFunction", "BulkFunction"], lambda_env)
        if not failures:
            print(f"test-template: FAIL - the checks pass a template with {mutate.__name__}")
            sys.exit(1)
        print(f"{mutate.__name__}: caught ({failures[0]})")


CATALOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "infra", "metrics.json")

# The alarms docs/operations.md explains: (namespace, metric) -> resources that must watch it.
REQUIRED_ALARMS = {
    ("AWS/ApiGateway", "5xx"): 1,
    ("AWS/Lambda", "Errors"): 3,
    ("AWS/Lambda", "Throttles"): 3,
    ("AWS/Lambda", "Duration"): 3,
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible"): 1,
    ("AWS/SQS", "ApproximateAgeOfOldestMessage"): 1,
    ("AWS/States", "ExecutionsFailed"): 1,
    ("objdet", "ImageErrors"): 1,
}


def check_operations(resources, params):
    """Alarms and the dashboard against the catalog of what the code emits."""
    with open(CATALOG) as f:
        catalog = {m["name"]: m for m in json.load(f)["metrics"]}
    namespace = params["MetricsNamespace"]
    functions = {n for n, r in resources.items() if r["Type"] == "AWS::Lambda::Function"}

    def objdet_metric(where, name, dims, service):
        m = catalog.get(name)
        check(m is not None, f"{where}: {name} is not a metric objdet emits")
        if m:
            check(sorted(dims) in [sorted(d) for d in m["dimension_sets"]],
                  f"{where}: {name} is not emitted with dimensions {dims} (only {m['dimension_sets']})")
        check(service in functions, f"{where}: {name}'s service {service!r} is not one of the functions")

    watched = {}
    alarms = {n: r["Properties"] for n, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    topic = [n for n, r in resources.items() if r["Type"] == "AWS::SNS::Topic"]
    for name, a in alarms.items():
        check(a.get("AlarmActions") == [{"Ref": t} for t in topic][:1], f"{name} does not notify the alarm topic")
        stats = [a] if "MetricName" in a else [q["MetricStat"]["Metric"] for q in a.get("Metrics", []) if "MetricStat" in q]
        check(stats, f"{name} watches no metric")
        for m in stats:
            ns = "objdet" if m["Namespace"] == namespace else m["Namespace"]
            watched[(ns, m["MetricName"])] = watched.get((ns, m["MetricName"]), 0) + 1
            dims = {d["Name"]: d["Value"] for d in m.get("Dimensions", [])}
            if ns == "objdet":
                objdet_metric(name, m["MetricName"], list(dims), (dims.get("service") or {}).get("Ref"))
            for v in dims.values():
                ref = v.get("Ref") or (v.get("Fn::GetAtt") or [None])[0] if isinstance(v, dict) else None
                check(ref in resources, f"{name}: dimension value {v} is not a resource of the stack")
            if m["MetricName"] == "Duration":
                fn = resources.get(dims.get("FunctionName", {}).get("Ref"), {}).get("Properties", {})
                limit = 0.8 * float(fn.get("Timeout", 0)) * 1000
                check(abs(float(a.get("Threshold", 0)) - limit) < 1,
                      f"{name}: threshold {a.get('Threshold')} ms is not 80 % of the timeout ({limit} ms)")
    for key, count in REQUIRED_ALARMS.items():
        check(watched.get(key, 0) >= count, f"alarms on {key}: {watched.get(key, 0)}, want {count}")

    boards = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Dashboard"]
    check(len(boards) == 1, f"{len(boards)} dashboards")
    for board in boards:
        body, variables = board["DashboardBody"]["Fn::Sub"]
        # Every ${...} becomes the name it refers to (a resource, a parameter, a variable).
        body = re.sub(r"\$\{([^}]+)\}", lambda g: g.group(1) if g.group(1) != "MetricsNamespace" else "objdet", body)
        widgets = json.loads(body)["widgets"]
        seen = set()
        for w in widgets:
            title = w["properties"].get("title", "?")
            for row in w["properties"]["metrics"]:
                opts = row[-1] if isinstance(row[-1], dict) else {}
                if "expression" in opts:
                    for ns, dims, name in re.findall(r"SEARCH\('\{([^,}]+),([^}]*)\} MetricName=\"(\w+)\"", opts["expression"]):
                        dims = [d.strip() for d in dims.split(",")]
                        check(ns == "objdet", f"{title}: SEARCH in namespace {ns}")
                        m = catalog.get(name)
                        check(m is not None and dims in m["dimension_sets"], f"{title}: SEARCH for {name} by {dims}")
                        seen.add(name)
                    continue
                ns, name = row[0], row[1]
                pairs = row[2:-1] if opts else row[2:]
                dims = dict(zip(pairs[::2], pairs[1::2]))
                for v in dims.values():
                    check(v.split(".")[0] in resources, f"{title}: dimension value {v} is not a resource of the stack")
                if ns == "objdet":
                    objdet_metric(title, name, list(dims), dims.get("service"))
                    seen.add(name)
        for name in ["Images", "DecodeMs", "InferenceMs", "ImageErrors", "RequestErrors", "ColdStart", "InitMs"]:
            check(name in seen, f"the dashboard does not show {name}")
        check(any("expression" in (row[-1] if isinstance(row[-1], dict) else {}) and "1000 *" in row[-1]["expression"]
                  for w in widgets for row in w["properties"]["metrics"]), "the dashboard has no cost per 1,000 images")
        check(set(variables) >= {"GbSecondPrice", "RequestPrice"}, "the cost has no prices")


def run(template):
    work = ["POST /api/detect", "POST /api/uploads"]
    for auth in ["IAM", "JWT", "NONE"]:
        overrides = {"ApiAuth": auth}
        if auth == "JWT":
            overrides.update(JwtIssuer="https://issuer.example", JwtAudience="objdet")
        resources_of, params = resolver(template, overrides)
        resources = resources_of()
        by_key = routes(resources)
        public = {"GET /healthz", "GET /", "GET /ui.js"}
        check(set(by_key) == set(work) | public, f"{auth}: routes are {sorted(by_key)}")
        for key in public:
            check(by_key.get(key, ("", {}))[1].get("AuthorizationType") == "NONE", f"{key} is open (no data, no cost)")
        want = {"IAM": "AWS_IAM", "JWT": "JWT", "NONE": "NONE"}[auth]
        for key in work:
            props = by_key.get(key, ("", {}))[1]
            check(props.get("AuthorizationType") == want, f"{auth}: {key} is {props.get('AuthorizationType')}, not {want}")
            check(("AuthorizerId" in props) == (auth == "JWT"), f"{auth}: {key} authorizer {props.get('AuthorizerId')}")

        stage = next(r["Properties"] for r in resources.values() if r["Type"] == "AWS::ApiGatewayV2::Stage")
        settings = stage.get("RouteSettings", {})
        for key in by_key:
            rs = settings.get(key, {})
            check("ThrottlingRateLimit" in rs and "ThrottlingBurstLimit" in rs, f"{auth}: {key} has no throttling")
            if auth == "NONE":
                open_rate = params["OpenRateLimit"]
                check(float(rs.get("ThrottlingRateLimit", 1e9)) <= float(open_rate),
                      f"NONE: {key} allows {rs.get('ThrottlingRateLimit')}/s, more than OpenRateLimit {open_rate}")

        fns = {n: r["Properties"] for n, r in resources.items() if r["Type"] == "AWS::Lambda::Function"}
        api, trigger = fns.get("DetectApiFunction", {}), fns.get("UploadTriggerFunction", {})
        check(api and trigger, f"{auth}: functions {sorted(fns)}")
        check(api.get("ImageConfig", {}).get("Command") == ["http"], "the API function runs _HANDLER=http")
        check(trigger.get("ImageConfig", {}).get("Command") == ["s3"], "the trigger function runs _HANDLER=s3")
        for name, fn in [("DetectApiFunction", api), ("UploadTriggerFunction", trigger)]:
            check("ReservedConcurrentExecutions" in fn, f"{name} has no reserved concurrency")
        check(template["Resources"]["DetectApiFunction"]["Properties"].get("ReservedConcurrentExecutions")
              != template["Resources"]["UploadTriggerFunction"]["Properties"].get("ReservedConcurrentExecutions"),
              "the API and the trigger share one reserved-concurrency setting")
        check(int(api.get("Timeout", 999)) < 30, f"the API function's timeout {api.get('Timeout')} s is not under 30 s")
        deadline = float(api.get("Environment", {}).get("Variables", {}).get("LAMBDA_REQUEST_TIMEOUT_SECS", 999))
        check(deadline < int(api.get("Timeout", 0)), f"the service's deadline {deadline} s is not under the timeout")
        integ = next(r["Properties"] for r in resources.values() if r["Type"] == "AWS::ApiGatewayV2::Integration")
        check(int(integ.get("TimeoutInMillis", 30000)) <= 30000, "integration timeout over 30 s")
        check_bulk(resources, template)
        perm = next(r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::Permission"
                    and r["Properties"].get("Principal") == "apigateway.amazonaws.com")
        check("SourceArn" in perm, "the API Gateway invoke permission is not scoped to the API")
        check_operations(resources, params)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--must-fail"]:
        must_fail("target/iac/checked.cfn.json")
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else "target/iac/checked.cfn.json")
