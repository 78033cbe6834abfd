//! The Lambda front doors in-process: every `events/*.json` through the event guard and
//! `lambda_http`'s own conversion to the Router, and the S3 trigger, against a real moto S3 server.

mod common;

use std::sync::Arc;

use serde_json::{Value, json};
use tower::ServiceExt as _;

use common::aws::{self, BUCKET, Moto};
use objdet::lambda::{guard_http_event, http_request, lambda_router};
use objdet::s3::S3Store;
use objdet::server::{self, RequestLimits};
use objdet::{DetectService, trigger};

/// The service the bootstrap builds; with S3 pointed at `moto` when given.
fn service(moto: Option<&Moto>, extra: &[(&str, &str)]) -> DetectService {
    let mut pairs: Vec<(&str, &str)> = extra.to_vec();
    if moto.is_some() {
        pairs.push(("UPLOAD_BUCKET", BUCKET));
    }
    let config = Arc::new(common::config_with(&pairs));
    let s3 = moto.map(|m| S3Store::new(m.client(), config.s3.clone()));
    DetectService::new(common::detector(), s3, config)
}

/// An HTTP event as the HTTP function sees it: guarded, converted by lambda_http, answered by the
/// Router with the Lambda limits. Returns (status, JSON body).
async fn invoke(svc: &DetectService, event: &Value) -> (u16, Value) {
    let req = http_request(event.to_string().as_bytes()).expect("lambda_http converts the event");
    let router = lambda_router(server::app(svc.clone(), RequestLimits::lambda(svc.config())));
    let res = router.oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("body not JSON ({e}): {bytes:?}")))
}

fn labels(result: &Value) -> Vec<String> {
    result["objects"].as_array().unwrap().iter().map(|o| o["label"].as_str().unwrap().to_string()).collect()
}

#[test]
fn http_events_convert_and_drop_the_stage() {
    // The stage is taken off by objdet, not by lambda_http's variable: it is not set here.
    assert!(std::env::var_os("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH").is_none());
    for (name, path) in [
        ("apigw-http-detect-inline.json", "/api/detect"),
        ("apigw-http-detect-binary.json", "/api/detect"),
        ("apigw-http-detect-s3.json", "/api/detect"),
        ("apigw-http-uploads.json", "/api/uploads"),
        ("apigw-rest-detect-inline.json", "/api/detect"),
    ] {
        let raw = std::fs::read(common::root().join("events").join(name)).unwrap();
        // Events API Gateway produces pass the guard untouched (same bytes, no copy).
        let guarded = guard_http_event(raw.clone().into());
        assert_eq!(guarded.as_ref(), raw.as_slice(), "{name}");
        let req = http_request(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(req.method(), "POST", "{name}");
        assert_eq!(req.uri().path(), path, "{name}");
        assert!(!req.body().is_empty(), "{name}");
    }
    let s3: aws_lambda_events::s3::S3Event = serde_json::from_value(aws::event("s3-put-upload.json")).unwrap();
    assert_eq!(s3.records[0].s3.object.key.as_deref(), Some("uploads/my+photo.jpg"));
}

/// REST API stages, the console's test stage and custom domains' base paths all reach
/// `/api/detect` without AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH; an HTTP API's named stage too.
#[tokio::test]
async fn rest_stages_and_custom_domains_route_without_the_variable() {
    assert!(std::env::var_os("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH").is_none());
    let svc = service(None, &[]);
    for (what, event) in aws::rest_stage_events() {
        let req = http_request(event.to_string().as_bytes()).unwrap();
        assert_eq!(req.uri().path(), "/api/detect", "{what}");
        let (status, body) = invoke(&svc, &event).await;
        assert_eq!(status, 200, "{what}: {body}");
        assert!(labels(&body["results"][0]).contains(&"dog".into()), "{what}: {body}");
    }
    // A query string survives the rewrite.
    let mut e = aws::rest_stage_events().remove(0).1;
    e["queryStringParameters"] = json!({"name": "x.jpg"});
    e["multiValueQueryStringParameters"] = json!({"name": ["x.jpg"]});
    let req = http_request(e.to_string().as_bytes()).unwrap();
    assert_eq!((req.uri().path(), req.uri().query()), ("/api/detect", Some("name=x.jpg")));
    // HTTP API with a named stage: rawPath starts with it.
    let mut v2 = aws::event("apigw-http-detect-s3.json");
    v2["requestContext"]["stage"] = json!("prod");
    v2["rawPath"] = json!("/prod/api/detect");
    assert_eq!(http_request(v2.to_string().as_bytes()).unwrap().uri().path(), "/api/detect");
    // A path that only begins like the stage is left alone.
    let mut other = aws::rest_stage_events().remove(0).1;
    other["path"] = json!("/Production/api/detect");
    other["resource"] = json!("/Production/api/detect");
    other["requestContext"]["resourcePath"] = json!("/Production/api/detect");
    assert_eq!(http_request(other.to_string().as_bytes()).unwrap().uri().path(), "/Production/api/detect");
}

#[tokio::test]
async fn inline_http_v2_base64_encoded_body() {
    let (status, body) = invoke(&service(None, &[]), &aws::event("apigw-http-detect-inline.json")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["name"], "person.jpg");
    assert!(labels(&body["results"][0]).contains(&"person".into()), "{body}");
}

#[tokio::test]
async fn inline_rest_v1() {
    let (status, body) = invoke(&service(None, &[]), &aws::event("apigw-rest-detect-inline.json")).await;
    assert_eq!(status, 200, "{body}");
    assert!(labels(&body["results"][0]).contains(&"dog".into()), "{body}");
}

#[tokio::test]
async fn binary_image_body() {
    let (status, body) = invoke(&service(None, &[]), &aws::event("apigw-http-detect-binary.json")).await;
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
    let (status, body) = invoke(&service(None, &[]), &event).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("S3 keys") && msg.contains("/api/uploads"), "{msg}");
    // Configurable: a smaller limit refuses the fixture event too.
    let svc = service(None, &[("LAMBDA_MAX_BODY_BYTES", "100000")]);
    let (status, _) = invoke(&svc, &aws::event("apigw-http-detect-inline.json")).await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn events_lambda_http_would_panic_on_are_answered_400() {
    let svc = service(None, &[]);
    // isBase64Encoded with a body that is not base64.
    for name in ["apigw-http-detect-inline.json", "apigw-rest-detect-inline.json"] {
        let mut ev = aws::event(name);
        ev["body"] = json!("not base64 at all!");
        ev["isBase64Encoded"] = json!(true);
        let (status, body) = invoke(&svc, &ev).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")), "{name}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("base64"), "{body}");
    }
    // A Host (or domain name, or forwarded scheme) no URI can hold: dropped, the request served.
    let mut ev = aws::event("apigw-http-detect-binary.json");
    ev["headers"]["host"] = json!("exa{mple}.com");
    ev["headers"]["x-forwarded-proto"] = json!("ht tp{");
    ev["requestContext"]["domainName"] = json!("a b");
    ev["rawPath"] = json!("/api/detect");
    let (status, body) = invoke(&svc, &ev).await;
    assert_eq!(status, 200, "{body}");
    assert!(labels(&body["results"][0]).contains(&"bird".into()), "{body}");
    // A raw query string with bytes a URI cannot hold, a repeated parameter: a JSON 400.
    ev["rawQueryString"] = json!("name=a b{\"}&name=b");
    let (status, body) = invoke(&svc, &ev).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")), "{body}");
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
    let svc = service(Some(&moto), &[]);

    // S3 keys mode.
    let (status, body) = invoke(&svc, &aws::event("apigw-http-detect-s3.json")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["name"], "uploads/demo/dog.jpg");
    assert!(labels(&body["results"][0]).contains(&"dog".into()), "{body}");
    assert!(labels(&body["results"][1]).contains(&"person".into()), "{body}");
    assert!(body["timing"]["s3_fetch_ms"].as_f64().is_some(), "{body}");

    // Presigned uploads.
    let (status, body) = invoke(&svc, &aws::event("apigw-http-uploads.json")).await;
    assert_eq!(status, 200, "{body}");
    let uploads = body["uploads"].as_array().unwrap();
    assert_eq!(uploads.len(), 2);
    assert!(uploads[0]["key"].as_str().unwrap().starts_with("uploads/"));
    assert!(uploads[0]["url"].as_str().unwrap().starts_with(&moto.endpoint), "{body}");

    // The upload trigger.
    let event: aws_lambda_events::s3::S3Event = serde_json::from_value(aws::event("s3-put-upload.json")).unwrap();
    let summary = serde_json::to_value(trigger::handle(&svc, event).await.unwrap()).unwrap();
    assert_eq!(summary["processed"][0]["key"], "uploads/my photo.jpg", "{summary}");
    let doc = aws::get(&client, BUCKET, "results/uploads/my photo.jpg.json").await.expect("result written");
    let doc: Value = serde_json::from_slice(&doc).unwrap();
    assert!(labels(&doc["result"]).contains(&"dog".into()), "{doc}");
}

/// Finding 13: without `s3:ListBucket`, S3 answers 403 for a key that does not exist, so a
/// deleted upload was an `s3_error` and the trigger retried it into the dead-letter queue. A
/// refused read is now that object's `access_denied` result and the record is acknowledged.
/// (moto with IAM enforced answers as AWS does for keys the policy does not grant.)
#[tokio::test]
async fn the_trigger_acknowledges_an_upload_s3_refuses_to_read() {
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": format!("arn:aws:s3:::{BUCKET}/uploads/ok/*")},
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"], "Resource": format!("arn:aws:s3:::{BUCKET}/results/*")},
    ]})
    .to_string();
    let moto = aws::MotoIam::start(&policy, |admin| async move {
        aws::create_bucket(&admin, BUCKET).await;
        aws::put(&admin, BUCKET, "uploads/ok/dog.jpg", common::fixture("dog.jpg")).await;
        aws::put(&admin, BUCKET, "uploads/gone/dog.jpg", common::fixture("dog.jpg")).await;
    })
    .await;
    let config = Arc::new(common::config_with(&[("UPLOAD_BUCKET", BUCKET)]));
    let svc = DetectService::new(common::detector(), Some(S3Store::new(moto.user_client(), config.s3.clone())), config);
    let mut event = aws::event("s3-put-upload.json");
    let record = event["Records"][0].clone();
    event["Records"] = json!([record.clone(), record]);
    event["Records"][0]["s3"]["object"]["key"] = json!("uploads/gone/dog.jpg");
    event["Records"][1]["s3"]["object"]["key"] = json!("uploads/ok/dog.jpg");
    let event: aws_lambda_events::s3::S3Event = serde_json::from_value(event).unwrap();
    let summary = serde_json::to_value(trigger::handle(&svc, event).await.expect("acknowledged, not retried")).unwrap();
    assert_eq!(summary["processed"][0]["error"], "access_denied", "{summary}");
    assert!(summary["processed"][1]["error"].is_null(), "{summary}");
    let user = moto.user_client();
    let doc: Value =
        serde_json::from_slice(&aws::get(&user, BUCKET, "results/uploads/gone/dog.jpg.json").await.unwrap()).unwrap();
    assert_eq!(doc["result"]["error"]["code"], "access_denied", "{doc}");
    let msg = doc["result"]["error"]["message"].as_str().unwrap();
    assert!(!msg.contains("DisplayErrorContext") && !msg.contains("service error") && msg.len() < 200, "{msg}");
}

/// An S3 failure other than a missing or refused object (here: nothing listens at the endpoint)
/// keeps the SDK's error as its cause, for the log, and sends none of it: the request's image
/// says `s3_error` / "S3 GetObject failed"; the trigger fails the invocation (so Lambda retries)
/// with the same code and message.
#[tokio::test]
async fn an_s3_failure_keeps_its_cause_and_sends_none_of_it() {
    use objdet::error::Coded as _;
    let dead = format!("http://127.0.0.1:{}", aws::free_port());
    let config = Arc::new(common::config_with(&[("UPLOAD_BUCKET", BUCKET)]));
    let s3 = S3Store::new(aws::client_for(&dead), config.s3.clone());
    let svc = DetectService::new(common::detector(), Some(s3), config);

    let body = json!({"s3": {"keys": ["uploads/a.jpg"]}}).to_string();
    let mut event = aws::event("apigw-http-detect-s3.json");
    event["body"] = json!(body);
    event["isBase64Encoded"] = json!(false);
    let (status, res) = invoke(&svc, &event).await;
    assert_eq!(status, 200, "{res}");
    let error = &res["results"][0]["error"];
    assert_eq!(error["code"], "s3_error", "{res}");
    assert_eq!(error["message"], "S3 GetObject failed", "{res}");

    let mut event = aws::event("s3-put-upload.json");
    event["Records"][0]["s3"]["object"]["key"] = json!("uploads/a.jpg");
    let event: aws_lambda_events::s3::S3Event = serde_json::from_value(event).unwrap();
    let err = trigger::handle(&svc, event).await.expect_err("an S3 failure fails the invocation");
    assert_eq!(err.code(), "s3_error");
    let cause = std::error::Error::source(&err).expect("the SDK error is kept as the cause");
    let chain = objdet::error::chain(&err);
    assert!(chain.len() > err.to_string().len() && chain.contains(&cause.to_string()), "{chain}");
    let diagnostic = lambda_runtime::Diagnostic::from(err);
    assert_eq!(diagnostic.error_type, "s3_error");
    assert_eq!(diagnostic.error_message, "S3 GetObject failed");
}

/// S3-keys requests read only under `S3_READ_PREFIX` (default `UPLOADS_PREFIX`): IAM is no
/// longer the only guard.
#[tokio::test]
async fn s3_keys_outside_the_uploads_prefix_are_refused() {
    let moto = Moto::start();
    aws::create_bucket(&moto.client(), BUCKET).await;
    aws::put(&moto.client(), BUCKET, "private/secret.jpg", common::fixture("dog.jpg")).await;
    let svc = service(Some(&moto), &[]);
    for key in ["private/secret.jpg", "uploads/../private/secret.jpg", "uploads/./x.jpg", ""] {
        let mut ev = aws::event("apigw-http-detect-s3.json");
        ev["body"] = json!(json!({"s3": {"keys": ["uploads/demo/dog.jpg", key]}}).to_string());
        ev["isBase64Encoded"] = json!(false);
        let (status, body) = invoke(&svc, &ev).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("key_not_allowed")), "{key:?}: {body}");
    }
}
