//! The S3 upload trigger: `ObjectCreated:*` under `UPLOADS_PREFIX` → detect →
//! `RESULTS_PREFIX` + key + `.json`.
//!
//! Objects outside the uploads prefix (including the results this trigger writes) are ignored, so a
//! misconfigured notification cannot loop. Re-delivery rewrites the same result object.

use aws_lambda_events::s3::S3Event;
use serde::Serialize;

use crate::error::{Coded, excerpt};
use crate::results::{WriteError, detect_and_write, result_key};
use crate::s3::S3Error;

/// Why an S3 notification failed (Lambda then retries it).
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// S3 failed (reading the upload or writing its result), or is not configured.
    #[error(transparent)]
    S3(#[from] S3Error),
    /// The result could not be written.
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl Coded for TriggerError {
    fn code(&self) -> crate::error::ErrorCode {
        match self {
            TriggerError::S3(e) => e.code(),
            TriggerError::Write(e) => e.code(),
        }
    }
}

use crate::service::DetectService;

/// What one invocation did with each record.
#[derive(Debug, Default, Serialize)]
pub struct TriggerSummary {
    /// Objects detected and written.
    pub processed: Vec<Processed>,
    /// Records skipped, with the reason.
    pub ignored: Vec<Ignored>,
}

/// One processed object.
#[derive(Debug, Serialize)]
pub struct Processed {
    /// Bucket.
    pub bucket: String,
    /// Decoded object key.
    pub key: String,
    /// Where the result was written.
    pub result_key: String,
    /// Objects found.
    pub objects: usize,
    /// Error code when the object could not be detected on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One skipped record.
#[derive(Debug, Serialize)]
pub struct Ignored {
    /// Decoded object key (raw key when it does not decode).
    pub key: String,
    /// Why it was skipped.
    pub reason: String,
}

/// Decodes an S3 event key: `+` is a space, `%XX` an escaped byte.
pub fn decode_key(raw: &str) -> Result<String, std::str::Utf8Error> {
    let plus = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&plus).decode_utf8().map(|k| k.into_owned())
}

/// Handles an S3 notification. Per-object image problems are written into that object's result;
/// S3 failures fail the invocation so Lambda retries it (and then sends it to the on-failure destination).
pub async fn handle(service: &DetectService, event: S3Event) -> Result<TriggerSummary, TriggerError> {
    let s3 = service.s3().ok_or(S3Error::NotConfigured)?;
    let cfg = s3.config();
    let mut summary = TriggerSummary::default();
    for record in event.records {
        let raw_key = record.s3.object.key.clone().unwrap_or_default();
        let key = match decode_key(&raw_key) {
            Ok(k) => k,
            Err(e) => {
                let reason = format!("the key is not UTF-8 after decoding: {e}");
                summary.ignored.push(Ignored { key: excerpt(&raw_key), reason });
                continue;
            }
        };
        let event_name = record.event_name.clone().unwrap_or_default();
        let bucket = record.s3.bucket.name.clone().unwrap_or_default();
        let reason = if !event_name.starts_with("ObjectCreated:") {
            Some(format!("event {event_name:?} is not ObjectCreated"))
        } else if !key.starts_with(&cfg.uploads_prefix) {
            Some(format!("key is outside the uploads prefix {:?}", cfg.uploads_prefix))
        } else if !cfg.allowed_buckets.contains(&bucket) {
            Some(format!("bucket {bucket:?} is not allowed"))
        } else {
            None
        };
        if let Some(reason) = reason {
            tracing::info!(%bucket, key = %excerpt(&key), reason = %excerpt(&reason), "trigger record ignored");
            summary.ignored.push(Ignored { key, reason });
            continue;
        }

        // A deleted, oversized or unreadable upload gets a result saying so and is acknowledged;
        // other S3 failures fail the invocation (Lambda retries it).
        let out_key = result_key(&cfg.results_prefix, &key);
        let Some(written) = detect_and_write(service, &bucket, &key, out_key, None).await? else { continue };
        tracing::info!(%bucket, key = %excerpt(&key), result_key = %excerpt(&written.result_key), objects = written.objects, "trigger result written");
        summary.processed.push(Processed {
            bucket,
            key,
            result_key: written.result_key,
            objects: written.objects,
            error: written.error,
        });
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_url_decoded() {
        assert_eq!(decode_key("uploads/my+photo.jpg").unwrap(), "uploads/my photo.jpg");
        assert_eq!(decode_key("uploads/a%2Bb.jpg").unwrap(), "uploads/a+b.jpg");
        assert_eq!(decode_key("uploads/caf%C3%A9.jpg").unwrap(), "uploads/café.jpg");
        assert!(decode_key("uploads/%FF.jpg").is_err());
    }
}
