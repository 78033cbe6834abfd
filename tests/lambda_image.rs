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

    // A REST API event with its stage in the path (/prod/api/detect) routes to /api/detect with the
    // image's own environment: nothing from template.yaml or cargo is set in the sandbox.
    let res = api.invoke(&aws::event("apigw-rest-detect-inline.json")).await;
    assert_eq!(res["statusCode"], 200, "{res}\nlog: {}", log(&api));

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

/// `docker build --build-arg MODEL=models/<custom>.onnx`, emulated (no Docker engine here): the
/// model stage's layout and the stage's ENV with the build argument. The self-test then expects no
/// person of a model with other classes, and fails when a class given by SELFTEST_EXPECT is missing.
#[test]
fn a_baked_custom_model_passes_the_self_test_on_its_own_terms() {
    let layout = aws::image_layout_with(3, &common::shapes_model());
    let run = |expect: Option<&str>| {
        let mut cmd = std::process::Command::new("bwrap");
        cmd.args(aws::sandbox_args(&layout));
        for (k, v) in aws::dockerfile_env_with("lambda", &[("MODEL", "models/shapes-yolo11n.onnx")]) {
            cmd.args(["--setenv", &k, &v]);
        }
        if let Some(e) = expect {
            cmd.args(["--setenv", "SELFTEST_EXPECT", e]);
        }
        cmd.args(["/var/runtime/bootstrap", "--self-test"]).output().unwrap()
    };
    let out = run(None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["model"].as_str().unwrap().starts_with("shapes-yolo11n.onnx: anchors"), "{report}");
    let out = run(Some("person"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expected a person"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run(Some("none")).status.success());
}

/// Every file the Dockerfile copies from the build context is in the context: `.dockerignore`
/// excludes everything but an allowlist, and a COPY of an excluded file fails the build.
#[test]
fn every_copied_file_is_in_the_build_context() {
    let ignore = std::fs::read_to_string(common::root().join(".dockerignore")).unwrap();
    let allowed: Vec<&str> = ignore.lines().filter_map(|l| l.trim().strip_prefix('!')).collect();
    let matches = |pattern: &str, path: &str| {
        let pattern = pattern.trim_end_matches('/');
        let (pp, ps): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
        ps.len() >= pp.len()
            && pp.iter().zip(&ps).all(|(p, s)| match p.split_once('*') {
                None => p == s,
                Some((pre, post)) => s.len() >= pre.len() + post.len() && s.starts_with(pre) && s.ends_with(post),
            })
    };
    let dockerfile = std::fs::read_to_string(common::root().join("Dockerfile")).unwrap();
    let mut sources = vec![];
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from=")) {
        let parts: Vec<&str> = line.split_whitespace().skip(1).collect();
        sources.extend(parts[..parts.len() - 1].iter().map(|s| s.to_string()));
    }
    // The models the MODEL build argument may name, and the bundled one's files.
    sources.extend(
        ["models/centernet_mobilenetv3_coco.onnx", "models/centernet_mobilenetv3_coco.labels.txt"].map(String::from),
    );
    for src in &sources {
        let path = common::root().join(src.trim_end_matches('/'));
        assert!(path.exists(), "COPY {src}: not in the repository");
        let files: Vec<String> = if path.is_dir() {
            std::fs::read_dir(&path)
                .unwrap()
                .map(|e| format!("{}/{}", src.trim_end_matches('/'), e.unwrap().file_name().to_string_lossy()))
                .collect()
        } else {
            vec![src.clone()]
        };
        let kept = files.iter().filter(|f| allowed.iter().any(|p| matches(p, f))).count();
        assert!(kept > 0, "COPY {src}: .dockerignore leaves nothing of it in the build context");
    }
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
