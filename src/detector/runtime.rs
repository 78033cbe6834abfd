//! ONNX Runtime: loading the shared library once per process, and building sessions.

use std::path::Path;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, PrepackedWeights};

use crate::config::DetectorConfig;
use crate::error::{Error, Result};

/// Name of the model input.
pub const INPUT_NAME: &str = "tower_0/images:0";
/// The only output objdet asks ORT to compute.
pub const OUTPUT_NAME: &str = "tower_0/detections";

static ENVIRONMENT: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();

/// Loads the ONNX Runtime library from `path` (once per process) and returns the environment.
///
/// A missing or incompatible library is an [`Error::Startup`], never a panic.
pub fn environment(path: Option<&Path>) -> Result<&'static Environment> {
    ENVIRONMENT
        .get_or_init(|| {
            let path = path.ok_or_else(|| {
                "ONNX Runtime library not found: run `make setup` or set ORT_DYLIB_PATH to libonnxruntime.so"
                    .to_string()
            })?;
            if !path.exists() {
                return Err(format!("ONNX Runtime library {} does not exist (ORT_DYLIB_PATH)", path.display()));
            }
            let builder =
                ort::init_from(path).map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?;
            builder
                .with_name("objdet")
                .with_telemetry(false)
                .build()
                .map_err(|e| format!("cannot create the ONNX Runtime environment: {e}"))
        })
        .as_ref()
        .map_err(|e| Error::Startup(e.clone()))
}

/// Builds one session of the model with the configured threads.
///
/// `weights` is shared by every session of a detector, so N sessions hold one copy of the packed weights.
pub fn session(cfg: &DetectorConfig, weights: &PrepackedWeights) -> Result<Session> {
    let env = environment(cfg.ort_dylib_path.as_deref())?;
    if !cfg.model_path.exists() {
        return Err(Error::Startup(format!("model {} does not exist (MODEL_PATH)", cfg.model_path.display())));
    }
    let map = |e: ort::Error<_>| Error::Startup(format!("session options: {e}"));
    let mut builder = Session::builder(env)
        .map_err(|e| Error::Startup(format!("session builder: {e}")))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(map)?
        .with_intra_threads(cfg.intra_threads)
        .map_err(map)?
        .with_inter_threads(1)
        .map_err(map)?
        .with_intra_op_spinning(cfg.spin)
        .map_err(map)?
        .with_inter_op_spinning(false)
        .map_err(map)?
        .with_prepacked_weights(weights)
        .map_err(map)?;
    if let Some(p) = &cfg.optimized_model_path {
        builder = builder.with_optimized_model_path(p).map_err(map)?;
    }
    let session = builder
        .commit_from_file(&cfg.model_path)
        .map_err(|e| Error::Startup(format!("cannot load model {}: {e}", cfg.model_path.display())))?;
    let has_input = session.inputs().iter().any(|i| i.name() == INPUT_NAME);
    let has_output = session.outputs().iter().any(|o| o.name() == OUTPUT_NAME);
    if !has_input || !has_output {
        return Err(Error::Startup(format!(
            "model {} lacks input {INPUT_NAME} or output {OUTPUT_NAME}",
            cfg.model_path.display()
        )));
    }
    Ok(session)
}
