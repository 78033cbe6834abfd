//! A model deployed as an S3 object (`MODEL_URI`): downloaded once per process at start-up (on
//! Lambda, during Init, into `/tmp`), streamed to disk and bounded by `MODEL_MAX_BYTES`, checked
//! against `MODEL_SHA256` when given, and then loaded from the file as `MODEL_PATH` would be.
//! Every failure names the URI and its cause; nothing half-downloaded is left to be loaded.

use std::path::PathBuf;
use std::time::Instant;

use crate::config::{ModelSource, S3Config, S3Uri};
use crate::s3::{S3Error, S3Store};

/// Why the model could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// S3 refused or failed (no such object, access denied, a failed call).
    #[error("cannot download {what} {uri} ({var})")]
    S3 {
        /// "the model" or "the labels".
        what: &'static str,
        /// The URI.
        uri: String,
        /// `MODEL_URI` or `LABELS_URI`.
        var: &'static str,
        /// S3's answer.
        #[source]
        source: S3Error,
    },
    /// The object is larger than `MODEL_MAX_BYTES`.
    #[error("{what} {uri} is larger than MODEL_MAX_BYTES ({limit} bytes)")]
    TooLarge {
        /// "the model" or "the labels".
        what: &'static str,
        /// The URI.
        uri: String,
        /// `MODEL_MAX_BYTES`.
        limit: u64,
    },
    /// The downloaded model is not the one `MODEL_SHA256` names.
    #[error("the model {uri} does not match MODEL_SHA256: expected {expected}, downloaded {actual}")]
    Checksum {
        /// The URI.
        uri: String,
        /// `MODEL_SHA256`.
        expected: String,
        /// The download's SHA-256.
        actual: String,
    },
    /// The download directory cannot be made.
    #[error("cannot create the model download directory {0} (MODEL_DOWNLOAD_DIR)")]
    Dir(PathBuf, #[source] std::io::Error),
}

/// The local files of a fetched model.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The model file.
    pub model: PathBuf,
    /// The labels file, when `LABELS_URI` was given.
    pub labels: Option<PathBuf>,
}

/// Downloads the model (and labels) of `source` with an S3 client configured as `s3` says
/// (endpoint, path style).
pub async fn fetch(source: &ModelSource, s3: &S3Config) -> Result<Fetched, FetchError> {
    let t = Instant::now();
    std::fs::create_dir_all(&source.dir).map_err(|e| FetchError::Dir(source.dir.clone(), e))?;
    let store = S3Store::from_env(s3.clone()).await;
    // Each file arrives under a name of this process's own and is renamed into place once whole
    // (and checked): two processes sharing the directory never read each other's half file.
    let part = |path: &std::path::Path| path.with_extension(format!("{}.part", std::process::id()));
    let model = source.dir.join(safe_name(&source.uri, "model.onnx"));
    let (bytes, sha) = download(&store, &source.uri, "the model", "MODEL_URI", source.max_bytes, &part(&model)).await?;
    let actual = hex(&sha);
    if let Some(expected) = &source.sha256
        && *expected != actual
    {
        let _ = std::fs::remove_file(part(&model));
        return Err(FetchError::Checksum { uri: source.uri.to_string(), expected: expected.clone(), actual });
    }
    std::fs::rename(part(&model), &model).map_err(|e| FetchError::Dir(model.clone(), e))?;
    let labels = match &source.labels_uri {
        Some(uri) => {
            let path = source.dir.join(safe_name(uri, "labels.txt"));
            download(&store, uri, "the labels", "LABELS_URI", source.max_bytes, &part(&path)).await?;
            std::fs::rename(part(&path), &path).map_err(|e| FetchError::Dir(path.clone(), e))?;
            Some(path)
        }
        None => None,
    };
    tracing::info!(
        uri = %source.uri,
        bytes,
        sha256 = %actual,
        ms = crate::telemetry::ms_since(t),
        path = %model.display(),
        "model downloaded"
    );
    Ok(Fetched { model, labels })
}

async fn download(
    store: &S3Store,
    uri: &S3Uri,
    what: &'static str,
    var: &'static str,
    max_bytes: u64,
    dest: &std::path::Path,
) -> Result<(u64, [u8; 32]), FetchError> {
    store.download(&uri.bucket, &uri.key, uri.version_id.as_deref(), max_bytes, dest).await.map_err(|e| match e {
        S3Error::TooLarge { .. } => FetchError::TooLarge { what, uri: uri.to_string(), limit: max_bytes },
        source => FetchError::S3 { what, uri: uri.to_string(), var, source },
    })
}

/// The object's file name, if it is a plain one, else `fallback`: the model keeps its name (shown
/// by `/healthz`) but never a path of its own choosing.
fn safe_name(uri: &S3Uri, fallback: &str) -> String {
    let name = uri.file_name();
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 200
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ' | '+'));
    if plain { name.to_string() } else { fallback.to_string() }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_keep_plain_names_only() {
        let uri = |k: &str| S3Uri { bucket: "b".into(), key: k.into(), version_id: None };
        assert_eq!(safe_name(&uri("models/yolo11n.onnx"), "model.onnx"), "yolo11n.onnx");
        assert_eq!(safe_name(&uri("models/.."), "model.onnx"), "model.onnx");
        assert_eq!(safe_name(&uri("a/b\\c;rm"), "model.onnx"), "model.onnx");
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
    }
}
