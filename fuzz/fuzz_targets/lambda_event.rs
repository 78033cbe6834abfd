//! API Gateway / ALB events through the event guard and lambda_http's own conversion: never a
//! panic (lambda_http `expect`s inside it). Inputs that start with `{` are taken as whole
//! events; others fill the risky fields of a real event shape.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

#[derive(Arbitrary, Debug)]
struct Fields {
    shape: u8,
    body: String,
    base64: bool,
    host: String,
    proto: String,
    domain: String,
    path: String,
    query: String,
    header: (String, String),
    stage: String,
}

fn event(f: &Fields) -> Value {
    match f.shape % 3 {
        0 => json!({
            "version": "2.0", "routeKey": "$default", "rawPath": f.path, "rawQueryString": f.query,
            "headers": {"host": f.host, "x-forwarded-proto": f.proto, f.header.0.clone(): f.header.1},
            "requestContext": {"http": {"method": "POST", "path": f.path, "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1", "userAgent": "fuzz"}, "domainName": f.domain, "stage": f.stage,
                "requestId": "r", "accountId": "1", "apiId": "a", "time": "t", "timeEpoch": 0},
            "body": f.body, "isBase64Encoded": f.base64,
        }),
        1 => json!({
            "resource": "/{proxy+}", "path": f.path, "httpMethod": "POST",
            "headers": {"Host": f.host, "X-Forwarded-Proto": f.proto, f.header.0.clone(): f.header.1},
            "multiValueHeaders": {"Host": [f.host], f.header.0.clone(): [f.header.1]},
            "queryStringParameters": {"name": f.query}, "multiValueQueryStringParameters": {"name": [f.query]},
            "requestContext": {"stage": f.stage, "domainName": f.domain, "httpMethod": "POST", "path": f.path,
                "requestId": "r", "accountId": "1", "resourceId": "x", "apiId": "a", "identity": {}},
            "body": f.body, "isBase64Encoded": f.base64,
        }),
        _ => json!({
            "requestContext": {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:x"}},
            "httpMethod": "POST", "path": f.path, "queryStringParameters": {"name": f.query},
            "headers": {"host": f.host, "x-forwarded-proto": f.proto, f.header.0.clone(): f.header.1},
            "body": f.body, "isBase64Encoded": f.base64,
        }),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.first() == Some(&b'{') {
        let _ = objdet::lambda::http_request(data);
        return;
    }
    let Ok(fields) = Fields::arbitrary(&mut arbitrary::Unstructured::new(data)) else { return };
    let raw = event(&fields).to_string();
    // What API Gateway could never send is fine to refuse; it must not panic.
    let _ = objdet::lambda::http_request(raw.as_bytes());
});
