//! ONNX Runtime: loading the shared library once per process, and building sessions.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, PrepackedWeights};

use super::ModelSpec;
use super::error::LoadError;
use super::graph_cache::{self, GraphSource};
use crate::config::DetectorConfig;

type Result<T, E = LoadError> = std::result::Result<T, E>;

/// A failure cached for the process (the shared arena is registered once).
type Failed = (&'static str, Option<Arc<dyn std::error::Error + Send + Sync>>);

fn cause(e: impl std::error::Error + Send + Sync + 'static) -> Option<Arc<dyn std::error::Error + Send + Sync>> {
    Some(Arc::new(e))
}

fn failed((reason, source): &Failed) -> LoadError {
    fail(reason, source.clone())
}

fn fail(reason: &str, source: Option<Arc<dyn std::error::Error + Send + Sync>>) -> LoadError {
    LoadError::Runtime { reason: reason.to_string(), source }
}

/// The environment, once loaded, and the library it was loaded from. Only a success is kept: a
/// library that failed to load can be fixed and loaded by a later call.
static ENVIRONMENT: OnceLock<(PathBuf, Environment)> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

/// Loads the ONNX Runtime library from `path` (once per process: ORT's API is process-wide) and
/// returns the environment.
///
/// A missing or incompatible library is a [`LoadError::Runtime`], never a panic; so is a second
/// call naming another library than the one loaded.
pub fn environment(path: Option<&Path>) -> Result<&'static Environment> {
    let path = path
        .ok_or_else(|| fail("library not found: run `make setup` or set ORT_DYLIB_PATH to libonnxruntime.so", None))?;
    if !path.exists() {
        return Err(fail("the library ORT_DYLIB_PATH names does not exist", None));
    }
    let _loading = LOADING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((loaded, env)) = ENVIRONMENT.get() {
        return if same_file(loaded, path) {
            Ok(env)
        } else {
            Err(fail("another library is already loaded in this process (ORT_DYLIB_PATH differs)", None))
        };
    }
    let builder = ort::init_from(path).map_err(|e| fail("cannot load the library (ORT_DYLIB_PATH)", cause(e)))?;
    let env = builder
        .with_name("objdet")
        .with_telemetry(false)
        .build()
        .map_err(|e| fail("cannot create the environment", cause(e)))?;
    Ok(&ENVIRONMENT.get_or_init(|| (path.to_path_buf(), env)).1)
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

/// Where a session's activations live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arena {
    /// Its own arena, grown on its first run and kept.
    Own,
    /// The one ORT arena registered in the environment, shared with the other `Shared` session.
    /// Only for sessions that never run at the same time (the lead worker's solo and pool
    /// sessions): their activations then take the memory of one (docs/performance.md).
    Shared,
}

/// Builds one session of the model with the configured threads and its own arena.
///
/// `weights` is shared by every session of a detector, so N sessions hold one copy of the packed
/// weights. A cached graph ORT refuses (e.g. its side file removed meanwhile), or a cache that
/// cannot be written, falls back to the model.
pub fn session(
    cfg: &DetectorConfig,
    spec: &ModelSpec,
    weights: &PrepackedWeights,
    source: &GraphSource,
) -> Result<Session> {
    session_in(cfg, spec, weights, source, Arena::Own)
}

/// [`session`], with the activations in `arena`.
pub fn session_in(
    cfg: &DetectorConfig,
    spec: &ModelSpec,
    weights: &PrepackedWeights,
    source: &GraphSource,
    arena: Arena,
) -> Result<Session> {
    let parts = Parts { cfg, spec, weights, arena };
    match build_session(parts, source) {
        Err(e) if matches!(source, GraphSource::Cached(_)) => {
            tracing::warn!(error = %crate::error::chain(&e), "cached optimized graph refused; optimizing the model");
            build_session(parts, &GraphSource::Model)
        }
        // An unwritable cache (a read-only path, a full disk) costs the cache, not the start-up.
        Err(e) if matches!(source, GraphSource::ModelSavingTo(_)) => {
            tracing::warn!(error = %crate::error::chain(&e), "cannot write the optimized-graph cache (ORT_OPTIMIZED_MODEL_PATH); running without it");
            build_session(parts, &GraphSource::Model)
        }
        built => built,
    }
}

static SHARED_ARENA: OnceLock<std::result::Result<(), Failed>> = OnceLock::new();

/// Registers the environment's CPU arena (once per process) for [`Arena::Shared`] sessions, with
/// ORT's defaults (the same BFC arena a session creates for itself).
fn register_shared_arena(env: &Environment) -> Result<()> {
    SHARED_ARENA
        .get_or_init(|| {
            use ort::AsPointer;
            use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
            let info = MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Arena, MemoryType::Default)
                .map_err(|e| ("cannot describe the shared arena", cause(e)))?;
            // SAFETY: both pointers are live ORT objects; a null arena config means ORT's defaults
            // (the same BFC arena a session creates for itself); ORT copies what it needs.
            unsafe {
                let status =
                    (ort::api().CreateAndRegisterAllocator)(env.ptr().cast_mut(), info.ptr(), std::ptr::null());
                ort::Error::result_from_status(status)
            }
            .map_err(|e| ("cannot register the shared arena", cause(e)))
        })
        .as_ref()
        .map(|_| ())
        .map_err(failed)
}

/// What a session is built from, besides its graph source.
#[derive(Clone, Copy)]
struct Parts<'a> {
    cfg: &'a DetectorConfig,
    spec: &'a ModelSpec,
    weights: &'a PrepackedWeights,
    arena: Arena,
}

fn build_session(parts: Parts<'_>, source: &GraphSource) -> Result<Session> {
    let Parts { cfg, spec, weights, arena } = parts;
    let env = environment(cfg.ort_dylib_path.as_deref())?;
    if arena == Arena::Shared {
        register_shared_arena(env)?;
    }
    if !cfg.model_path.exists() {
        let missing = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        return Err(LoadError::Model { path: cfg.model_path.clone(), source: missing.into() });
    }
    let map = |e: ort::Error<_>| LoadError::Options { what: "session options", source: e.into() };
    let level = match source {
        GraphSource::Cached(_) => GraphOptimizationLevel::Disable,
        _ => GraphOptimizationLevel::All,
    };
    let mut builder = Session::builder(env)
        .map_err(|e| LoadError::Options { what: "session builder", source: e })?
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
        // ORT's memory pattern: never faster here, and more memory (docs/performance.md).
        .with_memory_pattern(false)
        .map_err(map)?
        .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(true).build()])
        .map_err(map)?;
    if arena == Arena::Shared {
        builder = builder.with_env_allocators().map_err(map)?;
    }
    let model_file = match source {
        GraphSource::Cached(cached) => {
            for (name, value) in &cached.weights {
                builder = builder.with_initializer(name, Arc::clone(value)).map_err(map)?;
            }
            cached.graph.clone()
        }
        GraphSource::ModelSavingTo(id) => {
            let (graph, weights_file) = graph_cache::build_paths(cfg, id).map_err(LoadError::Cache)?;
            builder = builder
                .with_optimized_model_path(graph)
                .map_err(map)?
                .with_config_entry(graph_cache::WEIGHTS_FILE_ENTRY, weights_file)
                .map_err(map)?;
            cfg.model_path.clone()
        }
        GraphSource::Model => cfg.model_path.clone(),
    };
    let t = std::time::Instant::now();
    let session = builder
        .commit_from_file(&model_file)
        .map_err(|e| LoadError::Model { path: model_file.clone(), source: Box::new(e) })?;
    tracing::debug!(ms = crate::telemetry::ms_since(t), source = source.name(), "session created");
    if let GraphSource::ModelSavingTo(id) = source {
        graph_cache::publish(cfg, id);
    }
    // The session must see the graph as the description does (a cached graph from another model
    // would not).
    let has_input = session.inputs().iter().any(|i| i.name() == spec.input.name);
    let has_outputs = spec.head.outputs().iter().all(|name| session.outputs().iter().any(|o| o.name() == *name));
    if !has_input || !has_outputs {
        let reason = format!(
            "the session lacks input {} or one of the outputs {:?}",
            crate::error::excerpt(&spec.input.name),
            spec.head.outputs()
        );
        return Err(LoadError::Model { path: model_file.clone(), source: reason.into() });
    }
    Ok(session)
}
