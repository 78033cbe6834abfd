//! ONNX Runtime: loading the shared library once per process, and building sessions.

use std::path::{Path, PathBuf};
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

/// Where a session's graph comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum GraphSource {
    /// The model file, optimized at load (`GraphOptimizationLevel::All`).
    Model,
    /// The model file, optimized at load, and the optimized graph written to this path.
    ModelSavingTo(PathBuf),
    /// An optimized graph cached by an earlier start: loaded without an optimization pass.
    Cached(PathBuf),
}

/// Identifies the model a cached graph was made from (path, size, modification time) and the ORT
/// library that made it: a cache whose stamp differs is rebuilt.
fn cache_stamp(cfg: &DetectorConfig) -> Option<String> {
    let m = std::fs::metadata(&cfg.model_path).ok()?;
    let mtime = m.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos();
    let lib = cfg.ort_dylib_path.as_ref().and_then(|p| std::fs::canonicalize(p).ok());
    Some(format!("{}\n{}\n{mtime}\n{}\n", cfg.model_path.display(), m.len(), lib.unwrap_or_default().display()))
}

fn stamp_path(cache: &Path) -> PathBuf {
    let mut p = cache.as_os_str().to_owned();
    p.push(".source");
    PathBuf::from(p)
}

/// Decides how the sessions of this start load the graph, given `ORT_OPTIMIZED_MODEL_PATH`:
/// a fresh cache is used by every session; otherwise the first session writes a new one.
/// (The optimized graph is specific to the CPU it was made on, so the cache is made at run time.)
pub fn graph_sources(cfg: &DetectorConfig) -> (GraphSource, GraphSource) {
    let Some(cache) = &cfg.optimized_model_path else { return (GraphSource::Model, GraphSource::Model) };
    let fresh =
        cache.exists() && std::fs::read_to_string(stamp_path(cache)).ok().is_some_and(|s| Some(s) == cache_stamp(cfg));
    if fresh {
        (GraphSource::Cached(cache.clone()), GraphSource::Cached(cache.clone()))
    } else {
        let mut tmp = cache.as_os_str().to_owned();
        tmp.push(format!(".tmp{}", std::process::id()));
        (GraphSource::ModelSavingTo(PathBuf::from(tmp)), GraphSource::Model)
    }
}

/// Moves a freshly written optimized graph into place, with its stamp. Failures only cost the cache.
fn publish_cache(cfg: &DetectorConfig, tmp: &Path) {
    let Some(cache) = &cfg.optimized_model_path else { return };
    let done = std::fs::rename(tmp, cache)
        .and_then(|_| std::fs::write(stamp_path(cache), cache_stamp(cfg).unwrap_or_default()));
    match done {
        Ok(()) => tracing::info!(path = %cache.display(), "optimized graph cached"),
        Err(e) => tracing::warn!(path = %cache.display(), error = %e, "could not cache the optimized graph"),
    }
}

/// Builds one session of the model with the configured threads.
///
/// `weights` is shared by every session of a detector, so N sessions hold one copy of the packed weights.
pub fn session(cfg: &DetectorConfig, weights: &PrepackedWeights, source: &GraphSource) -> Result<Session> {
    let env = environment(cfg.ort_dylib_path.as_deref())?;
    if !cfg.model_path.exists() {
        return Err(Error::Startup(format!("model {} does not exist (MODEL_PATH)", cfg.model_path.display())));
    }
    let map = |e: ort::Error<_>| Error::Startup(format!("session options: {e}"));
    let level = match source {
        GraphSource::Cached(_) => GraphOptimizationLevel::Disable,
        _ => GraphOptimizationLevel::All,
    };
    let mut builder = Session::builder(env)
        .map_err(|e| Error::Startup(format!("session builder: {e}")))?
        .with_optimization_level(level)
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
        .map_err(map)?
        .with_memory_pattern(cfg.memory_pattern)
        .map_err(map)?
        .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(cfg.cpu_arena).build()])
        .map_err(map)?;
    let model_file = match source {
        GraphSource::Cached(p) => p.clone(),
        GraphSource::ModelSavingTo(tmp) => {
            builder = builder.with_optimized_model_path(tmp).map_err(map)?;
            cfg.model_path.clone()
        }
        GraphSource::Model => cfg.model_path.clone(),
    };
    let t = std::time::Instant::now();
    let session = builder
        .commit_from_file(&model_file)
        .map_err(|e| Error::Startup(format!("cannot load model {}: {e}", cfg.model_path.display())))?;
    tracing::debug!(ms = crate::api::ms_since(t), ?source, "session created");
    if let GraphSource::ModelSavingTo(tmp) = source {
        publish_cache(cfg, tmp);
    }
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
