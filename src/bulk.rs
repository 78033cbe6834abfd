//! Bulk detection: one batch of keys from Step Functions' Distributed Map (or a single item) →
//! `results/<key>.json` for each, in the trigger's format plus the source object's ETag.
//!
//! Idempotent and resumable: a key whose result already names the same source ETag is skipped, so
//! re-running a prefix after a partial failure only does the missing work. An object that cannot
//! be detected on (not an image, too large, gone) gets an error result and does not fail the
//! batch; an S3 failure retrying may mend fails it, so that Step Functions retries the batch.

use std::collections::BTreeMap;
use std::time::Instant;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::excerpt;
use crate::results::{SOURCE_ETAG_METADATA, WriteError, detect_and_write, result_key};
use crate::s3::{S3Error, normalize_etag};
use crate::service::DetectService;
use crate::telemetry::ms_since;

/// What the bulk function is invoked with: a Distributed Map batch (with `ItemBatcher`), or one
/// item (without it).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum BulkEvent {
    /// `{"Items": [...], "BatchInput": {"bucket": ...}}`.
    Batch {
        /// The objects of this batch, as `s3:listObjectsV2` lists them.
        #[serde(rename = "Items")]
        items: Vec<Item>,
        /// What every item of the batch shares.
        #[serde(rename = "BatchInput", default)]
        batch_input: BatchInput,
    },
    /// One object, as `s3:listObjectsV2` lists it (its bucket from `bucket` or `UPLOAD_BUCKET`).
    Item(Item),
}

/// The part of a batch every item shares.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct BatchInput {
    /// The bucket the items are in (default `UPLOAD_BUCKET`).
    #[serde(default)]
    pub bucket: Option<String>,
}

/// One listed object.
#[derive(Debug, Clone, Deserialize)]
pub struct Item {
    /// Its key.
    #[serde(rename = "Key")]
    pub key: String,
    /// Its size in bytes, as listed.
    #[serde(rename = "Size", default)]
    pub size: Option<u64>,
    /// Its ETag, as listed (with or without the quotes S3 puts around it).
    #[serde(rename = "ETag", default)]
    pub etag: Option<String>,
    /// Its bucket, for a single item.
    #[serde(default)]
    pub bucket: Option<String>,
}

/// What one batch did (it lands in the Distributed Map's ResultWriter manifest).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BatchSummary {
    /// Items of the batch.
    pub items: usize,
    /// Detected, and their results written.
    pub processed: usize,
    /// Whose result already named the same source ETag.
    pub skipped: usize,
    /// Written with an error result, by error code (`not_an_image`, `payload_too_large`, ...).
    pub failed: BTreeMap<String, usize>,
    /// Not objects to detect (folder markers, keys under the results prefix, other buckets).
    pub ignored: usize,
    /// Wall time of the batch.
    pub ms: f64,
}

/// What became of one item.
enum Done {
    Processed,
    Skipped,
    Failed(String),
    Ignored,
}

/// Detects every item of `event`, at most `2 × sessions` at once; `Err` on an S3 failure retrying
/// may mend (Step Functions then retries the batch; the items already done are skipped).
pub async fn handle(service: &DetectService, event: BulkEvent) -> Result<BatchSummary, WriteError> {
    let start = Instant::now();
    let s3 = service.s3().ok_or(S3Error::NotConfigured)?;
    let (items, shared) = match event {
        BulkEvent::Batch { items, batch_input } => (items, batch_input.bucket),
        BulkEvent::Item(item) => (vec![item.clone()], item.bucket),
    };
    let default_bucket = shared.or_else(|| s3.config().upload_bucket.clone()).ok_or(S3Error::NotConfigured)?;
    let parallel = 2 * service.detector().sessions();
    let done: Vec<Result<Done, WriteError>> = futures::stream::iter(items.iter())
        .map(|item| {
            let bucket = item.bucket.clone().unwrap_or_else(|| default_bucket.clone());
            async move { one(service, &bucket, item).await }
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    let mut summary = BatchSummary { items: items.len(), ..Default::default() };
    for d in done {
        match d? {
            Done::Processed => summary.processed += 1,
            Done::Skipped => summary.skipped += 1,
            Done::Ignored => summary.ignored += 1,
            Done::Failed(code) => {
                summary.processed += 1;
                *summary.failed.entry(code).or_default() += 1;
            }
        }
    }
    summary.ms = ms_since(start);
    tracing::info!(
        items = summary.items,
        processed = summary.processed,
        skipped = summary.skipped,
        failed = summary.failed.values().sum::<usize>(),
        ms = summary.ms,
        "bulk batch"
    );
    Ok(summary)
}

async fn one(service: &DetectService, bucket: &str, item: &Item) -> Result<Done, WriteError> {
    let Some(s3) = service.s3() else { return Err(S3Error::NotConfigured.into()) };
    let cfg = s3.config();
    let key = item.key.as_str();
    // Folder markers, keys outside S3_READ_PREFIX (our own results among them) and buckets this
    // deployment may not read are not inputs.
    let readable = key.starts_with(&cfg.read_prefix) && !key.starts_with(&cfg.results_prefix);
    if key.ends_with('/') || !readable || !cfg.allowed_buckets.iter().any(|b| b == bucket) {
        tracing::info!(bucket, key = %excerpt(key), "bulk item ignored");
        return Ok(Done::Ignored);
    }
    let out_key = result_key(&cfg.results_prefix, key);
    let etag = match &item.etag {
        Some(e) => Some(normalize_etag(e)),
        None => s3.etag(bucket, key).await?,
    };
    if let Some(etag) = &etag
        && s3.metadata(bucket, &out_key, SOURCE_ETAG_METADATA).await?.as_deref() == Some(etag.as_str())
    {
        return Ok(Done::Skipped);
    }
    Ok(match detect_and_write(service, bucket, key, out_key, etag).await? {
        None => Done::Ignored,
        Some(written) => written.error.map_or(Done::Processed, Done::Failed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_event_shapes_parse() {
        let batch: BulkEvent = serde_json::from_str(
            r#"{"Items": [{"Key": "a/b.jpg", "Size": 5, "ETag": "\"e1\"", "LastModified": "x"}], "BatchInput": {"bucket": "b"}}"#,
        )
        .unwrap();
        assert!(
            matches!(batch, BulkEvent::Batch { ref items, ref batch_input } if items.len() == 1 && batch_input.bucket.as_deref() == Some("b"))
        );
        let item: BulkEvent =
            serde_json::from_str(r#"{"Key": "a/b.jpg", "ETag": "\"e1\"", "StorageClass": "STANDARD"}"#).unwrap();
        assert!(matches!(item, BulkEvent::Item(Item { ref key, .. }) if key == "a/b.jpg"));
        assert_eq!(normalize_etag("\"e1\""), "e1");
    }
}
