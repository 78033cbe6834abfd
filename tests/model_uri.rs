//! Deploying your own model as an S3 object (`MODEL_URI`): the Lambda bootstrap under AWS's
//! Runtime Interface Emulator downloads it from a real S3 server (moto) during Init and answers
//! with the model's own classes; every way the object can be wrong fails Init saying why.

mod common;

use serde_json::{Value, json};
use sha2::Digest as _;

use common::aws::{self, BUCKET, Emulator, Moto};

const MODEL_KEY: &str = "models/shapes-yolo11n.onnx";

async fn moto_with_the_model() -> (Moto, aws_sdk_s3::Client) {
    let moto = Moto::start();
    let client = moto.client();
    aws::create_bucket(&client, BUCKET).await;
    aws::put(&client, BUCKET, MODEL_KEY, std::fs::read(common::shapes_model()).unwrap()).await;
    aws::put(
        &client,
        BUCKET,
        "models/classifier.onnx",
        std::fs::read(common::root().join("tests/fixtures/models/classifier.onnx")).unwrap(),
    )
    .await;
    (moto, client)
}

fn env(moto: &Moto, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = moto.env();
    // MODEL_URI replaces MODEL_PATH: a path that does not exist proves it is not used.
    env.push(("MODEL_PATH".into(), "/nonexistent/model.onnx".into()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

fn shape_image(i: usize) -> (Vec<u8>, Vec<(String, [f32; 4])>) {
    let (name, truth) = common::shapes_truth().swap_remove(i);
    (std::fs::read(common::root().join("tests/fixtures/shapes").join(name)).unwrap(), truth)
}

#[tokio::test]
async fn a_model_in_s3_answers_an_api_event_and_an_upload_trigger_with_its_own_classes() {
    let (moto, client) = moto_with_the_model().await;
    let sha = format!("{:x}", sha2::Sha256::digest(std::fs::read(common::shapes_model()).unwrap()));
    let uri = format!("s3://{BUCKET}/{MODEL_KEY}");
    let env = env(&moto, &[("MODEL_URI", &uri), ("MODEL_SHA256", &sha), ("RUST_LOG", "info")]);

    let api = Emulator::start("http", &env);
    let (photo, truth) = shape_image(0);
    let mut ev = aws::event("apigw-http-detect-s3.json");
    ev["body"] = json!(json!({ "images": [common::b64(&photo)] }).to_string());
    ev["isBase64Encoded"] = json!(false);
    let res = api.invoke(&ev).await;
    assert_eq!(res["statusCode"], 200, "{res}\n{}", log(&api));
    let body: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    let objects = &body["results"][0]["objects"];
    assert_eq!(common::found_in(objects, &truth), truth.len(), "{body}");

    let trigger = Emulator::start("s3", &env);
    let (photo, truth) = shape_image(1);
    aws::put(&client, BUCKET, "uploads/my photo.jpg", photo).await;
    let summary = trigger.invoke(&aws::event("s3-put-upload.json")).await;
    assert_eq!(
        summary["processed"][0]["result_key"],
        "results/uploads/my photo.jpg.json",
        "{summary}\n{}",
        log(&trigger)
    );
    let doc: Value =
        serde_json::from_slice(&aws::get(&client, BUCKET, "results/uploads/my photo.jpg.json").await.unwrap()).unwrap();
    assert_eq!(common::found_in(&doc["result"]["objects"], &truth), truth.len(), "{doc}");
    let log = log(&api);
    assert!(log.contains("model downloaded") && log.contains(&sha), "{log}");
}

#[tokio::test]
async fn a_wrong_model_object_fails_init_saying_why() {
    let (moto, _) = moto_with_the_model().await;
    let good = format!("s3://{BUCKET}/{MODEL_KEY}");
    let missing = format!("s3://{BUCKET}/models/missing.onnx");
    let classifier = format!("s3://{BUCKET}/models/classifier.onnx");
    let zeros = "0".repeat(64);
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[("MODEL_URI", &missing)], "no such S3 object"),
        (&[("MODEL_URI", &good), ("MODEL_SHA256", &zeros)], "does not match MODEL_SHA256"),
        (&[("MODEL_URI", &good), ("MODEL_MAX_BYTES", "100000")], "larger than MODEL_MAX_BYTES (100000 bytes)"),
        (&[("MODEL_URI", &classifier)], "serves detect, segment, pose and obb models; the model has inputs"),
    ];
    for (extra, cause) in cases {
        let e = Emulator::start("http", &env(&moto, extra));
        let res = reqwest::Client::new().post(&e.invoke_url).body("{}").send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        assert!(!status.is_success() || !text.contains("statusCode"), "{extra:?}: the invocation must fail: {text}");
        let log = log(&e);
        assert!(log.contains("Init failed") && log.contains(cause), "{extra:?}: {log}");
        let uri = extra[0].1;
        assert!(log.contains(uri), "{extra:?}: the error names {uri}: {log}");
    }
}

fn log(e: &Emulator) -> String {
    std::fs::read_to_string(e.log_path()).unwrap_or_default()
}
