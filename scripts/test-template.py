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
  - every route has throttling; the Lambda permission is scoped to this API.
Exit 1 with the failed checks listed. `--must-fail` checks the checks: each of a few broken
copies of target/iac/checked.cfn.json (an open detect route, a 60 s API timeout, one shared
concurrency) must fail them.
"""

import copy

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
            if k == "Condition":
                return condition(v)
        if isinstance(x, dict):
            return {k: value(v) for k, v in x.items() if value(v) != {"Ref": "AWS::NoValue"}}
        if isinstance(x, list):
            return [value(v) for v in x]
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


def main(path):
    run(json.load(open(path)))
    if failures:
        print("template checks failed:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("template checks: IAM by default on every work route, JWT/NONE as asked, separate limits per function")


def must_fail(path):
    template = json.load(open(path))
    r = template["Resources"]

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

    for mutate in [open_route, long_timeout, shared_concurrency, no_throttle, bulk_writes_uploads, bulk_invokes_the_api]:
        broken = copy.deepcopy(template)
        mutate(broken)
        failures.clear()
        run(broken)
        if not failures:
            print(f"test-template: FAIL - the checks pass a template with {mutate.__name__}")
            sys.exit(1)
        print(f"{mutate.__name__}: caught ({failures[0]})")


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


if __name__ == "__main__":
    if sys.argv[1:2] == ["--must-fail"]:
        must_fail("target/iac/checked.cfn.json")
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else "target/iac/checked.cfn.json")
