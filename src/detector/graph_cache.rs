//! The optimized-graph cache: ORT's optimized graph of the model, written by the first start on a
//! machine and loaded by later starts without an optimization pass.
//!
//! The graph file holds the operators and small constants; the weights (every initializer of at
//! least 1 KiB) go to a side file `<graph>.<build>.data` that the graph names. A start that finds
//! a fresh cache reads that file once into tensors and hands the same tensors to every session
//! (`AddInitializer`), so N sessions hold one copy of the weights, and ORT's pre-packed weights
//! container shares their packed forms (it only applies to shared initializers). Measured in
//! `docs/performance.md`.
//!
//! The optimized graph is specific to the CPU it was made on (ORT's blocked NCHWc layout depends
//! on the vector width), so the cache is made at run time and its stamp names the model, the ONNX
//! Runtime library and the CPU's vector extensions.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ort::value::{DynValue, Tensor};

use super::onnx;
use crate::config::DetectorConfig;

/// Where a session's graph comes from.
#[derive(Debug, Clone)]
pub enum GraphSource {
    /// The model file, optimized at load (`GraphOptimizationLevel::All`).
    Model,
    /// The model file, optimized at load; the optimized graph and its weights are written by this
    /// build (named by [`Plan::Build`]'s id) and then published to the cache.
    ModelSavingTo(String),
    /// A fresh cache: the optimized graph, loaded without an optimization pass, and its weights.
    Cached(Arc<CachedGraph>),
}

impl GraphSource {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            GraphSource::Model => "model",
            GraphSource::ModelSavingTo(_) => "model, writing the cache",
            GraphSource::Cached(_) => "cache",
        }
    }
}

/// An optimized graph from the cache with its weights, read once and shared by every session.
#[derive(Debug)]
pub struct CachedGraph {
    /// The graph file.
    pub graph: PathBuf,
    /// Initializer name → tensor, handed to each session with `AddInitializer`.
    pub weights: Vec<(String, Arc<DynValue>)>,
}

fn stamp_path(graph: &Path) -> PathBuf {
    with_suffix(graph, ".source")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Identifies what a cached graph was made from: model path, size and modification time, the ORT
/// library, and the CPU's vector extensions. A cache whose stamp differs is rebuilt.
fn cache_stamp(cfg: &DetectorConfig) -> Option<String> {
    let m = std::fs::metadata(&cfg.model_path).ok()?;
    let mtime = m.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos();
    let lib = cfg.ort_dylib_path.as_ref().and_then(|p| std::fs::canonicalize(p).ok()).unwrap_or_default();
    Some(format!("{}\n{}\n{mtime}\n{}\n{}\n", cfg.model_path.display(), m.len(), lib.display(), cpu_features()))
}

/// The vector extensions ORT's CPU kernels choose their layout by.
fn cpu_features() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let f = [
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            ("avx512bw", std::arch::is_x86_feature_detected!("avx512bw")),
            ("avx512vnni", std::arch::is_x86_feature_detected!("avx512vnni")),
        ];
        let on: Vec<&str> = f.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect();
        format!("x86_64 {}", on.join(","))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH.to_string()
    }
}

/// How this start's sessions will load the graph; made without calling ONNX Runtime, so it can
/// be prepared (the cached weights read) while the runtime library loads.
#[derive(Debug)]
pub enum Plan {
    /// No cache configured: every session optimizes the model.
    NoCache,
    /// No fresh cache: the first session writes one, as the build with this unique id.
    Build(String),
    /// A fresh cache, its weights read.
    Read { graph: PathBuf, weights: Vec<RawTensor> },
}

/// One cached weight tensor, read from the side file: its raw little-endian bytes.
#[derive(Debug)]
pub struct RawTensor {
    name: String,
    dims: Vec<i64>,
    data_type: i32,
    bytes: Vec<u8>,
}

impl RawTensor {
    /// Bytes per element of the ONNX element types objdet caches (every numeric type ORT's CPU
    /// kernels take as weights), `None` for others.
    fn element_size(data_type: i32) -> Option<usize> {
        use onnx::dtype::*;
        match data_type {
            UINT8 | INT8 | BOOL => Some(1),
            UINT16 | INT16 | FLOAT16 => Some(2),
            FLOAT | INT32 | UINT32 => Some(4),
            DOUBLE | INT64 | UINT64 => Some(8),
            _ => None,
        }
    }

    /// The ORT tensor of these bytes (a copy into typed elements).
    fn into_value(self) -> ort::Result<DynValue> {
        use onnx::dtype::*;
        fn typed<T: ort::value::PrimitiveTensorElementType + std::fmt::Debug + Clone + 'static, const N: usize>(
            dims: Vec<i64>,
            bytes: &[u8],
            from: impl Fn([u8; N]) -> T,
        ) -> ort::Result<DynValue> {
            let data: Vec<T> = bytes.chunks_exact(N).map(|c| from(c.try_into().unwrap_or([0; N]))).collect();
            Ok(Tensor::from_array((dims, data))?.into_dyn())
        }
        let (dims, b) = (self.dims, self.bytes.as_slice());
        match self.data_type {
            FLOAT => typed(dims, b, f32::from_le_bytes),
            DOUBLE => typed(dims, b, f64::from_le_bytes),
            FLOAT16 => typed(dims, b, |c: [u8; 2]| half::f16::from_bits(u16::from_le_bytes(c))),
            UINT8 => typed(dims, b, |c: [u8; 1]| c[0]),
            INT8 => typed(dims, b, i8::from_le_bytes),
            BOOL => typed(dims, b, |c: [u8; 1]| c[0] != 0),
            UINT16 => typed(dims, b, u16::from_le_bytes),
            INT16 => typed(dims, b, i16::from_le_bytes),
            INT32 => typed(dims, b, i32::from_le_bytes),
            UINT32 => typed(dims, b, u32::from_le_bytes),
            INT64 => typed(dims, b, i64::from_le_bytes),
            UINT64 => typed(dims, b, u64::from_le_bytes),
            other => Err(ort::Error::new(format!("element type {other} is not cached"))),
        }
    }
}

/// Decides how this start's sessions load the graph, given `ORT_OPTIMIZED_MODEL_PATH`: from a
/// fresh cache (its weights read here), or from the model with the first session writing a new
/// cache. A cache that cannot be read is rebuilt.
pub fn plan(cfg: &DetectorConfig) -> Plan {
    let Some(cache) = &cfg.optimized_model_path else { return Plan::NoCache };
    let stamp = cache_stamp(cfg);
    let fresh = stamp.is_some() && std::fs::read_to_string(stamp_path(cache)).ok() == stamp;
    if fresh {
        let t = std::time::Instant::now();
        match read_weights(cache) {
            Ok(weights) => {
                tracing::debug!(ms = crate::telemetry::ms_since(t), tensors = weights.len(), "cached weights read");
                return Plan::Read { graph: cache.clone(), weights };
            }
            Err(e) => {
                tracing::warn!(path = %cache.display(), error = %e, "optimized graph cache unreadable; rebuilding")
            }
        }
    }
    Plan::Build(build_id())
}

/// A name no other build of the cache uses, in this process or another.
fn build_id() -> String {
    static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{}-{n}-{nanos}", std::process::id())
}

impl Plan {
    /// The graph source of the first session and of the others. Needs ONNX Runtime loaded (the
    /// cached weights become ORT tensors here, without a copy).
    pub fn sources(self) -> (GraphSource, GraphSource) {
        match self {
            Plan::NoCache => (GraphSource::Model, GraphSource::Model),
            Plan::Build(id) => (GraphSource::ModelSavingTo(id), GraphSource::Model),
            Plan::Read { graph, weights } => {
                let tensors: std::result::Result<Vec<_>, _> = weights
                    .into_iter()
                    .map(|w| {
                        let name = w.name.clone();
                        w.into_value().map(|v| (name, Arc::new(v)))
                    })
                    .collect();
                match tensors {
                    Ok(weights) => {
                        let cached = GraphSource::Cached(Arc::new(CachedGraph { graph, weights }));
                        (cached.clone(), cached)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cached weights rejected by ONNX Runtime; optimizing the model");
                        (GraphSource::Model, GraphSource::Model)
                    }
                }
            }
        }
    }
}

/// [`plan`] and [`Plan::sources`] in one step.
pub fn graph_sources(cfg: &DetectorConfig) -> (GraphSource, GraphSource) {
    plan(cfg).sources()
}

/// The ORT session option naming the side file the optimized graph's weights are written to.
pub const WEIGHTS_FILE_ENTRY: &str = "session.optimized_model_external_initializers_file_name";

/// Where build `id` has ORT write the optimized graph (in a directory of its own), and the name of
/// its weights file, unique to the build (so a published graph and its weights always match,
/// whatever other processes publish meanwhile).
pub fn build_paths(cfg: &DetectorConfig, id: &str) -> std::io::Result<(PathBuf, String)> {
    let no_name = || std::io::Error::other("ORT_OPTIMIZED_MODEL_PATH names no file");
    let cache = cfg.optimized_model_path.as_ref().ok_or_else(no_name)?;
    let name = cache.file_name().ok_or_else(no_name)?;
    let dir = build_dir(cache, id);
    std::fs::create_dir_all(&dir)?;
    Ok((dir.join(name), format!("{}.{id}.data", name.to_string_lossy())))
}

fn build_dir(cache: &Path, id: &str) -> PathBuf {
    with_suffix(cache, &format!(".tmp{id}"))
}

/// Moves build `id`'s graph and weights into place, writes the stamp and removes the weights of
/// the graph it replaced. Failures only cost the cache.
pub fn publish(cfg: &DetectorConfig, id: &str) {
    let Some(cache) = &cfg.optimized_model_path else { return };
    let dir = cache.parent().unwrap_or(Path::new("."));
    let tmp_dir = build_dir(cache, id);
    let replaced = weight_files(cache).unwrap_or_default();
    let moved = (|| -> std::io::Result<Vec<String>> {
        let graph = tmp_dir.join(cache.file_name().unwrap_or_default());
        let ours = weight_files(&graph).map_err(std::io::Error::other)?;
        for data in &ours {
            std::fs::rename(tmp_dir.join(data), dir.join(data))?;
        }
        std::fs::rename(graph, cache)?;
        std::fs::write(stamp_path(cache), cache_stamp(cfg).unwrap_or_default())?;
        Ok(ours)
    })();
    let _ = std::fs::remove_dir_all(&tmp_dir);
    match moved {
        Ok(ours) => {
            for old in replaced.iter().filter(|old| !ours.contains(old)) {
                let _ = std::fs::remove_file(dir.join(old));
            }
            tracing::info!(path = %cache.display(), "optimized graph cached")
        }
        Err(e) => tracing::warn!(path = %cache.display(), error = %e, "could not cache the optimized graph"),
    }
}

/// The graph's initializers kept in side files, with their file name, offset and length.
fn external_initializers(graph: &Path) -> std::result::Result<Vec<(onnx::TensorProto, String, usize, usize)>, String> {
    let proto = std::fs::read(graph).map_err(|e| format!("read: {e}"))?;
    let initializers = onnx::initializers(&proto).map_err(|e| format!("not an ONNX model: {e}"))?;
    initializers
        .into_iter()
        .filter(|t| t.data_location == onnx::EXTERNAL)
        .map(|t| {
            let entry = |key: &str| t.external_data.iter().find(|e| e.key == key).map(|e| e.value.clone());
            let location =
                entry("location").filter(|l| is_plain_name(l)).ok_or_else(|| format!("{}: bad location", t.name))?;
            let number = |key: &str, default: Option<&str>| {
                entry(key)
                    .as_deref()
                    .or(default)
                    .and_then(|v| v.parse::<usize>().ok())
                    .ok_or_else(|| format!("{}: bad {key}", t.name))
            };
            let (offset, length) = (number("offset", Some("0"))?, number("length", None)?);
            Ok((t, location, offset, length))
        })
        .collect()
}

/// The side files a graph keeps its weights in.
fn weight_files(graph: &Path) -> std::result::Result<Vec<String>, String> {
    let mut files: Vec<String> = Vec::new();
    for (_, location, _, _) in external_initializers(graph)? {
        if !files.contains(&location) {
            files.push(location);
        }
    }
    Ok(files)
}

/// A file name in the cache's own directory (no path components).
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && Path::new(name).file_name().is_some_and(|n| n == name)
}

/// Reads a cached graph's weights: every initializer the graph keeps in its side file.
fn read_weights(graph: &Path) -> std::result::Result<Vec<RawTensor>, String> {
    let dir = graph.parent().unwrap_or(Path::new("."));
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut weights = Vec::new();
    for (t, location, offset, length) in external_initializers(graph)? {
        let Some(size) = RawTensor::element_size(t.data_type) else {
            return Err(format!("{}: element type {} is not cached", t.name, onnx::dtype::name(t.data_type)));
        };
        if !files.iter().any(|(name, _)| *name == location) {
            let path = dir.join(&location);
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            files.push((location.clone(), bytes));
        }
        let bytes = files.iter().find(|(name, _)| *name == location).map(|(_, b)| b.as_slice()).unwrap_or_default();
        let raw = offset
            .checked_add(length)
            .and_then(|end| bytes.get(offset..end))
            .ok_or_else(|| format!("{}: outside {location}", t.name))?;
        let elements: usize = t.dims.iter().map(|&d| usize::try_from(d).unwrap_or(usize::MAX)).product();
        if elements.checked_mul(size) != Some(raw.len()) {
            return Err(format!("{}: {} bytes for shape {:?}", t.name, raw.len(), t.dims));
        }
        weights.push(RawTensor { name: t.name, dims: t.dims, data_type: t.data_type, bytes: raw.to_vec() });
    }
    Ok(weights)
}
