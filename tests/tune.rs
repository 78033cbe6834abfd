//! `objdet tune`, emulated: the Lambda bootstrap under AWS's Runtime Interface Emulator in Linux
//! cgroups (root, cgroup v1: this workplace's machines and CI), end to end.

mod common;

use std::process::Command;

/// One tuning run at a time: each checks that it leaves no cgroup behind, and its sizes' CPU
/// shares are measured without the other's load.
/// A fresh directory under target/test-logs (kept for reading when a test fails).
fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = common::root().join("target/test-logs").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("images")).unwrap();
    dir
}

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn tune(dir: &std::path::Path, memory: &str, images: &std::path::Path) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_objdet"));
    common::hermetic(&mut c);
    c.current_dir(common::root())
        .env("RUST_LOG", "warn")
        .env("MODEL_PATH", common::root().join("models/centernet_mobilenetv3_coco.onnx"))
        .env("TMPDIR", dir)
        .args(["tune", "--memory", memory, "--batch", "2", "--warm", "2", "--timeout-secs", "300"])
        .arg("--images")
        .arg(images)
        .arg("--out")
        .arg(dir.join("tune.csv"))
        .arg("--plot")
        .arg(dir.join("tune.svg"))
        .arg("--rie")
        .arg(common::aws::tool("aws-lambda-rie"))
        .arg("--bootstrap")
        .arg(env!("CARGO_BIN_EXE_bootstrap"));
    c.output().unwrap()
}

fn our_cgroups() -> Vec<String> {
    ["cpu", "cpuset", "memory"]
        .iter()
        .flat_map(|c| std::fs::read_dir(format!("/sys/fs/cgroup/{c}")).into_iter().flatten())
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("objdet-tune-"))
        .collect()
}

#[test]
fn two_sizes_two_images_end_to_end() {
    let dir = fresh_dir("tune-two-sizes");
    let images = dir.join("images");
    for name in ["dog.jpg", "coffee.png"] {
        std::fs::write(images.join(name), common::fixture(name)).unwrap();
    }
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let out = tune(&dir, "512,1769", &images);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));

    let csv = std::fs::read_to_string(dir.join("tune.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header.join(","), objdet::offload::tune::CSV_HEADER);
    let col = |row: &[&str], name: &str| row[header.iter().position(|h| *h == name).unwrap()].to_string();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 2, "{csv}");
    let mut per_image = vec![];
    for (row, mb) in rows.iter().zip(["512", "1769"]) {
        assert_eq!(col(row, "memory_mb"), mb);
        assert_eq!(col(row, "batch"), "2");
        assert_eq!(col(row, "failure"), "", "{csv}");
        let number = |name: &str| col(row, name).parse::<f64>().unwrap_or_else(|_| panic!("{name} in {csv}"));
        assert!(number("init_ms") > 0.0 && number("cold_ms") > 0.0 && number("p95_ms") >= number("p50_ms"), "{csv}");
        assert!(number("cost_per_1000_usd") > 0.0 && number("peak_mb") > 10.0, "{csv}");
        per_image.push(number("ms_per_image"));
    }
    // 512 MB has 0.29 of a vCPU by its CFS quota, 1,769 MB a whole one: slower on any machine.
    assert!(per_image[0] > per_image[1], "{csv}");

    let rec = stdout.lines().find(|l| l.starts_with("recommendation (x86_64): ")).unwrap_or_else(|| panic!("{stdout}"));
    for choice in ["cheapest", "fastest", "balanced"] {
        let mb = rec.split(&format!("{choice} ")).nth(1).and_then(|s| s.split(' ').next()).unwrap();
        assert!(mb == "512" || mb == "1769", "{rec}");
    }
    assert!(rec.contains("fastest 1769 MB"), "{rec}");
    let svg = std::fs::read_to_string(dir.join("tune.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("512 MB") && svg.contains("1769 MB"), "{svg}");
    assert!(our_cgroups().is_empty(), "left behind: {:?}", our_cgroups());
}

/// Two model variants at one size, with their `objdet eval` reports: one row per model, the mAP
/// beside each, and the recommendation kept to models within the tolerance of the best.
#[test]
fn model_variants_and_sizes_are_chosen_together() {
    let dir = fresh_dir("tune-models");
    let images = dir.join("images");
    for (name, _) in common::shapes_truth().iter().take(2) {
        std::fs::copy(common::root().join("tests/fixtures/shapes").join(name), images.join(name)).unwrap();
    }
    let models = common::root().join("tests/fixtures/models");
    let (fp32, int8) = (models.join("shapes-yolo11n.onnx"), models.join("shapes-yolo11n.s8s8.onnx"));
    let mut reports = vec![];
    for m in [&fp32, &int8] {
        let json = dir.join(format!("{}.eval.json", m.file_stem().unwrap().to_string_lossy()));
        let mut c = Command::new(env!("CARGO_BIN_EXE_objdet"));
        common::hermetic(&mut c);
        let out = c
            .current_dir(common::root())
            .env("MODEL_PATH", m)
            .env("RUST_LOG", "warn")
            .args(["eval", "--quiet", "--data", "tests/fixtures/shapes/data.yaml", "--json"])
            .arg(&json)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        reports.push(json.display().to_string());
    }
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let run = |tolerance: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_objdet"));
        common::hermetic(&mut c);
        c.current_dir(common::root())
            .env("RUST_LOG", "warn")
            .env("TMPDIR", &dir)
            .args(["tune", "--memory", "1769", "--batch", "2", "--warm", "1", "--timeout-secs", "300"])
            .arg("--models")
            .arg(format!("{},{}", fp32.display(), int8.display()))
            .args(["--eval-json", &reports.join(","), "--map-tolerance", tolerance])
            .arg("--images")
            .arg(&images)
            .arg("--out")
            .arg(dir.join("tune.csv"))
            .arg("--rie")
            .arg(common::aws::tool("aws-lambda-rie"))
            .arg("--bootstrap")
            .arg(env!("CARGO_BIN_EXE_bootstrap"));
        let out = c.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    // The int8 variant is more than 0.005 below fp32 (tests/eval.rs measures ~0.017): only fp32
    // may be recommended.
    let strict = run("0.005");
    let csv = std::fs::read_to_string(dir.join("tune.csv")).unwrap();
    let models_in_csv: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(models_in_csv, vec!["shapes-yolo11n.onnx", "shapes-yolo11n.s8s8.onnx"], "{csv}");
    assert!(strict.contains("| shapes-yolo11n.s8s8.onnx | 0.8"), "{strict}");
    let rec = strict.lines().find(|l| l.starts_with("recommendation")).unwrap_or_else(|| panic!("{strict}"));
    assert!(rec.contains("within 0.005 mAP50-95 of the best"), "{rec}");
    for choice in ["cheapest", "fastest", "balanced"] {
        assert!(rec.contains(&format!("{choice} shapes-yolo11n.onnx at 1769 MB")), "{rec}");
    }
    assert!(our_cgroups().is_empty(), "left behind: {:?}", our_cgroups());
}

/// A size too small for the batch is reported as out of memory in its row, not a hang, and the
/// other sizes still run.
#[test]
fn a_size_too_small_is_reported_out_of_memory() {
    let dir = fresh_dir("tune-oom");
    let images = dir.join("images");
    // 36 MP of one colour: a few kB of PNG, 108 MB of pixels once decoded.
    for i in 0..2u8 {
        let img = image::RgbImage::from_pixel(6000, 6000, image::Rgb([i * 40, 100, 200]));
        img.save(images.join(format!("flat-{i}.png"))).unwrap();
    }
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let out = tune(&dir, "128,1024", &images);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let csv = std::fs::read_to_string(dir.join("tune.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    let model = "centernet_mobilenetv3_coco.onnx";
    assert!(rows[0].starts_with(&format!("{model},128,")) && rows[0].contains("out of memory"), "{csv}");
    assert!(rows[1].starts_with(&format!("{model},1024,")) && rows[1].ends_with(','), "{csv}");
    assert!(stdout.contains("cheapest 1024 MB, fastest 1024 MB, balanced 1024 MB"), "{stdout}");
    assert!(our_cgroups().is_empty(), "left behind: {:?}", our_cgroups());
}

/// A Lambda API call to moto (it routes by the credential scope's service and checks no signature).
async fn moto_call(
    moto: &common::aws::Moto,
    service: &str,
    method: reqwest::Method,
    path: &str,
    body: String,
    content_type: &str,
) -> serde_json::Value {
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential=testing/20261202/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
    );
    let res = reqwest::Client::new()
        .request(method, format!("{}{path}", moto.endpoint))
        .header("authorization", auth)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    assert!(status.is_success(), "{service} {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

/// moto with a function `objdet-api` of 3,538 MB; moto's Docker-less Lambda answers every
/// invocation at once, without a log tail.
async fn moto_with_function() -> common::aws::Moto {
    let moto = common::aws::Moto::start();
    let config = r#"{"lambda": {"use_docker": false}}"#.to_string();
    moto_call(&moto, "lambda", reqwest::Method::POST, "/moto-api/config", config, "application/json").await;
    let role = "Action=CreateRole&Version=2010-05-08&RoleName=objdet-tune&AssumeRolePolicyDocument=%7B%7D".to_string();
    moto_call(&moto, "iam", reqwest::Method::POST, "/", role, "application/x-www-form-urlencoded").await;
    let function = serde_json::json!({
        "FunctionName": "objdet-api",
        "Role": "arn:aws:iam::123456789012:role/objdet-tune",
        "Runtime": "provided.al2023",
        "Handler": "bootstrap",
        // An empty zip archive.
        "Code": {"ZipFile": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="},
        "MemorySize": 3538,
        "Environment": {"Variables": {"MODEL_URI": "s3://models/original.onnx", "LOG_FORMAT": "json"}}
    });
    moto_call(
        &moto,
        "lambda",
        reqwest::Method::POST,
        "/2015-03-31/functions",
        function.to_string(),
        "application/json",
    )
    .await;
    moto
}

async fn memory_size(moto: &common::aws::Moto) -> u64 {
    let path = "/2015-03-31/functions/objdet-api/configuration";
    let c = moto_call(moto, "lambda", reqwest::Method::GET, path, String::new(), "application/json").await;
    c["MemorySize"].as_u64().unwrap_or_else(|| panic!("{c}"))
}

fn tune_deployed(moto: &common::aws::Moto, dir: &std::path::Path, memory: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_objdet"));
    common::hermetic(&mut c);
    c.current_dir(common::root())
        .env("RUST_LOG", "info")
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(["tune", "--function", "objdet-api", "--batch", "1", "--warm", "1", "--memory", memory])
        .arg("--images")
        .arg(dir.join("images"))
        .arg("--out")
        .arg(dir.join("tune.csv"));
    c
}

#[tokio::test]
async fn a_deployed_function_is_measured_and_restored() {
    let dir = fresh_dir("tune-deployed");
    std::fs::write(dir.join("images/dog.jpg"), common::fixture("dog.jpg")).unwrap();
    let moto = moto_with_function().await;
    let out = tune_deployed(&moto, &dir, "1024,2048").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // moto's invocations carry no log tail: each size says so in its row, and none is recommended.
    let csv = std::fs::read_to_string(dir.join("tune.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(rows.iter().all(|r| r.ends_with("no REPORT line in the invocation's log tail")), "{csv}");
    assert!(stdout.contains("no configuration ran"), "{stdout}");
    assert_eq!(memory_size(&moto).await, 3538);
}

async fn environment(moto: &common::aws::Moto) -> serde_json::Value {
    let path = "/2015-03-31/functions/objdet-api/configuration";
    let c = moto_call(moto, "lambda", reqwest::Method::GET, path, String::new(), "application/json").await;
    c["Environment"]["Variables"].clone()
}

/// Several models on a deployed function: each selected through the function's environment
/// (MODEL_URI for an S3 URI, MODEL_PATH for a path in its image) before its sizes, one row per
/// model and size, and the original environment and size restored at the end.
#[tokio::test]
async fn models_are_compared_on_a_deployed_function_and_its_environment_restored() {
    let dir = fresh_dir("tune-deployed-models");
    std::fs::write(dir.join("images/dog.jpg"), common::fixture("dog.jpg")).unwrap();
    let moto = moto_with_function().await;
    let before = environment(&moto).await;
    let out = tune_deployed(&moto, &dir, "1024,2048")
        .args(["--models", "s3://models/m.onnx,/opt/models/m.int8.onnx"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let csv = std::fs::read_to_string(dir.join("tune.csv")).unwrap();
    let rows: Vec<(&str, &str)> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let mut c = l.split(',');
            (c.next().unwrap(), c.next().unwrap())
        })
        .collect();
    assert_eq!(
        rows,
        vec![("m.onnx", "1024"), ("m.onnx", "2048"), ("m.int8.onnx", "1024"), ("m.int8.onnx", "2048")],
        "{csv}"
    );
    for (var, model) in [("MODEL_URI", "s3://models/m.onnx"), ("MODEL_PATH", "/opt/models/m.int8.onnx")] {
        assert!(
            stderr.lines().any(|l| l.contains("model selected") && l.contains(var) && l.contains(model)),
            "{stderr}"
        );
    }
    assert_eq!(environment(&moto).await, before);
    assert_eq!(before["MODEL_URI"], "s3://models/original.onnx");
    assert_eq!(memory_size(&moto).await, 3538);
}

#[tokio::test]
async fn an_interrupted_run_restores_the_memory_size() {
    use std::io::BufRead as _;
    let dir = fresh_dir("tune-interrupted");
    std::fs::write(dir.join("images/dog.jpg"), common::fixture("dog.jpg")).unwrap();
    let moto = moto_with_function().await;
    // Enough sizes that the run is still changing the function when the signal comes.
    let sizes: Vec<String> = (0..2000).map(|i| (128 + i * 4).to_string()).collect();
    let mut child = tune_deployed(&moto, &dir, &sizes.join(",")).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    // Wait until it has begun changing sizes ("tuning a deployed function", then moto's calls).
    while !log.contains("tuning a deployed function") {
        assert!(stderr.read_line(&mut log).unwrap() > 0, "{log}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_ne!(memory_size(&moto).await, 3538, "not changing sizes yet");
    std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    log.push_str(&rest);
    assert!(!status.success(), "{log}");
    assert!(log.contains("interrupted; the function's memory size was restored to 3538 MB"), "{log}");
    assert_eq!(memory_size(&moto).await, 3538);
}
