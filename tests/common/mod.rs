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

/// Configuration from the environment plus the given overrides, with repo-absolute model paths.
pub fn config_with(pairs: &[(&str, &str)]) -> Config {
    let root = root();
    let model = root.join("models/centernet_mobilenetv3_coco.onnx").display().to_string();
    let ort = std::env::var("ORT_DYLIB_PATH")
        .unwrap_or_else(|_| root.join(".cache/ort/libonnxruntime.so").display().to_string());
    let overrides: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::from_lookup(|k| {
        if let Some((_, v)) = overrides.iter().find(|(ok, _)| ok == k) {
            return Some(v.clone());
        }
        match k {
            "MODEL_PATH" => Some(model.clone()),
            "ORT_DYLIB_PATH" => Some(ort.clone()),
            // Tests must not pick up a developer's S3 settings.
            "UPLOAD_BUCKET" | "ALLOWED_BUCKETS" => None,
            // Loaded in-process, the model is optimized at load unless a test asks for the cache.
            "ORT_OPTIMIZED_MODEL_PATH" => Some("off".into()),
            _ => std::env::var(k).ok(),
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
