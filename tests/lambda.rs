//! The Lambda front door in-process: every `events/*.json` parsed by `lambda_http` / `aws_lambda_events`
//! and answered by the handler (the S3 parts against a real moto S3 server).

mod common;

use std::sync::Arc;

use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

use common::aws::{self, BUCKET, Moto};
use objdet::lambda::{EventKind, LambdaHandler, event_kind};
use objdet::s3::S3Store;
use objdet::{DetectService, server};

/// A handler as the bootstrap builds it; with S3 pointed at `moto` when given.
fn handler(moto: Option<&Moto>, extra: &[(&str, &str)]) -> LambdaHandler {
    let mut pairs: Vec<(&str, &str)> = extra.to_vec();
    if moto.is_some() {
        pairs.push(("UPLOAD_BUCKET", BUCKET));
    }
    let config = Arc::new(common::config_with(&pairs));
    let s3 = moto.map(|m| S3Store::new(m.client(), config.s3.clone()));
    let service = DetectService::new(common::detector(), s3, config.clone());
    let router = server::app(service.clone(), config.lambda_max_body_bytes.min(config.max_body_bytes));
    LambdaHandler::new(router, service)
}

async fn invoke(h: &LambdaHandler, event: Value) -> Value {
    h.handle(LambdaEvent::new(event, Context::default())).await.expect("handler")
}

/// The HTTP response inside a Lambda proxy response: (status, JSON body).
fn http_response(res: &Value) -> (u64, Value) {
    let status = res["statusCode"].as_u64().expect("statusCode");
    let raw = res["body"].as_str().unwrap_or("");
    let body = if res["isBase64Encoded"].as_bool() == Some(true) {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(raw).unwrap()
    } else {
        raw.as_bytes().to_vec()
    };
    (status, serde_json::from_slice(&body).unwrap_or_else(|e| panic!("body not JSON ({e}): {raw}")))
}

fn labels(result: &Value) -> Vec<String> {
    result["objects"].as_array().unwrap().iter().map(|o| o["label"].as_str().unwrap().to_string()).collect()
}

#[test]
fn http_events_parse_as_lambda_http_requests() {
    for (name, path) in [
        ("apigw-http-detect-inline.json", "/api/detect"),
        ("apigw-http-detect-binary.json", "/api/detect"),
        ("apigw-http-detect-s3.json", "/api/detect"),
        ("apigw-http-uploads.json", "/api/uploads"),
        ("apigw-rest-detect-inline.json", "/api/detect"),
    ] {
        let text = std::fs::read_to_string(common::root().join("events").join(name)).unwrap();
        let req = lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let req = objdet::lambda::strip_stage(req);
        assert_eq!(req.method(), "POST", "{name}");
        assert_eq!(req.uri().path(), path, "{name}");
        assert!(!req.body().is_empty(), "{name}");
        assert_eq!(event_kind(&aws::event(name)), EventKind::Http, "{name}");
    }
    let s3: aws_lambda_events::s3::S3Event = serde_json::from_value(aws::event("s3-put-upload.json")).unwrap();
    assert_eq!(s3.records[0].s3.object.key.as_deref(), Some("uploads/my+photo.jpg"));
    assert_eq!(event_kind(&aws::event("s3-put-upload.json")), EventKind::S3);
}

#[tokio::test]
async fn inline_http_v2_base64_encoded_body() {
    let res = invoke(&handler(None, &[]), aws::event("apigw-http-detect-inline.json")).await;
    let (status, body) = http_response(&res);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["name"], "person.jpg");
    assert!(labels(&body["results"][0]).contains(&"person".into()), "{body}");
    assert!(res["headers"]["server-timing"].is_string(), "{res}");
}

#[tokio::test]
async fn inline_rest_v1() {
    let res = invoke(&handler(None, &[]), aws::event("apigw-rest-detect-inline.json")).await;
    let (status, body) = http_response(&res);
    assert_eq!(status, 200, "{body}");
    assert!(labels(&body["results"][0]).contains(&"dog".into()), "{body}");
}

#[tokio::test]
async fn binary_image_body() {
    let res = invoke(&handler(None, &[]), aws::event("apigw-http-detect-binary.json")).await;
    let (status, body) = http_response(&res);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["name"], "eagle.jpg");
    assert!(labels(&body["results"][0]).contains(&"bird".into()), "{body}");
}

#[tokio::test]
async fn body_over_the_lambda_limit_is_413_pointing_at_s3() {
    // Default limit: just under Lambda's 6 MB.
    let big = vec![b'A'; 6_000_000];
    let mut event = aws::event("apigw-http-detect-inline.json");
    event["body"] = json!(format!("{{\"images\": [\"{}\"]}}", String::from_utf8(big).unwrap()));
    event["isBase64Encoded"] = json!(false);
    let (status, body) = http_response(&invoke(&handler(None, &[]), event.clone()).await);
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("S3 keys") && msg.contains("/api/uploads"), "{msg}");
    // Configurable: a smaller limit refuses the fixture event too.
    let h = handler(None, &[("LAMBDA_MAX_BODY_BYTES", "100000")]);
    let (status, _) = http_response(&invoke(&h, aws::event("apigw-http-detect-inline.json")).await);
    assert_eq!(status, 413);
}

#[tokio::test]
async fn unknown_event_is_an_error_not_a_crash() {
    let err =
        handler(None, &[]).handle(LambdaEvent::new(json!({"hello": "world"}), Context::default())).await.unwrap_err();
    assert_eq!(err.code(), "invalid_request");
    let diag: lambda_runtime::Diagnostic = err.into();
    assert_eq!(diag.error_type, "invalid_request");
}

#[tokio::test]
async fn s3_events_against_moto() {
    let moto = Moto::start();
    let client = moto.client();
    aws::create_bucket(&client, BUCKET).await;
    for name in ["dog.jpg", "person.jpg"] {
        aws::put(&client, BUCKET, &format!("uploads/demo/{name}"), common::fixture(name)).await;
    }
    aws::put(&client, BUCKET, "uploads/my photo.jpg", common::fixture("dog.jpg")).await;
    let h = handler(Some(&moto), &[]);

    // S3 keys mode.
    let (status, body) = http_response(&invoke(&h, aws::event("apigw-http-detect-s3.json")).await);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["name"], "uploads/demo/dog.jpg");
    assert!(labels(&body["results"][0]).contains(&"dog".into()), "{body}");
    assert!(labels(&body["results"][1]).contains(&"person".into()), "{body}");
    assert!(body["timing"]["s3_fetch_ms"].as_f64().is_some(), "{body}");

    // Presigned uploads.
    let (status, body) = http_response(&invoke(&h, aws::event("apigw-http-uploads.json")).await);
    assert_eq!(status, 200, "{body}");
    let uploads = body["uploads"].as_array().unwrap();
    assert_eq!(uploads.len(), 2);
    assert!(uploads[0]["key"].as_str().unwrap().starts_with("uploads/"));
    assert!(uploads[0]["url"].as_str().unwrap().starts_with(&moto.endpoint), "{body}");

    // The upload trigger.
    let summary = invoke(&h, aws::event("s3-put-upload.json")).await;
    assert_eq!(summary["processed"][0]["key"], "uploads/my photo.jpg", "{summary}");
    let doc = aws::get(&client, BUCKET, "results/uploads/my photo.jpg.json").await.expect("result written");
    let doc: Value = serde_json::from_slice(&doc).unwrap();
    assert!(labels(&doc["result"]).contains(&"dog".into()), "{doc}");
}
