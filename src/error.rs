//! The one error type of objdet: every failure has a stable `code`, an HTTP status and a message.
//!
//! Whole-request errors become `{"error": {"code", "message"}}` with their status; per-image errors
//! become the `error` field of that image's result while the other images still succeed.

use axum::http::StatusCode;
use serde::Serialize;

/// Everything that can go wrong, from start-up to a single image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- whole request -------------------------------------------------------------------
    /// The body is not the JSON the endpoint expects.
    #[error("invalid JSON body: {0}")]
    InvalidJson(String),
    /// The request is well-formed JSON but asks for something impossible.
    #[error("{0}")]
    InvalidRequest(String),
    /// No image in the request.
    #[error("the request contains no images")]
    NoImages,
    /// `names` is present but does not have one name per image.
    #[error("got {names} names for {images} images")]
    NamesMismatch { images: usize, names: usize },
    /// The `Content-Type` is not one the endpoint accepts.
    #[error("unsupported Content-Type {0:?}: send application/json or a JPEG, PNG or WebP image")]
    UnsupportedMediaType(String),
    /// The body is larger than the configured limit.
    #[error(
        "request body exceeds the {limit}-byte limit; for large batches upload the images to S3 \
         (POST /api/uploads for presigned URLs) and send their S3 keys instead"
    )]
    PayloadTooLarge { limit: usize },
    /// More images than `MAX_IMAGES`.
    #[error("{count} images exceed the limit of {limit} per request")]
    TooManyImages { count: usize, limit: usize },
    /// S3 mode asked for a key it may not read (outside `S3_READ_PREFIX`, or not a plain key).
    #[error("key {key:?} may not be read: S3-keys requests read keys under {prefix:?} (no `.` or `..` segments)")]
    KeyNotAllowed { key: String, prefix: String },
    /// The request took longer than `REQUEST_TIMEOUT_SECS`, or its body stalled for `BODY_TIMEOUT_SECS`.
    #[error("{0}")]
    RequestTimeout(String),
    /// S3 mode asked for a bucket outside `ALLOWED_BUCKETS`.
    #[error("bucket {0:?} is not allowed")]
    BucketNotAllowed(String),
    /// S3 mode or uploads used while no S3 bucket is configured.
    #[error("S3 is not configured on this deployment (set UPLOAD_BUCKET)")]
    S3NotConfigured,
    /// No such route.
    #[error("no route for {0}")]
    RouteNotFound(String),
    /// The route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,

    // ---- one image -----------------------------------------------------------------------
    /// The image's base64 text does not decode.
    #[error("invalid base64: {0}")]
    InvalidBase64(String),
    /// The bytes are not a JPEG, PNG or WebP image.
    #[error("not a supported image (JPEG, PNG or WebP): {0}")]
    NotAnImage(String),
    /// The image ends before its data does.
    #[error("truncated or corrupt image data: {0}")]
    TruncatedImage(String),
    /// The image header claims more pixels than `MAX_PIXELS`, or a side over `MAX_IMAGE_SIDE`.
    #[error(
        "image of {width}x{height} pixels exceeds the limits ({} pixels, {} per side)",
        limits.max_pixels,
        limits.max_side
    )]
    ImageTooLarge { width: u32, height: u32, limits: crate::detector::decode::Limits },
    /// The request's images together claim more pixels than `MAX_REQUEST_PIXELS`.
    #[error("the request's images exceed its budget of {budget} pixels in total; send the rest in another request")]
    PixelBudgetExceeded { budget: u64 },
    /// An S3 object that does not exist.
    #[error("no such S3 object: {0}")]
    NotFound(String),
    /// S3 refused to read the object (403; also what S3 answers for a missing key to a reader
    /// without `s3:ListBucket`).
    #[error("S3 refused access to {0} (or it does not exist)")]
    AccessDenied(String),

    // ---- the service itself --------------------------------------------------------------
    /// An S3 call failed for a reason other than a missing key.
    #[error("S3 error: {0}")]
    S3(String),
    /// ONNX Runtime failed while running the model.
    #[error("inference failed: {0}")]
    Inference(String),
    /// The model, labels or ONNX Runtime library could not be loaded.
    #[error("start-up failed: {0}")]
    Startup(String),
    /// A configuration value is malformed.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Anything else that is our fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The stable, machine-readable code clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidJson(_) => "invalid_json",
            Error::InvalidRequest(_) => "invalid_request",
            Error::NoImages => "no_images",
            Error::NamesMismatch { .. } => "names_mismatch",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::TooManyImages { .. } => "too_many_images",
            Error::BucketNotAllowed(_) => "bucket_not_allowed",
            Error::KeyNotAllowed { .. } => "key_not_allowed",
            Error::RequestTimeout(_) => "request_timeout",
            Error::AccessDenied(_) => "access_denied",
            Error::S3NotConfigured => "s3_not_configured",
            Error::RouteNotFound(_) => "route_not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::InvalidBase64(_) => "invalid_base64",
            Error::NotAnImage(_) => "not_an_image",
            Error::TruncatedImage(_) => "truncated_image",
            Error::ImageTooLarge { .. } => "image_too_large",
            Error::PixelBudgetExceeded { .. } => "pixel_budget_exceeded",
            Error::NotFound(_) => "not_found",
            Error::S3(_) => "s3_error",
            Error::Inference(_) => "inference_failed",
            Error::Startup(_) => "startup_failed",
            Error::Config(_) => "invalid_config",
            Error::Internal(_) => "internal_error",
        }
    }

    /// The HTTP status of this error when it fails a whole request.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::InvalidJson(_)
            | Error::InvalidRequest(_)
            | Error::NoImages
            | Error::NamesMismatch { .. }
            | Error::InvalidBase64(_)
            | Error::NotAnImage(_)
            | Error::TruncatedImage(_) => StatusCode::BAD_REQUEST,
            Error::BucketNotAllowed(_) | Error::KeyNotAllowed { .. } | Error::AccessDenied(_) => StatusCode::FORBIDDEN,
            Error::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::RouteNotFound(_) | Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::PayloadTooLarge { .. }
            | Error::TooManyImages { .. }
            | Error::ImageTooLarge { .. }
            | Error::PixelBudgetExceeded { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::S3NotConfigured => StatusCode::NOT_IMPLEMENTED,
            Error::S3(_) => StatusCode::BAD_GATEWAY,
            Error::Inference(_) | Error::Startup(_) | Error::Config(_) | Error::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The message fit to send or log: cut at [`MAX_MESSAGE_CHARS`], control characters escaped,
    /// whatever client input it quotes.
    pub fn message(&self) -> String {
        excerpt_to(&self.to_string(), MAX_MESSAGE_CHARS)
    }

    /// The `{"code", "message"}` body of this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody { code: self.code().to_string(), message: self.message() }
    }
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

/// Converts the error into its Lambda diagnostic (`errorType` = the stable code).
impl From<Error> for lambda_runtime::Diagnostic {
    fn from(e: Error) -> Self {
        lambda_runtime::Diagnostic { error_type: e.code().to_string(), error_message: e.to_string() }
    }
}

/// Convenience alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
