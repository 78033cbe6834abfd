//! The metrics as operators read them: EMF lines from `bootstrap` under AWS's Runtime Interface
//! Emulator (an API event, an S3 trigger batch with a bad key, a bulk item, a cold start), and
//! `GET /metrics` of `objdet serve` read by a real Prometheus text-format parser
//! (`prometheus_client`, in the test venv).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::aws::{self, BUCKET, Emulator, Moto};
use common::server::Server;
use objdet::telemetry::emf::total;

/// The EMF documents in a function's log (the lines whose JSON has `_aws`).
fn emf_docs(log: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect()
}

/// The EMF documents once `ready` holds of them (the emulator relays the function's output
/// asynchronously), or what there is after 20 s.
async fn emf_when(log: &Path, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let docs = emf_docs(log);
        if ready(&docs) || Instant::now() > deadline {
            return docs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many values a histogram metric has across the documents.
fn samples(docs: &[Value], name: &str) -> usize {
    docs.iter().filter_map(|d| d[name].as_array()).map(Vec::len).sum()
}

/// The distinct request ids of the documents, in order of appearance.
fn request_ids(docs: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for id in docs.iter().filter_map(|d| d["requestId"].as_str()) {
        if !ids.iter().any(|i| i == id) {
            ids.push(id.to_string());
        }
    }
    ids
}

fn inline_event(images: Vec<String>) -> Value {
    let mut ev = aws::event("apigw-http-detect-inline.json");
    ev["body"] = json!(json!({ "images": images }).to_string());
    ev["isBase64Encoded"] = json!(false);
    ev
}

#[tokio::test]
async fn an_api_event_writes_its_metrics_before_answering_and_the_cold_start_once() {
    let lambda = Emulator::start("http", &[("METRICS_NAMESPACE".into(), "objdet-test".into())]);
    let dog = common::b64(&common::fixture("dog.jpg"));
    let res = lambda.invoke(&inline_event(vec![dog.clone(), "not base64!".into(), dog])).await;
    assert_eq!(res["statusCode"], 200, "{res}");
    let docs = emf_when(lambda.log_path(), |d| total(d, "Images", &[]) >= 3.0).await;
    assert_eq!(request_ids(&docs).len(), 1, "one invocation: {docs:?}");
    for doc in &docs {
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], "objdet-test", "{doc}");
        assert_eq!(doc["model"], "centernet_mobilenetv3_coco.onnx", "{doc}");
        assert!(doc["service"].is_string(), "{doc}");
    }
    assert_eq!(total(&docs, "Requests", &[("source", "api_gateway")]), 1.0);
    assert_eq!(total(&docs, "Images", &[("source", "api_gateway")]), 3.0);
    assert_eq!(total(&docs, "ImageErrors", &[("code", "invalid_base64")]), 1.0);
    assert_eq!(samples(&docs, "InferenceMs"), 2, "the two dogs were detected");
    assert_eq!(total(&docs, "ColdStart", &[]), 1.0);
    assert_eq!(samples(&docs, "InitMs"), 1);

    // A refused request in the same environment: counted by code, no second cold start.
    let res = lambda.invoke(&inline_event(vec![])).await;
    assert_eq!(res["statusCode"], 400, "{res}");
    let docs = emf_when(lambda.log_path(), |d| request_ids(d).len() >= 2).await;
    let ids = request_ids(&docs);
    assert_eq!(ids.len(), 2, "{docs:?}");
    let second: Vec<Value> = docs.iter().filter(|d| d["requestId"] == ids[1].as_str()).cloned().collect();
    assert_eq!(total(&second, "RequestErrors", &[("code", "no_images")]), 1.0, "{second:?}");
    assert_eq!(total(&second, "Requests", &[("source", "api_gateway")]), 1.0, "{second:?}");
    assert_eq!(total(&docs, "ColdStart", &[]), 1.0, "one cold start per environment");
}

/// A fresh moto whose bucket holds the dog photo under each of `keys`.
async fn moto_with_dogs(keys: &[&str]) -> Moto {
    let moto = Moto::start();
    let client = moto.client();
    aws::create_bucket(&client, BUCKET).await;
    for key in keys {
        aws::put(&client, BUCKET, key, common::fixture("dog.jpg")).await;
    }
    moto
}

#[tokio::test]
async fn a_trigger_batch_with_a_bad_key_counts_three_images_and_one_error() {
    let moto = moto_with_dogs(&["uploads/a.jpg", "uploads/c.jpg"]).await;
    let trigger = Emulator::start("s3", &moto.env());
    let mut event = aws::event("s3-put-upload.json");
    let record = event["Records"][0].clone();
    event["Records"] = json!(
        ["uploads/a.jpg", "uploads/never-uploaded.jpg", "uploads/c.jpg"]
            .map(|key| {
                let mut r = record.clone();
                r["s3"]["object"]["key"] = json!(key);
                r
            })
            .to_vec()
    );
    let summary = trigger.invoke(&event).await;
    assert_eq!(summary["processed"].as_array().map(Vec::len), Some(3), "{summary}");
    let docs = emf_when(trigger.log_path(), |d| total(d, "Images", &[]) >= 3.0).await;
    assert_eq!(total(&docs, "Images", &[("source", "trigger")]), 3.0, "{docs:?}");
    assert_eq!(total(&docs, "Requests", &[("source", "trigger")]), 3.0, "one request per object");
    // The missing object is that object's error result, not the invocation's failure.
    assert_eq!(total(&docs, "ImageErrors", &[("code", "not_found")]), 1.0, "{docs:?}");
    assert_eq!(total(&docs, "ImageErrors", &[]), 1.0);
    assert_eq!(samples(&docs, "DecodeMs"), 2);
    assert_eq!(request_ids(&docs).len(), 1);
}

#[tokio::test]
async fn a_bulk_item_is_counted_as_bulk() {
    let moto = moto_with_dogs(&["uploads/one.jpg"]).await;
    let bulk = Emulator::start("bulk", &moto.env());
    let summary = bulk.invoke(&json!({"Key": "uploads/one.jpg"})).await;
    assert_eq!(summary["processed"], 1, "{summary}");
    let docs = emf_when(bulk.log_path(), |d| total(d, "Images", &[]) >= 1.0).await;
    assert_eq!(total(&docs, "Requests", &[("source", "bulk")]), 1.0, "{docs:?}");
    assert_eq!(total(&docs, "Images", &[("source", "bulk")]), 1.0);
    assert!(total(&docs, "Objects", &[]) >= 1.0, "the dog photo has objects: {docs:?}");
    assert_eq!(total(&docs, "ColdStart", &[]), 1.0);
}

/// `GET /metrics` parsed by `prometheus_client`: `{name: [[labels, value], ...]}` per sample name.
fn parse_prometheus(text: &str) -> Value {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.setdefault(s.name, []).append([s.labels, s.value])
print(json.dumps(out))
"#;
    let python = common::root().join(".cache/test/bin/python");
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the test venv's python (make setup-test)");
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A sample's value: the one of `name` whose labels include `labels`. (The parser names a
/// counter's sample `<name>_total`, as OpenMetrics does; the family keeps the name.)
fn sample(parsed: &Value, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parsed[name].as_array()?.iter().find(|s| labels.iter().all(|(k, v)| s[0][*k] == *v)).and_then(|s| s[1].as_f64())
}

const TOKEN: &str = "a-token-of-at-least-16-chars";

fn get(server: &Server, path: &str, token: Option<&str>) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut req = reqwest::Client::new().get(format!("{}{path}", server.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    })
}

fn post_detect(server: &Server, body: Value, token: Option<&str>) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut req = reqwest::Client::new().post(format!("{}/api/detect", server.base)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap().status().as_u16()
    })
}

#[test]
fn serve_exposes_the_same_metrics_to_a_prometheus_parser() {
    let server = Server::start(&[("API_TOKEN", TOKEN)]);
    // Behind the API's token.
    let (status, _) = get(&server, "/metrics", None);
    assert_eq!(status, 401);
    let dog = common::b64(&common::fixture("dog.jpg"));
    assert_eq!(post_detect(&server, json!({"images": [dog.clone(), "%%%", dog]}), Some(TOKEN)), 200);
    assert_eq!(post_detect(&server, json!({"images": []}), Some(TOKEN)), 400);
    assert_eq!(post_detect(&server, json!({"images": ["x"]}), None), 401);
    let (status, text) = get(&server, "/metrics", Some(TOKEN));
    assert_eq!(status, 200, "{text}");
    let parsed = parse_prometheus(&text);
    // The unauthenticated /metrics read and detect, the refused and the answered detect.
    assert_eq!(sample(&parsed, "Requests_total", &[("source", "http")]), Some(4.0), "{text}");
    assert_eq!(sample(&parsed, "RequestErrors_total", &[("code", "unauthorized")]), Some(2.0), "{text}");
    assert_eq!(sample(&parsed, "RequestErrors_total", &[("code", "no_images")]), Some(1.0), "{text}");
    assert_eq!(sample(&parsed, "Images_total", &[("source", "http")]), Some(3.0), "{text}");
    assert_eq!(sample(&parsed, "ImageErrors_total", &[("code", "invalid_base64")]), Some(1.0), "{text}");
    assert_eq!(sample(&parsed, "ColdStart_total", &[]), Some(1.0), "{text}");
    assert_eq!(sample(&parsed, "InitMs_count", &[]), Some(1.0), "{text}");
    assert_eq!(sample(&parsed, "RequestMs_count", &[("source", "http")]), Some(1.0), "{text}");
    for name in ["DecodeMs", "InferenceMs", "PostprocessMs", "Objects"] {
        assert_eq!(sample(&parsed, &format!("{name}_count"), &[]), Some(2.0), "{name}: {text}");
        // The stated buckets, and +Inf.
        let def = objdet::telemetry::metrics::lookup(name).unwrap();
        let les: Vec<f64> = parsed[format!("{name}_bucket")]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s[0]["le"].as_str().unwrap().parse::<f64>().unwrap())
            .collect();
        let mut expected = def.buckets.to_vec();
        expected.push(f64::INFINITY);
        assert_eq!(les, expected, "{name}");
    }
    // Every catalog metric is there under its one name (none is renamed).
    for def in objdet::telemetry::metrics::CATALOG {
        assert!(text.contains(&format!("# TYPE {} ", def.name)), "{} missing: {text}", def.name);
    }
}

#[test]
fn metrics_public_opens_only_the_metrics() {
    let server = Server::start(&[("API_TOKEN", TOKEN), ("METRICS_PUBLIC", "true")]);
    let (status, text) = get(&server, "/metrics", None);
    assert_eq!(status, 200, "{text}");
    assert_eq!(sample(&parse_prometheus(&text), "ColdStart_total", &[]), Some(1.0), "{text}");
    assert_eq!(post_detect(&server, json!({"images": ["x"]}), None), 401, "the API stays closed");
}
