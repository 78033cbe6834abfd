//! The service's errors: [`ImageError`] for one image of a request, [`RequestError`] for a
//! whole request, [`StartupError`] for the service's start.
//!
//! Nothing here knows of HTTP or Lambda: the HTTP status is chosen by `server`, the Lambda
//! diagnostic by `lambda`, from each error's [`Coded::code`].

use crate::config::ConfigError;
use crate::detector::error::{DetectError, LoadError};
use crate::error::{BoxError, Coded, ErrorCode, excerpt};
use crate::s3::S3Error;

/// Why one image of a request has no detections: the detector's reason, or the service's (its
/// S3 object could not be read, the request's deadline passed first).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Decoding or inference failed, or the image is over a pixel limit.
    #[error(transparent)]
    Detect(#[from] DetectError),
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
}

impl Coded for ImageError {
    fn code(&self) -> ErrorCode {
        match self {
            ImageError::Detect(e) => e.code(),
            ImageError::DeadlineExceeded { .. } => ErrorCode::DeadlineExceeded,
            ImageError::Fetch(e) => e.code(),
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
    /// The detector cannot start (ONNX Runtime, the model, threads).
    #[error(transparent)]
    Load(#[from] LoadError),
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
}

impl Coded for StartupError {
    fn code(&self) -> ErrorCode {
        match self {
            StartupError::Config(_) => ErrorCode::InvalidConfig,
            _ => ErrorCode::StartupFailed,
        }
    }
}
