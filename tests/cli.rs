//! The `objdet` binary: local detection, start-up errors, and `serve` on a real port.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn objdet() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_objdet"));
    common::hermetic(&mut c);
    c.current_dir(common::root()).env("RUST_LOG", "warn");
    c
}

#[test]
fn detect_prints_the_server_json() {
    let out = objdet()
        .args(["detect", "tests/fixtures/images/dog.jpg", "tests/fixtures/images/coffee.png"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: objdet::api::DetectResponse = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.results.len(), 2);
    assert_eq!(v.results[0].name, "tests/fixtures/images/dog.jpg");
    assert!(v.results[0].objects.iter().any(|o| o.label == "dog"));
    assert!(v.results[1].objects.iter().any(|o| o.label == "cup"));
    assert!(v.timing.inference_ms_total > 0.0);
}

#[test]
fn missing_onnx_runtime_is_a_clear_error_not_a_panic() {
    let out = objdet()
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .args(["detect", "tests/fixtures/images/dog.jpg"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("ORT_DYLIB_PATH"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn wrong_library_is_a_clear_error() {
    // A file that exists but is not ONNX Runtime.
    let out = objdet()
        .env("ORT_DYLIB_PATH", common::root().join("models/centernet_mobilenetv3_coco.labels.txt"))
        .args(["detect", "tests/fixtures/images/dog.jpg"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot load the library (ORT_DYLIB_PATH)") && stderr.contains("dlopen"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn serve_answers_on_a_free_port_and_stops_on_sigterm() {
    let mut child = objdet().args(["serve", "--port", "0"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().strip_prefix("listening on ").expect("listening line").to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let body: serde_json::Value = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{base}/api/detect"))
            .header("content-type", "image/jpeg")
            .body(common::fixture("person.jpg"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert!(body["results"][0]["objects"].as_array().unwrap().iter().any(|o| o["label"] == "person"));
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "graceful shutdown, got {exit:?}");
}

#[test]
fn self_test_detects_the_bundled_photo() {
    let out = objdet().arg("self-test").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["labels"].as_array().unwrap().iter().any(|l| l == "person"), "{report}");
}

/// SigV4 is chosen for an API Gateway address; without credentials the CLI says how to give them
/// (and sends nothing).
#[test]
fn sigv4_without_credentials_is_a_clear_error() {
    let empty = std::env::temp_dir().join("objdet-no-aws-config");
    let out = objdet()
        .args([
            "detect",
            "tests/fixtures/images/dog.jpg",
            "--endpoint",
            "https://abc123.execute-api.eu-west-1.amazonaws.com",
        ])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", &empty)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("SigV4 needs AWS credentials"), "{stderr}");
}

/// `objdet detect` runs a model given by MODEL_PATH alone (no labels file, no other setting): the
/// custom-trained fixture finds its own classes, and `detect --help` says which model it would run.
#[test]
fn detect_runs_any_onnx_detector_from_model_path_alone() {
    let model = common::shapes_model();
    let truth = common::shapes_truth();
    let files: Vec<String> = truth.iter().take(8).map(|(n, _)| format!("tests/fixtures/shapes/{n}")).collect();
    let out = objdet().env("MODEL_PATH", &model).env_remove("LABELS_PATH").arg("detect").args(&files).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (mut found, mut total) = (0, 0);
    for (result, (_, objects)) in v["results"].as_array().unwrap().iter().zip(&truth) {
        for o in result["objects"].as_array().unwrap() {
            assert!(["circle", "square", "triangle", "star"].contains(&o["label"].as_str().unwrap()), "{o}");
        }
        found += common::found_in(&result["objects"], objects);
        total += objects.len();
    }
    assert!(found * 10 >= total * 9, "found {found} of {total}");

    let help = objdet().env("MODEL_PATH", &model).args(["detect", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("shapes-yolo11n.onnx: anchors, 320x320 letterbox, 4 classes (model metadata)"), "{text}");
    // A model that cannot run: the help says why instead of failing.
    let help = objdet().env("MODEL_PATH", "README.md").args(["detect", "--help"]).output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("not an ONNX model"));
}

/// `objdet serve` with MODEL_PATH alone: `/healthz` names the model and its classes, and a batch of
/// photos it never saw gets its own classes back.
#[test]
fn serve_runs_the_custom_model_and_says_so() {
    let model = common::shapes_model().display().to_string();
    let server = common::server::Server::start(&[("MODEL_PATH", &model)]);
    let truth = common::shapes_truth();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let (health, body): (serde_json::Value, serde_json::Value) = rt.block_on(async {
        let health = client.get(format!("{}/healthz", server.base)).send().await.unwrap().json().await.unwrap();
        let images: Vec<String> = truth
            .iter()
            .take(10)
            .map(|(n, _)| common::b64(&std::fs::read(common::root().join("tests/fixtures/shapes").join(n)).unwrap()))
            .collect();
        let body = client
            .post(format!("{}/api/detect", server.base))
            .json(&serde_json::json!({ "images": images }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (health, body)
    });
    let m = &health["model"];
    assert_eq!((m["file"].as_str(), m["format"].as_str()), (Some("shapes-yolo11n.onnx"), Some("anchors")), "{health}");
    assert_eq!(m["names"], serde_json::json!(["circle", "square", "triangle", "star"]));
    assert_eq!((m["input"]["width"].as_u64(), m["score_threshold"].as_f64()), (Some(320), Some(0.25)));
    let (mut found, mut total) = (0, 0);
    for (result, (_, objects)) in body["results"].as_array().unwrap().iter().zip(&truth) {
        found += common::found_in(&result["objects"], objects);
        total += objects.len();
    }
    assert!(total > 0 && found * 10 >= total * 9, "found {found} of {total}: {body}");
}

/// A configuration mistake or a verdict the data cannot support is a message and exit 1, never a
/// backtrace, even with RUST_BACKTRACE=1 (common in Rust shells and CI).
#[test]
fn ordinary_errors_are_messages_not_backtraces() {
    let out =
        objdet().env("RUST_BACKTRACE", "1").env("API_TOKEN", "short").args(["serve", "--port", "0"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("API_TOKEN must be at least 16 characters"), "{stderr}");
    assert!(!stderr.to_lowercase().contains("backtrace") && stderr.lines().count() == 1, "{stderr}");

    let dir = common::root().join("target/test-tmp").join(format!("thin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("thin.csv");
    std::fs::write(
        &csv,
        "Date,Total Images,Payload Size,Transfer Speed,Total Execution time on server (s),Avg Inference Time (s),Location\n\
         09-07-2023 00:00:00,1,0.22MB,1.00MB/s,12.0,0.15,AWS\n09-07-2023 00:01:00,2,0.44MB,1.00MB/s,12.3,0.15,AWS\n",
    )
    .unwrap();
    let out = objdet().env("RUST_BACKTRACE", "1").args(["advise", "--from"]).arg(&csv).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "the data cannot decide: {stderr}");
    assert!(stderr.contains("can't support an answer"), "{stderr}");
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
