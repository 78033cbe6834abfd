//! End to end through AWS's real Lambda Runtime Interface Emulator running `target/release/bootstrap`,
//! with a real moto S3 server behind it. Events come from `events/` (shapes from `sam local generate-event`).

mod common;

use std::sync::OnceLock;

use serde_json::{Value, json};

use common::aws::{self, BUCKET, Emulator, Moto};

struct Stack {
    moto: Moto,
    /// The HTTP function (`_HANDLER=http`).
    lambda: Emulator,
    /// The upload trigger function (`_HANDLER=s3`), from the same binary.
    trigger: Emulator,
}

/// One moto + one emulator per function for this test binary (the first invocation pays the Init phase).
fn stack() -> &'static Stack {
    static S: OnceLock<Stack> = OnceLock::new();
    S.get_or_init(|| {
        let moto = Moto::start();
        let lambda = Emulator::start("http", &moto.env());
        let trigger = Emulator::start("s3", &moto.env());
        Stack { moto, lambda, trigger }
    })
}

async fn ready() -> (&'static Stack, aws_sdk_s3::Client) {
    let s = stack();
    let client = s.moto.client();
    aws::create_bucket(&client, BUCKET).await;
    aws::create_bucket(&client, "someone-elses-bucket").await;
    (s, client)
}

fn http_response(res: &Value) -> (u64, Value) {
    let status = res["statusCode"].as_u64().unwrap_or_else(|| panic!("no statusCode in {res}"));
    let raw = res["body"].as_str().unwrap_or("");
    let bytes = if res["isBase64Encoded"].as_bool() == Some(true) {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(raw).unwrap()
    } else {
        raw.as_bytes().to_vec()
    };
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("body not JSON ({e}): {raw}")))
}

fn labels(result: &Value) -> Vec<String> {
    result["objects"].as_array().unwrap().iter().map(|o| o["label"].as_str().unwrap().to_string()).collect()
}

/// The HTTP API detect event with `body` as its JSON body.
fn detect_event(body: Value) -> Value {
    let mut ev = aws::event("apigw-http-detect-s3.json");
    ev["body"] = json!(body.to_string());
    ev["isBase64Encoded"] = json!(false);
    ev
}

#[tokio::test]
async fn inline_http_api_v2() {
    let (s, _) = ready().await;
    let (status, body) = http_response(&s.lambda.invoke(&aws::event("apigw-http-detect-inline.json")).await);
    assert_eq!(status, 200, "{body}");
    assert!(labels(&body["results"][0]).contains(&"person".into()), "{body}");
}

/// Init logs the CPU and its int8 path once, so a user sees which one AWS gave their function.
#[tokio::test]
async fn init_names_the_cpu_and_its_int8_path() {
    let emulator = Emulator::start("http", &[("RUST_LOG".to_string(), "info".to_string())]);
    let (status, _) = http_response(&emulator.invoke(&aws::event("apigw-http-detect-inline.json")).await);
    assert_eq!(status, 200);
    let log = std::fs::read_to_string(emulator.log_path()).unwrap_or_default();
    let lines: Vec<Value> =
        log.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v["message"] == "cpu").collect();
    assert_eq!(lines.len(), 1, "one cpu line at Init: {log}");
    let expected = objdet::detector::cpu::CpuInfo::of_this_machine();
    assert_eq!(lines[0]["cpu"].as_str(), Some(expected.model.as_str()), "{}", lines[0]);
    assert!(lines[0]["int8"].as_str().is_some_and(|s| s == expected.int8), "{}", lines[0]);
}

/// The bootstrap started without AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH (as a zip deployment,
/// `cargo lambda watch` or an image of the user's own would start it) routes REST API stages, the
/// console's test stage and custom domains' base paths to /api/detect.
#[tokio::test]
async fn rest_stages_route_without_the_variable() {
    let (s, _) = ready().await;
    assert!(!s.lambda.env().iter().any(|(k, _)| k == "AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH"));
    for (what, event) in aws::rest_stage_events() {
        let (status, body) = http_response(&s.lambda.invoke(&event).await);
        assert_eq!(status, 200, "{what}: {body}");
        let found = labels(&body["results"][0]);
        assert!(found.contains(&"dog".into()), "{what}: {body}");
    }
}

#[tokio::test]
async fn inline_rest_api_v1() {
    let (s, _) = ready().await;
    let (status, body) = http_response(&s.lambda.invoke(&aws::event("apigw-rest-detect-inline.json")).await);
    assert_eq!(status, 200, "{body}");
    let found = labels(&body["results"][0]);
    assert!(found.contains(&"dog".into()) && found.contains(&"bicycle".into()), "{body}");
}

#[tokio::test]
async fn binary_body() {
    let (s, _) = ready().await;
    let (status, body) = http_response(&s.lambda.invoke(&aws::event("apigw-http-detect-binary.json")).await);
    assert_eq!(status, 200, "{body}");
    assert!(labels(&body["results"][0]).contains(&"bird".into()), "{body}");
}

#[tokio::test]
async fn s3_keys_with_a_missing_key() {
    let (s, client) = ready().await;
    let keys: Vec<String> =
        ["dog.jpg", "person.jpg", "eagle.jpg"].iter().map(|n| format!("uploads/keys/{n}")).collect();
    for (k, n) in keys.iter().zip(["dog.jpg", "person.jpg", "eagle.jpg"]) {
        aws::put(&client, BUCKET, k, common::fixture(n)).await;
    }
    let mut all = keys.clone();
    all.push("uploads/keys/missing.jpg".into());
    let res = s.lambda.invoke(&detect_event(json!({"s3": {"bucket": BUCKET, "keys": all}}))).await;
    let (status, body) = http_response(&res);
    assert_eq!(status, 200, "{body}");
    let r = body["results"].as_array().unwrap();
    assert_eq!(r.len(), 4);
    for (i, want) in ["dog", "person", "bird"].iter().enumerate() {
        assert_eq!(r[i]["name"], keys[i]);
        assert!(labels(&r[i]).contains(&want.to_string()), "{}", r[i]);
    }
    assert_eq!(r[3]["error"]["code"], "not_found", "{}", r[3]);
    assert!(body["timing"]["s3_fetch_ms"].as_f64().unwrap() > 0.0);
    // Without "bucket": UPLOAD_BUCKET.
    let res = s.lambda.invoke(&detect_event(json!({"s3": {"keys": [keys[0]]}}))).await;
    let (status, body) = http_response(&res);
    assert_eq!(status, 200, "{body}");
    assert!(labels(&body["results"][0]).contains(&"dog".into()));
}

#[tokio::test]
async fn disallowed_bucket_is_403() {
    let (s, client) = ready().await;
    aws::put(&client, "someone-elses-bucket", "uploads/x.jpg", common::fixture("dog.jpg")).await;
    let res = s
        .lambda
        .invoke(&detect_event(json!({"s3": {"bucket": "someone-elses-bucket", "keys": ["uploads/x.jpg"]}})))
        .await;
    let (status, body) = http_response(&res);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "bucket_not_allowed");
}

#[tokio::test]
async fn presigned_upload_with_curl_then_detect_by_key() {
    let (s, _) = ready().await;
    let photos = ["giraffe.jpg", "person.jpg"];
    let path = |photo: &str| common::root().join("tests/fixtures/images").join(photo);
    let files: Vec<_> = photos
        .iter()
        .map(|p| json!({"size": std::fs::metadata(path(p)).unwrap().len(), "content_type": "image/jpeg"}))
        .collect();
    let mut ev = aws::event("apigw-http-uploads.json");
    ev["body"] = json!(json!({ "files": files }).to_string());
    let (status, body) = http_response(&s.lambda.invoke(&ev).await);
    assert_eq!(status, 200, "{body}");
    let uploads = body["uploads"].as_array().unwrap();
    assert_eq!(uploads.len(), 2);
    for (u, photo) in uploads.iter().zip(photos) {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-f", "-X", "PUT", "-H", "Content-Type: image/jpeg", "--data-binary"])
            .arg(format!("@{}", path(photo).display()))
            .arg(u["url"].as_str().unwrap())
            .output()
            .expect("curl");
        assert!(out.status.success(), "curl PUT: {}", String::from_utf8_lossy(&out.stderr));
    }
    let keys: Vec<&str> = uploads.iter().map(|u| u["key"].as_str().unwrap()).collect();
    let (status, body) = http_response(&s.lambda.invoke(&detect_event(json!({"s3": {"keys": keys}}))).await);
    assert_eq!(status, 200, "{body}");
    assert!(labels(&body["results"][0]).contains(&"zebra".into()), "{body}");
    assert!(labels(&body["results"][1]).contains(&"person".into()), "{body}");
}

#[tokio::test]
async fn upload_trigger_writes_results() {
    let (s, client) = ready().await;
    // "uploads/my+photo.jpg" in the event is the object "uploads/my photo.jpg".
    aws::put(&client, BUCKET, "uploads/my photo.jpg", common::fixture("dog.jpg")).await;
    let summary = s.trigger.invoke(&aws::event("s3-put-upload.json")).await;
    assert_eq!(summary["processed"][0]["result_key"], "results/uploads/my photo.jpg.json", "{summary}");
    let doc = aws::get(&client, BUCKET, "results/uploads/my photo.jpg.json").await.expect("result object");
    let doc: Value = serde_json::from_slice(&doc).unwrap();
    assert_eq!(doc["key"], "uploads/my photo.jpg");
    let found = labels(&doc["result"]);
    assert!(found.contains(&"dog".into()) && found.contains(&"bicycle".into()), "{doc}");
    assert!(doc["timing"]["total_ms"].as_f64().is_some());
    // Re-delivery rewrites the same object.
    let again = s.trigger.invoke(&aws::event("s3-put-upload.json")).await;
    assert_eq!(again["processed"][0]["result_key"], summary["processed"][0]["result_key"]);
}

#[tokio::test]
async fn trigger_ignores_its_own_results_and_reports_non_images() {
    let (s, client) = ready().await;
    let mut ev = aws::event("s3-put-upload.json");
    ev["Records"][0]["s3"]["object"]["key"] = json!("results/x.json");
    aws::put(&client, BUCKET, "results/x.json", b"{}".to_vec()).await;
    let summary = s.trigger.invoke(&ev).await;
    assert_eq!(summary["processed"].as_array().unwrap().len(), 0, "{summary}");
    assert_eq!(summary["ignored"][0]["key"], "results/x.json");
    assert!(aws::get(&client, BUCKET, "results/results/x.json.json").await.is_none());

    aws::put(&client, BUCKET, "uploads/notes.txt", b"not an image".to_vec()).await;
    ev["Records"][0]["s3"]["object"]["key"] = json!("uploads/notes.txt");
    let summary = s.trigger.invoke(&ev).await;
    assert!(summary.get("errorType").is_none(), "the invocation must succeed: {summary}");
    let doc = aws::get(&client, BUCKET, "results/uploads/notes.txt.json").await.expect("error result");
    let doc: Value = serde_json::from_slice(&doc).unwrap();
    assert_eq!(doc["result"]["error"]["code"], "not_an_image", "{doc}");
}

/// Finding 1 under the emulator: the 40,000,000×1 PNG used to abort the process and lose the
/// whole batch. Now it is that image's error and the function keeps serving.
#[tokio::test]
async fn an_extreme_png_costs_one_result_not_the_invocation() {
    let (s, _) = ready().await;
    let wide = common::images::png(40_000_000, 1);
    let body = json!({"images": [common::b64(&wide), common::b64(&common::fixture("dog.jpg"))]});
    let mut ev = aws::event("apigw-http-detect-inline.json");
    ev["body"] = json!(body.to_string());
    ev["isBase64Encoded"] = json!(false);
    let (status, body) = http_response(&s.lambda.invoke(&ev).await);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["error"]["code"], "image_too_large", "{body}");
    assert!(labels(&body["results"][1]).contains(&"dog".into()), "{body}");
    let (status, _) = http_response(&s.lambda.invoke(&aws::event("apigw-http-detect-inline.json")).await);
    assert_eq!(status, 200, "the same execution environment answers the next event");
}

/// Finding 9 under the emulator: these events panicked inside lambda_http (errorType
/// `&alloc::boxed::Box<dyn Any+Send>`, a 502 from API Gateway). Now: a 400, or served.
#[tokio::test]
async fn events_that_made_lambda_http_panic_get_http_answers() {
    let (s, _) = ready().await;
    let mut bad_body = aws::event("apigw-http-detect-inline.json");
    bad_body["body"] = json!("%%% not base64 %%%");
    bad_body["isBase64Encoded"] = json!(true);
    let res = s.lambda.invoke(&bad_body).await;
    assert!(res.get("errorType").is_none(), "{res}");
    let (status, body) = http_response(&res);
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")), "{body}");

    let mut bad_host = aws::event("apigw-rest-detect-inline.json");
    bad_host["headers"]["Host"] = json!("exa{mple}.com");
    bad_host["multiValueHeaders"]["Host"] = json!(["exa{mple}.com"]);
    let res = s.lambda.invoke(&bad_host).await;
    assert!(res.get("errorType").is_none(), "{res}");
    let (status, body) = http_response(&res);
    assert_eq!(status, 200, "{body}");
    assert!(labels(&body["results"][0]).contains(&"dog".into()), "{body}");

    let mut query = aws::event("apigw-http-detect-binary.json");
    query["rawQueryString"] = json!("name=a&name=b");
    let (status, body) = http_response(&s.lambda.invoke(&query).await);
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")), "{body}");
}

/// An image whose `ImageConfig.Command` names no entry point fails its Init, saying which exist.
#[tokio::test]
async fn an_unknown_handler_fails_init_naming_the_choices() {
    let bogus = Emulator::start("bootstrap", &[]);
    let res = reqwest::Client::new().post(&bogus.invoke_url).body("{}").send().await.unwrap();
    assert!(!res.status().is_success() || res.text().await.unwrap().is_empty(), "the invocation must fail");
    let log = std::fs::read_to_string(bogus.log_path()).unwrap_or_default();
    assert!(log.contains("_HANDLER") && log.contains("http, s3"), "{log}");
    assert!(log.contains("Init failed"), "{log}");
}

/// The Lambda bootstrap under the emulator runs a model given by MODEL_PATH alone: the
/// custom-trained fixture answers an API event with its own classes.
#[tokio::test]
async fn the_custom_model_answers_under_the_emulator() {
    let model = common::shapes_model().display().to_string();
    let emulator = Emulator::start("http", &[("MODEL_PATH".to_string(), model)]);
    let truth = common::shapes_truth();
    let images: Vec<String> = truth
        .iter()
        .take(6)
        .map(|(n, _)| common::b64(&std::fs::read(common::root().join("tests/fixtures/shapes").join(n)).unwrap()))
        .collect();
    let (status, body) = http_response(&emulator.invoke(&detect_event(json!({ "images": images }))).await);
    assert_eq!(status, 200, "{body}");
    let (mut found, mut total) = (0, 0);
    for (result, (_, objects)) in body["results"].as_array().unwrap().iter().zip(&truth) {
        for label in labels(result) {
            assert!(["circle", "square", "triangle", "star"].contains(&label.as_str()), "{result}");
        }
        found += common::found_in(&result["objects"], objects);
        total += objects.len();
    }
    assert!(total > 0 && found * 10 >= total * 9, "found {found} of {total}: {body}");
}
