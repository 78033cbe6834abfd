//! The one writer of result documents: the S3 upload trigger and the bulk handler both detect on
//! an object and write what was found to `RESULTS_PREFIX` + key + `.json` with [`detect_and_write`].

use crate::api::{DetectResponse, ResultDocument};
use crate::error::{Coded, ErrorCode};
use crate::s3::S3Error;
use crate::service::DetectService;

/// S3 user metadata on a result object: the ETag of the object it was made from.
pub const SOURCE_ETAG_METADATA: &str = "source-etag";

/// Why a result could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// S3 failed (reading the object or writing its result), or is not configured.
    #[error(transparent)]
    S3(#[from] S3Error),
    /// The result document could not be encoded (a bug).
    #[error("cannot encode the result document")]
    Encode(#[source] serde_json::Error),
}

impl Coded for WriteError {
    fn code(&self) -> ErrorCode {
        match self {
            WriteError::S3(e) => e.code(),
            WriteError::Encode(_) => ErrorCode::InternalError,
        }
    }
}

/// What was written for one object.
#[derive(Debug, Clone)]
pub struct Written {
    /// The result object's key.
    pub result_key: String,
    /// Objects found.
    pub objects: usize,
    /// The image's error code, when it could not be detected on (the document says why).
    pub error: Option<String>,
}

/// The result object key for an object key: `RESULTS_PREFIX` + key + `.json`, or, when that would
/// pass S3's 1,024-byte key limit, `RESULTS_PREFIX` + `_long/` + the key's SHA-256 + `.json`
/// (the document names its key either way).
pub fn result_key(results_prefix: &str, key: &str) -> String {
    let plain = format!("{results_prefix}{key}.json");
    if plain.len() <= crate::s3::MAX_KEY_BYTES {
        return plain;
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{results_prefix}_long/{hex}.json")
}

/// Detects on `bucket`/`key` and writes its [`ResultDocument`] to `result_key` (with the source's
/// ETag as metadata when known). A deleted, oversized or unreadable object gets a document saying
/// so; other S3 failures are errors (the caller's invocation is retried).
pub async fn detect_and_write(
    service: &DetectService,
    bucket: &str,
    key: &str,
    result_key: String,
    source_etag: Option<String>,
) -> Result<Option<Written>, WriteError> {
    let s3 = service.s3().ok_or(S3Error::NotConfigured)?;
    let DetectResponse { mut results, timing } = service.detect_object(bucket, key).await?;
    let Some(result) = results.pop() else { return Ok(None) }; // one result per object, always
    let written =
        Written { result_key, objects: result.objects.len(), error: result.error.as_ref().map(|e| e.code.clone()) };
    let doc = ResultDocument { bucket: bucket.to_string(), key: key.to_string(), result, timing, source_etag };
    let body = serde_json::to_vec_pretty(&doc).map_err(WriteError::Encode)?;
    let metadata: Vec<(&str, &str)> =
        doc.source_etag.as_deref().map(|e| (SOURCE_ETAG_METADATA, e)).into_iter().collect();
    s3.put_json_with_metadata(bucket, &written.result_key, body, &metadata).await?;
    Ok(Some(written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_keys_get_a_hashed_result_key() {
        assert_eq!(result_key("results/", "uploads/a.jpg"), "results/uploads/a.jpg.json");
        let longest = format!("uploads/{}", "k".repeat(1024 - "results/uploads/.json".len()));
        assert_eq!(result_key("results/", &longest).len(), 1024);
        let long = format!("uploads/{}", "é".repeat(508));
        let hashed = result_key("results/", &long);
        assert!(hashed.starts_with("results/_long/") && hashed.len() < 100, "{hashed}");
        assert_ne!(hashed, result_key("results/", &format!("{long}x")));
    }
}
