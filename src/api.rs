//! The wire format: request bodies, per-image results and timing, shared by every front door.

use serde::{Deserialize, Serialize};

use crate::detector::Outcome;
pub use crate::detector::postprocess::{BBox, Object};
use crate::error::{Coded, ErrorBody};

/// S3-keys mode: detect objects already uploaded to S3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Keys {
    /// Bucket to read (default `UPLOAD_BUCKET`); must be in `ALLOWED_BUCKETS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Object keys; each becomes one result named by its key.
    pub keys: Vec<String>,
}

/// Body of `POST /api/uploads`: the files to upload, each URL signed for exactly its size and type.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadsRequest {
    /// One entry per presigned PUT URL wanted.
    pub files: Vec<UploadFile>,
}

/// One file a presigned PUT is made for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadFile {
    /// Its size in bytes (at most `MAX_UPLOAD_BYTES`): the PUT must send exactly this many.
    pub size: u64,
    /// Its content type (`image/jpeg`, `image/png` or `image/webp`): the PUT must send it.
    #[serde(default = "default_upload_type")]
    pub content_type: String,
}

fn default_upload_type() -> String {
    "image/jpeg".into()
}

/// Response of `POST /api/uploads`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadsResponse {
    /// Bucket the URLs point into.
    pub bucket: String,
    /// One presigned PUT per requested image.
    pub uploads: Vec<Upload>,
}

/// One presigned upload slot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Upload {
    /// Object key to send to `/api/detect` afterwards.
    pub key: String,
    /// Presigned PUT URL (send the same `Content-Type`).
    pub url: String,
    /// Seconds the URL stays valid.
    pub expires_in: u64,
    /// Headers the PUT must send exactly as given (they are signed): content type and length.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// The result for one image. On a per-image failure `error` is set and `objects` is empty.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageResult {
    /// The name sent with the image, `image-<i>`, or the S3 key.
    pub name: String,
    /// Width after EXIF orientation (null when the image could not be read).
    pub width: Option<u32>,
    /// Height after EXIF orientation (null when the image could not be read).
    pub height: Option<u32>,
    /// Detections, best first.
    pub objects: Vec<Object>,
    /// Time in `session.run` for this image.
    pub inference_ms: f64,
    /// Decode + preprocess time for this image.
    #[serde(default)]
    pub decode_ms: f64,
    /// Head, NMS, mapping back and the task's masks, keypoints or rotated boxes for this image.
    #[serde(default)]
    pub postprocess_ms: f64,
    /// Why this image has no detections, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl ImageResult {
    /// One image's outcome as its result: detections, or the error with empty objects.
    pub fn of<E: Coded>(name: String, outcome: Outcome<E>) -> ImageResult {
        let decode_ms = outcome.times.decode_ms + outcome.times.preprocess_ms;
        let (width, height, objects, error) = match outcome.result {
            Ok(d) => (Some(d.width), Some(d.height), d.objects, None),
            Err(e) => (None, None, vec![], Some(e.body())),
        };
        let (inference_ms, postprocess_ms) =
            if error.is_none() { (outcome.times.inference_ms, outcome.times.postprocess_ms) } else { (0.0, 0.0) };
        ImageResult { name, width, height, objects, inference_ms, decode_ms, postprocess_ms, error }
    }
}

/// Per-request timing, in milliseconds (also sent as a `Server-Timing` header).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timing {
    /// Request body size in bytes (the "payload size" of the original study).
    pub payload_bytes: u64,
    /// Time to receive the body from the client.
    pub receive_ms: f64,
    /// Time to fetch S3 objects (S3-keys mode only; overlaps with inference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_fetch_ms: Option<f64>,
    /// Sum over images of base64 + image decode + resize.
    pub decode_ms: f64,
    /// Sum over images of `session.run` time.
    pub inference_ms_total: f64,
    /// `inference_ms_total / images`.
    pub avg_inference_ms: f64,
    /// Wall time of the request inside the server, receive included.
    pub total_ms: f64,
}

impl Timing {
    /// The timing of a response with these results: the per-image times summed (decode_ms
    /// includes preprocessing, as each result's does), the rest as measured by the caller. The
    /// one place a `Timing` is put together (the service, the trigger, a client merging answers).
    pub fn of(
        results: &[ImageResult],
        payload_bytes: u64,
        receive_ms: f64,
        s3_fetch_ms: Option<f64>,
        total_ms: f64,
    ) -> Timing {
        let inference_ms_total: f64 = results.iter().map(|r| r.inference_ms).sum();
        Timing {
            payload_bytes,
            receive_ms,
            s3_fetch_ms,
            decode_ms: results.iter().map(|r| r.decode_ms).sum(),
            inference_ms_total,
            avg_inference_ms: inference_ms_total / results.len().max(1) as f64,
            total_ms,
        }
    }

    /// The `Server-Timing` header value for these stages.
    pub fn server_timing_header(&self) -> String {
        let mut parts = vec![format!("receive;dur={:.2}", self.receive_ms)];
        if let Some(s3) = self.s3_fetch_ms {
            parts.push(format!("s3;dur={s3:.2}"));
        }
        parts.push(format!("decode;dur={:.2}", self.decode_ms));
        parts.push(format!("inference;dur={:.2}", self.inference_ms_total));
        parts.push(format!("total;dur={:.2}", self.total_ms));
        parts.join(", ")
    }
}

/// Response of `POST /api/detect` (and the output of `objdet detect`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectResponse {
    /// One result per image, in request order.
    pub results: Vec<ImageResult>,
    /// Where the time went.
    pub timing: Timing,
}

/// The result document the S3 trigger and the bulk handler write to `results/<key>.json`
/// (`results::detect_and_write`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultDocument {
    /// Bucket of the uploaded object.
    pub bucket: String,
    /// Key of the uploaded object.
    pub key: String,
    /// Same schema as one entry of `DetectResponse::results`.
    pub result: ImageResult,
    /// Timing of this detection.
    pub timing: Timing,
    /// The ETag of the object detected on (bulk runs: a result naming the current ETag is not redone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_etag: Option<String>,
}
