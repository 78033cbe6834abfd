#!/usr/bin/env python3
"""Translates a SAM template to CloudFormation with samtranslator, as `sam deploy` would, with
placeholders for what `sam build` fills in (ImageUri, the nested stack's TemplateURL).

Usage (with the lint tools' Python, scripts/setup.sh lint): sam-translate.py SRC.yaml DST.json
"""
import json, os, sys

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
import boto3
from samtranslator.translator.transform import transform
from samtranslator.public.exceptions import InvalidDocumentException
from samtranslator.yaml_helper import yaml_parse

src, dst = sys.argv[1], sys.argv[2]
template = yaml_parse(open(src).read())
for name, res in template.get("Resources", {}).items():
    props = res.setdefault("Properties", {})
    # Placeholders for what `sam build` / `sam deploy` fill in.
    if res.get("Type") == "AWS::Serverless::Function" and props.get("PackageType") == "Image":
        props.setdefault("ImageUri", "123456789012.dkr.ecr.us-east-1.amazonaws.com/objdet:v1")
    # `sam package` uploads a local state-machine definition; inline it instead.
    if res.get("Type") == "AWS::Serverless::StateMachine" and isinstance(props.get("DefinitionUri"), str) \
            and not props["DefinitionUri"].startswith("s3://"):
        path = os.path.join(os.path.dirname(os.path.abspath(src)), props.pop("DefinitionUri"))
        props["Definition"] = json.load(open(path))
    if res.get("Type") == "AWS::CloudFormation::Stack" and not str(props.get("TemplateURL", "")).startswith("https://"):
        props["TemplateURL"] = "https://s3.us-east-1.amazonaws.com/placeholder/" + str(props["TemplateURL"])

class Loader:  # the translator only needs managed-policy ARNs by name
    def load(self):
        return {"AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
                "AWSXrayWriteOnlyAccess": "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
                "AWSXRayDaemonWriteAccess": "arn:aws:iam::aws:policy/AWSXRayDaemonWriteAccess"}
try:
    # A plain CloudFormation template (infra/ec2.yaml) is only parsed (its short tags resolved to JSON).
    out = transform(template, {}, Loader()) if "Transform" in template else template
except InvalidDocumentException as e:
    for cause in e.causes:
        print("samtranslator:", cause.message, file=sys.stderr)
    sys.exit(1)
os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
json.dump(out, open(dst, "w"), indent=2)
print(f"translated {len(out['Resources'])} resources")
