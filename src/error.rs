//! objdet's errors, one type per layer, each keeping its cause:
//!
//! - [`ImageError`]: one image could not be detected on; it becomes that image's `error` and the
//!   other images of the batch go on;
//! - [`RequestError`]: a whole request is refused (its HTTP status is chosen by the HTTP front
//!   door, `server`, and its Lambda diagnostic by `lambda`: nothing here knows of either);
//! - [`StartupError`]: the service cannot start (configuration, model, ONNX Runtime);
//! - [`S3Error`](crate::s3::S3Error) and [`ConfigError`](crate::config::ConfigError) belong to their modules.
//!
//! Every client-facing error has a stable `code` ([`Coded`]); its message is its `Display`, which
//! names what went wrong without the cause's internals (an SDK's error chain, a path): those are
//! in [`std::error::Error::source`], for logs ([`chain`]).

use serde::Serialize;

use crate::config::ConfigError;
use crate::detector::decode::Limits;
use crate::s3::S3Error;

/// A boxed error kept as a cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The stable machine-readable codes clients switch on (`{"error": {"code", ...}}`, an image's
/// `error.code`, a Lambda invocation's `errorType`). A front door maps each to its own signal
/// (the HTTP status: `server::status`) with an exhaustive match, so a new code cannot slip
/// through as a 500 unnoticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// An image's base64 text does not decode.
    InvalidBase64,
    /// The bytes are not an image objdet reads.
    NotAnImage,
    /// The image data is cut short or corrupt.
    TruncatedImage,
    /// The image is over `MAX_PIXELS` or `MAX_IMAGE_SIDE`.
    ImageTooLarge,
    /// The request's images together are over `MAX_REQUEST_PIXELS`.
    PixelBudgetExceeded,
    /// The request's deadline passed before this image was done.
    DeadlineExceeded,
    /// ONNX Runtime failed, or the model's output does not fit its format.
    InferenceFailed,
    /// A bug or a stopped part of the service.
    InternalError,
    /// The body is not the JSON the endpoint expects.
    InvalidJson,
    /// Well-formed, but asks for something impossible (or the body broke off).
    InvalidRequest,
    /// No image in the request.
    NoImages,
    /// `names` does not have one name per image.
    NamesMismatch,
    /// A `Content-Type` the endpoint does not take.
    UnsupportedMediaType,
    /// A body, upload or object over its limit.
    PayloadTooLarge,
    /// More images than `MAX_IMAGES`.
    TooManyImages,
    /// The body stalled or the request ran past its deadline.
    RequestTimeout,
    /// The configuration is invalid.
    InvalidConfig,
    /// The service could not start.
    StartupFailed,
    /// S3 keys were sent but no bucket is configured.
    S3NotConfigured,
    /// The bucket is not in `ALLOWED_BUCKETS`.
    BucketNotAllowed,
    /// The key is outside `S3_READ_PREFIX`.
    KeyNotAllowed,
    /// No such S3 object.
    NotFound,
    /// S3 refused the read.
    AccessDenied,
    /// An S3 call failed.
    S3Error,
    /// No route for the method and path.
    RouteNotFound,
    /// The route exists, not for this method.
    MethodNotAllowed,
    /// No bearer token, or not the server's.
    Unauthorized,
}

impl ErrorCode {
    /// Every code, for exhaustive tests.
    pub const ALL: [ErrorCode; 27] = {
        use ErrorCode::*;
        [
            InvalidBase64,
            NotAnImage,
            TruncatedImage,
            ImageTooLarge,
            PixelBudgetExceeded,
            DeadlineExceeded,
            InferenceFailed,
            InternalError,
            InvalidJson,
            InvalidRequest,
            NoImages,
            NamesMismatch,
            UnsupportedMediaType,
            PayloadTooLarge,
            TooManyImages,
            RequestTimeout,
            InvalidConfig,
            StartupFailed,
            S3NotConfigured,
            BucketNotAllowed,
            KeyNotAllowed,
            NotFound,
            AccessDenied,
            S3Error,
            RouteNotFound,
            MethodNotAllowed,
            Unauthorized,
        ]
    };

    /// The code as clients see it.
    pub const fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidBase64 => "invalid_base64",
            NotAnImage => "not_an_image",
            TruncatedImage => "truncated_image",
            ImageTooLarge => "image_too_large",
            PixelBudgetExceeded => "pixel_budget_exceeded",
            DeadlineExceeded => "deadline_exceeded",
            InferenceFailed => "inference_failed",
            InternalError => "internal_error",
            InvalidJson => "invalid_json",
            InvalidRequest => "invalid_request",
            NoImages => "no_images",
            NamesMismatch => "names_mismatch",
            UnsupportedMediaType => "unsupported_media_type",
            PayloadTooLarge => "payload_too_large",
            TooManyImages => "too_many_images",
            RequestTimeout => "request_timeout",
            InvalidConfig => "invalid_config",
            StartupFailed => "startup_failed",
            S3NotConfigured => "s3_not_configured",
            BucketNotAllowed => "bucket_not_allowed",
            KeyNotAllowed => "key_not_allowed",
            NotFound => "not_found",
            AccessDenied => "access_denied",
            S3Error => "s3_error",
            RouteNotFound => "route_not_found",
            MethodNotAllowed => "method_not_allowed",
            Unauthorized => "unauthorized",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An error with a stable machine-readable code, sent to clients as `{"code", "message"}`.
pub trait Coded: std::error::Error {
    /// The stable code clients switch on.
    fn code(&self) -> ErrorCode;

    /// The message fit to send or log: cut at [`MAX_MESSAGE_CHARS`], control characters escaped,
    /// whatever client input it quotes.
    fn message(&self) -> String {
        excerpt_to(&self.to_string(), MAX_MESSAGE_CHARS)
    }

    /// The `{"code", "message"}` body of this error.
    fn body(&self) -> ErrorBody {
        ErrorBody { code: self.code().as_str().to_string(), message: self.message() }
    }
}

/// Why one image has no detections.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The base64 text is not UTF-8.
    #[error("invalid base64: not UTF-8 text")]
    Base64NotText(#[source] std::str::Utf8Error),
    /// The base64 text is empty.
    #[error("invalid base64: empty string")]
    Base64Empty,
    /// The base64 text does not decode.
    #[error("invalid base64: {0}")]
    Base64(#[source] base64::DecodeError),
    /// No data at all.
    #[error("not a supported image ({}): empty data", crate::detector::decode::FORMAT_NAMES)]
    Empty,
    /// An image format objdet does not read.
    #[error("not a supported image: {format} images are not supported")]
    UnsupportedFormat {
        /// The format the bytes are in.
        format: String,
    },
    /// Bytes of no known image format.
    #[error("not a supported image: unrecognised data (expected {})", crate::detector::decode::FORMAT_NAMES)]
    Unrecognised,
    /// The header cannot be read.
    #[error("not a supported image: {0}")]
    Header(#[source] BoxError),
    /// A header of zero width or height.
    #[error("not a supported image: image has no pixels ({width}x{height})")]
    NoPixels {
        /// Claimed width.
        width: u32,
        /// Claimed height.
        height: u32,
    },
    /// The image ends before its data does.
    #[error("truncated or corrupt image data: {0}")]
    Truncated(#[source] BoxError),
    /// The JPEG's scan data cannot be the frame its header claims (see `decode::check_jpeg_scan` and `detector::jpeg_scan`).
    #[error("truncated or corrupt image data: {reason}")]
    TruncatedScan {
        /// What the bytes lack.
        reason: String,
    },
    /// The header claims more pixels than `MAX_PIXELS`, or a side over `MAX_IMAGE_SIDE`.
    #[error(
        "image of {width}x{height} pixels exceeds the limits ({} pixels, {} per side)",
        limits.max_pixels,
        limits.max_side
    )]
    TooLarge {
        /// Claimed width (0 when the decoder refused before telling).
        width: u32,
        /// Claimed height.
        height: u32,
        /// The limits in effect.
        limits: Limits,
    },
    /// The request's images together claim more pixels than `MAX_REQUEST_PIXELS`.
    #[error("the request's images exceed its budget of {budget} pixels in total; send the rest in another request")]
    PixelBudgetExceeded {
        /// `MAX_REQUEST_PIXELS`.
        budget: u64,
    },
    /// The request's deadline passed before this image was detected (the others that were are
    /// answered).
    #[error(
        "the request's deadline ({secs} s) passed before this image was detected; send it again, or in a smaller batch"
    )]
    DeadlineExceeded {
        /// The deadline, in seconds from the request's start.
        secs: f64,
    },
    /// The image's S3 object could not be read.
    #[error(transparent)]
    Fetch(#[from] S3Error),
    /// Resizing failed (a bug: the buffers are sized by the decoder).
    #[error("internal error: resizing failed")]
    Resize(#[source] BoxError),
    /// ONNX Runtime failed while running the model.
    #[error("inference failed")]
    Inference(#[source] ort::Error),
    /// The model's output lacks a tensor its head reads.
    #[error("inference failed: the model returned no {0}")]
    NoOutput(String),
    /// An output does not have the shape or element type its head reads.
    #[error("inference failed: the model's output does not fit its format")]
    Output(#[source] BoxError),
    /// The worker that held the image stopped (it panicked).
    #[error("internal error: the inference worker stopped")]
    WorkerStopped,
    /// The image decoder panicked (caught; the worker goes on).
    #[error("internal error: the image decoder panicked")]
    DecoderPanicked,
}

impl Coded for ImageError {
    fn code(&self) -> ErrorCode {
        use ImageError::*;
        match self {
            Base64NotText(_) | Base64Empty | Base64(_) => ErrorCode::InvalidBase64,
            Empty | UnsupportedFormat { .. } | Unrecognised | Header(_) | NoPixels { .. } => ErrorCode::NotAnImage,
            Truncated(_) | TruncatedScan { .. } => ErrorCode::TruncatedImage,
            TooLarge { .. } => ErrorCode::ImageTooLarge,
            PixelBudgetExceeded { .. } => ErrorCode::PixelBudgetExceeded,
            DeadlineExceeded { .. } => ErrorCode::DeadlineExceeded,
            Fetch(e) => e.code(),
            Inference(_) | NoOutput(_) | Output(_) => ErrorCode::InferenceFailed,
            Resize(_) | WorkerStopped | DecoderPanicked => ErrorCode::InternalError,
        }
    }
}

/// Why a whole request is refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The body is not the JSON the endpoint expects.
    #[error("invalid JSON body: {reason}")]
    InvalidJson {
        /// What is wrong, client input quoted in excerpts only.
        reason: String,
        /// The parser's error, when a parser found it.
        #[source]
        source: Option<serde_json::Error>,
    },
    /// The request is well-formed but asks for something impossible.
    #[error("{0}")]
    Invalid(String),
    /// No image in the request.
    #[error("the request contains no images")]
    NoImages,
    /// `names` is present but does not have one name per image.
    #[error("got {names} names for {images} images")]
    NamesMismatch {
        /// Images in the request.
        images: usize,
        /// Names in the request.
        names: usize,
    },
    /// The `Content-Type` is not one the endpoint accepts.
    #[error("unsupported Content-Type {0:?}: send application/json or a JPEG, PNG or WebP image")]
    UnsupportedMediaType(String),
    /// The body is larger than the front door's limit.
    #[error(
        "request body exceeds the {limit}-byte limit; for large batches upload the images to S3 \
         (POST /api/uploads for presigned URLs) and send their S3 keys instead"
    )]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A presigned upload asked for a file over `MAX_UPLOAD_BYTES`, or for more than
    /// `MAX_UPLOAD_BATCH_BYTES` in one call.
    #[error("{what} of {size} bytes exceeds the limit of {limit} bytes")]
    UploadTooLarge {
        /// "a file" or "the files together".
        what: &'static str,
        /// Bytes asked for.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// More images than `MAX_IMAGES`.
    #[error("{count} images exceed the limit of {limit} per request")]
    TooManyImages {
        /// Images (so far) in the request.
        count: usize,
        /// `MAX_IMAGES`.
        limit: usize,
    },
    /// The body stalled for `BODY_TIMEOUT_SECS`.
    #[error("the request body stalled (BODY_TIMEOUT_SECS)")]
    BodyStalled,
    /// The body could not be read (the connection broke).
    #[error("could not read the request body")]
    BodyBroken(#[source] BoxError),
    /// The request did not complete within its deadline.
    #[error("the request did not complete within {secs} s (REQUEST_TIMEOUT_SECS)")]
    TimedOut {
        /// The deadline in seconds.
        secs: f64,
    },
    /// An S3 step of the request failed (bucket or key refused, presigning, ...).
    #[error(transparent)]
    S3(#[from] S3Error),
    /// The request's handler panicked, or a part of the service it needs has stopped.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl Coded for RequestError {
    fn code(&self) -> ErrorCode {
        use RequestError::*;
        match self {
            InvalidJson { .. } => ErrorCode::InvalidJson,
            Invalid(_) | BodyBroken(_) => ErrorCode::InvalidRequest,
            NoImages => ErrorCode::NoImages,
            NamesMismatch { .. } => ErrorCode::NamesMismatch,
            UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            PayloadTooLarge { .. } | UploadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            TooManyImages { .. } => ErrorCode::TooManyImages,
            BodyStalled | TimedOut { .. } => ErrorCode::RequestTimeout,
            S3(e) => e.code(),
            Internal(_) => ErrorCode::InternalError,
        }
    }
}

impl RequestError {
    /// An [`RequestError::InvalidJson`] the scanner found (no parser error behind it).
    pub fn json(reason: impl Into<String>) -> Self {
        RequestError::InvalidJson { reason: reason.into(), source: None }
    }

    /// An [`RequestError::InvalidJson`] from `serde_json`, its message quoted in an excerpt.
    pub fn json_from(context: &str, e: serde_json::Error) -> Self {
        RequestError::InvalidJson { reason: format!("{context}{}", excerpt(&e.to_string())), source: Some(e) }
    }
}

/// Why the service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A configuration value is malformed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The ONNX Runtime library is missing or cannot be loaded.
    #[error("ONNX Runtime: {reason}")]
    Runtime {
        /// What is missing.
        reason: String,
        /// ORT's error, when it gave one (shared: the environment is loaded once per process).
        #[source]
        source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// The model file cannot be loaded.
    #[error("cannot load the model {path} (MODEL_PATH)")]
    Model {
        /// The model file.
        path: std::path::PathBuf,
        /// Why (missing file, ORT's error).
        #[source]
        source: BoxError,
    },
    /// Session or run options were refused by ORT.
    #[error("ONNX Runtime refused the {what}")]
    Options {
        /// Which options.
        what: &'static str,
        /// ORT's error.
        #[source]
        source: ort::Error,
    },
    /// The model object (`MODEL_URI`) could not be fetched.
    #[error(transparent)]
    ModelFetch(#[from] crate::model_source::FetchError),
    /// The model fetched from `MODEL_URI` cannot be used.
    #[error("the model {uri} (MODEL_URI) cannot be used")]
    FromUri {
        /// The URI.
        uri: String,
        /// Why.
        #[source]
        source: Box<StartupError>,
    },
    /// The model is not a detector objdet can run, or its settings contradict it.
    #[error("cannot run the model {path} as a detector (MODEL_PATH)")]
    Spec {
        /// The model file.
        path: std::path::PathBuf,
        /// What does not fit.
        #[source]
        source: crate::detector::spec::SpecError,
    },
    /// The optimized-graph cache cannot be written (the caller then runs without it).
    #[error("cannot write the optimized-graph cache (ORT_OPTIMIZED_MODEL_PATH)")]
    Cache(#[source] std::io::Error),
    /// A worker thread could not be started.
    #[error("cannot start a worker thread")]
    Thread(#[source] std::io::Error),
    /// The warm-up run (`ORT_WARMUP`) failed.
    #[error("the warm-up run failed")]
    Warmup(#[source] ImageError),
    /// A thread exited (panicked) while loading the model.
    #[error("the {0} thread exited while loading the model")]
    ThreadExited(&'static str),
}

impl Coded for StartupError {
    fn code(&self) -> ErrorCode {
        match self {
            StartupError::Config(_) => ErrorCode::InvalidConfig,
            _ => ErrorCode::StartupFailed,
        }
    }
}

/// `e` and its causes, `: `-separated, for logs (never for clients).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    excerpt_to(&out, 4 * MAX_MESSAGE_CHARS)
}

/// Longest error message sent to a client or logged, in characters.
pub const MAX_MESSAGE_CHARS: usize = 400;

/// Longest piece of client input quoted in a message or a log line, in characters.
pub const MAX_EXCERPT_CHARS: usize = 64;

/// Client input fit to quote in a message or a log line: at most [`MAX_EXCERPT_CHARS`]
/// characters, control characters (newlines, ESC, ...) escaped, a note of the full length when cut.
pub fn excerpt(input: &str) -> String {
    excerpt_to(input, MAX_EXCERPT_CHARS)
}

fn excerpt_to(input: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(input.len().min(max_chars * 2));
    for (i, c) in input.chars().enumerate() {
        if i == max_chars {
            out.push_str(&format!("… ({} bytes in all)", input.len()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The serialized form of an error: `{"code": "...", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `not_an_image`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

/// The envelope of a failed request: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ErrorResponse {
    /// What went wrong.
    pub error: ErrorBody,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_own_snake_case_name() {
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert!(
            names.iter().all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')),
            "{names:?}"
        );
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        assert_eq!(serde_json::to_string(&ErrorCode::TruncatedImage).unwrap(), "\"truncated_image\"");
    }

    #[test]
    fn a_cause_is_kept_but_not_shown() {
        let io = std::io::Error::other("disk on fire at /secret/path");
        let source = crate::detector::spec::SpecError::Labels { path: "labels.txt".into(), source: io };
        let e = StartupError::Spec { path: "model.onnx".into(), source };
        assert!(!e.message().contains("/secret/path"), "{}", e.message());
        assert!(std::error::Error::source(&e).is_some());
        assert!(chain(&e).contains("/secret/path"), "{}", chain(&e));
    }
}
