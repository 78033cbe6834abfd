//! Shared test helpers: the bundled model and fixtures, one detector per test binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use objdet::{Config, DetectService, Detector};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture photo's bytes.
pub fn fixture(name: &str) -> Vec<u8> {
    let p = root().join("tests/fixtures/images").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// The ONNX Runtime library the tests use: `ORT_DYLIB_PATH` if set, else the one `make setup` fetched.
pub fn ort_dylib() -> String {
    std::env::var("ORT_DYLIB_PATH")
        .unwrap_or_else(|_| root().join(".cache/ort/libonnxruntime.so").display().to_string())
}

/// Makes a spawned process hermetic: nothing of the developer's (or CI's) environment but `PATH`
/// and the ONNX Runtime library reaches it, so every test gives the same verdict wherever it
/// runs; the caller sets what the process needs on top.
pub fn hermetic(cmd: &mut std::process::Command) -> &mut std::process::Command {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    cmd.env_clear().env("PATH", path).env("ORT_DYLIB_PATH", ort_dylib())
}

/// Configuration from the given overrides and the defaults, with repo-absolute model paths
/// (hermetic: nothing is read from the process environment).
pub fn config_with(pairs: &[(&str, &str)]) -> Config {
    let root = root();
    let model = root.join("models/centernet_mobilenetv3_coco.onnx").display().to_string();
    let ort = ort_dylib();
    let overrides: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::from_lookup(|k| {
        if let Some((_, v)) = overrides.iter().find(|(ok, _)| ok == k) {
            return Some(v.clone());
        }
        match k {
            "MODEL_PATH" => Some(model.clone()),
            "ORT_DYLIB_PATH" => Some(ort.clone()),
            // Loaded in-process, the model is optimized at load unless a test asks for the cache.
            "ORT_OPTIMIZED_MODEL_PATH" => Some("off".into()),
            _ => None,
        }
    })
    .expect("test configuration")
}

/// The default test configuration.
pub fn config() -> Config {
    config_with(&[])
}

/// One detector for the whole test binary (loading ORT sessions takes a moment).
///
/// Built whole during start-up (`ORT_WARMUP`): a static is never dropped, and a pool session
/// still being built in the background when the test binary exits would be inside ONNX Runtime
/// while its static destructors run.
pub fn detector() -> Arc<Detector> {
    static D: OnceLock<Arc<Detector>> = OnceLock::new();
    D.get_or_init(|| {
        let mut cfg = config().detector;
        cfg.warmup = true;
        Arc::new(Detector::load(&cfg).expect("load the bundled model"))
    })
    .clone()
}

/// A service without S3 around the shared detector, with `config`.
pub fn service_with(config: Config) -> DetectService {
    DetectService::new(detector(), None, Arc::new(config))
}

/// A service without S3 around the shared detector.
pub fn service() -> DetectService {
    service_with(config())
}

/// Standard base64 of `bytes`.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Labels with their best score in a result.
pub fn labels(objects: &[objdet::api::Object]) -> Vec<(String, f32)> {
    objects.iter().map(|o| (o.label.clone(), o.score)).collect()
}
pub mod aws;
pub mod images;
pub mod server;

/// The custom-trained fixture model (python/fixtures/make_models.py): four classes of shapes.
pub fn shapes_model() -> PathBuf {
    root().join("tests/fixtures/models/shapes-yolo11n.onnx")
}

/// Objects of a photo: (label, x1, y1, x2, y2).
pub type Truth = Vec<(String, [f32; 4])>;

/// The shapes test photos (never seen in training) with their objects: (file name, objects).
pub fn shapes_truth() -> Vec<(String, Truth)> {
    let dir = root().join("tests/fixtures/shapes");
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap();
    let mut v: Vec<_> = truth
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, objs)| {
            let objs = objs
                .as_array()
                .unwrap()
                .iter()
                .map(|o| {
                    let b: Vec<f32> = o["box"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
                    (o["label"].as_str().unwrap().to_string(), [b[0], b[1], b[2], b[3]])
                })
                .collect();
            (name.clone(), objs)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Intersection over union of two (x1, y1, x2, y2) boxes.
pub fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Of the `truth` objects, how many a result's JSON objects (`[{label, box: {x1, y1, x2, y2}}]`)
/// found with the right class at IoU >= 0.5.
pub fn found_in(objects: &serde_json::Value, truth: &[(String, [f32; 4])]) -> usize {
    let ours: Vec<(String, [f32; 4])> = objects
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let b = &o["box"];
            let f = |k: &str| b[k].as_f64().unwrap() as f32;
            (o["label"].as_str().unwrap().to_string(), [f("x1"), f("y1"), f("x2"), f("y2")])
        })
        .collect();
    truth.iter().filter(|(label, b)| ours.iter().any(|(l, o)| l == label && iou(*o, *b) >= 0.5)).count()
}

/// `objdet detect` of `files` (relative to the repository) with the model at `model`, as a user
/// runs it: the answer's results, one per file.
#[allow(dead_code)] // not every test binary runs the CLI
pub fn detect_cli<S: AsRef<std::ffi::OsStr>>(
    model: &std::path::Path,
    files: impl IntoIterator<Item = S>,
) -> Vec<serde_json::Value> {
    let mut c = std::process::Command::new(server::objdet_bin());
    hermetic(&mut c);
    let out = c
        .current_dir(root())
        .env("RUST_LOG", "warn")
        .env("MODEL_PATH", model)
        .arg("detect")
        .args(files)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["results"].as_array().unwrap().clone()
}
