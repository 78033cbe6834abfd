//! The Lambda image as the Dockerfile lays it out, run by AWS's Runtime Interface Emulator inside
//! bubblewrap with a read-only filesystem, a tmpfs `/tmp` and no `HOME` (as Lambda runs it):
//! it must answer an API event and an S3 event. (No Docker engine here; this is the closest
//! stand-in for "the image starts".)

mod common;

use serde_json::{Value, json};

use common::aws::{self, BUCKET, Emulator, Moto};

#[test]
fn the_sandbox_is_read_only_without_home() {
    let layout = aws::image_layout(1);
    let out = std::process::Command::new("bwrap")
        .args(aws::sandbox_args(&layout))
        .args([
            "sh",
            "-c",
            "test -z \"$HOME\" && ! touch /var/runtime/x 2>/dev/null && ! touch /opt/x 2>/dev/null \
                && ! touch /x 2>/dev/null && touch /tmp/x && echo sandboxed",
        ])
        .output()
        .expect("bwrap (Debian bubblewrap; make setup-test installs it)");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "sandboxed", "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn the_image_layout_answers_an_api_event_and_an_s3_event() {
    let moto = Moto::start();
    let client = moto.client();
    aws::create_bucket(&client, BUCKET).await;
    aws::put(&client, BUCKET, "uploads/my photo.jpg", common::fixture("dog.jpg")).await;

    let api = Emulator::start_in_image("http", &moto.env());
    let res = api.invoke(&aws::event("apigw-http-detect-inline.json")).await;
    assert_eq!(res["statusCode"], 200, "{res}\nlog: {}", log(&api));
    let body: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    assert!(body["results"][0]["objects"].as_array().is_some_and(|o| !o.is_empty()), "{body}");

    let trigger = Emulator::start_in_image("s3", &moto.env());
    let summary = trigger.invoke(&aws::event("s3-put-upload.json")).await;
    assert_eq!(summary["processed"][0]["key"], json!("uploads/my photo.jpg"), "{summary}\nlog: {}", log(&trigger));
    let doc = aws::get(&client, BUCKET, "results/uploads/my photo.jpg.json").await.expect("the result is written");
    let doc: Value = serde_json::from_slice(&doc).unwrap();
    assert!(doc["result"]["objects"].as_array().unwrap().iter().any(|o| o["label"] == "dog"), "{doc}");
}

/// `bootstrap --self-test`, the Dockerfile's build step, in the image's layout and environment.
#[test]
fn the_self_test_passes_in_the_image_layout() {
    let layout = aws::image_layout(2);
    let mut cmd = std::process::Command::new("bwrap");
    cmd.args(aws::sandbox_args(&layout));
    for (k, v) in aws::dockerfile_env("lambda") {
        cmd.args(["--setenv", &k, &v]);
    }
    let out = cmd.args(["/var/runtime/bootstrap", "--self-test"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["labels"].as_array().unwrap().iter().any(|l| l == "person"), "{report}");
    // Without the library it fails, as the image build then would.
    let mut cmd = std::process::Command::new("bwrap");
    cmd.args(aws::sandbox_args(&layout)).args(["--setenv", "ORT_DYLIB_PATH", "/opt/missing/libonnxruntime.so"]);
    let out = cmd.args(["/var/runtime/bootstrap", "--self-test"]).output().unwrap();
    assert!(!out.status.success(), "a self-test without ONNX Runtime must fail");
}

fn log(e: &Emulator) -> String {
    std::fs::read_to_string(e.log_path())
        .unwrap_or_default()
        .chars()
        .rev()
        .take(3000)
        .collect::<String>()
        .chars()
        .rev()
        .collect()
}
