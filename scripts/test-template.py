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

    for mutate in [open_route, long_timeout, shared_concurrency, no_throttle]:
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
        check(set(by_key) == set(work) | {"GET /healthz"}, f"{auth}: routes are {sorted(by_key)}")
        want = {"IAM": "AWS_IAM", "JWT": "JWT", "NONE": "NONE"}[auth]
        for key in work:
            props = by_key.get(key, ("", {}))[1]
            check(props.get("AuthorizationType") == want, f"{auth}: {key} is {props.get('AuthorizationType')}, not {want}")
            check(("AuthorizerId" in props) == (auth == "JWT"), f"{auth}: {key} authorizer {props.get('AuthorizerId')}")
        check(by_key.get("GET /healthz", ("", {}))[1].get("AuthorizationType") == "NONE", "the health check is open")

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
        perm = next(r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::Permission"
                    and r["Properties"].get("Principal") == "apigateway.amazonaws.com")
        check("SourceArn" in perm, "the API Gateway invoke permission is not scoped to the API")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--must-fail"]:
        must_fail("target/iac/checked.cfn.json")
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else "target/iac/checked.cfn.json")
