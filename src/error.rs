//! What every error of objdet shares: the stable codes clients switch on ([`ErrorCode`], [`Coded`]),
//! the `{"error": {"code", "message"}}` body, and the rules for quoting client input in messages
//! and logs ([`excerpt`], [`chain`]). This module imports nothing of the crate; the errors live
//! with their layers, each keeping its cause:
//!
//! - `detector::error`: `DetectError` (one image: decoding, pixel limits, inference) and
//!   `LoadError` (the detector cannot start);
//! - `service::error`: `ImageError` (one image of a request: the detector's reason, its S3 object,
//!   the deadline), `RequestError` (a whole request is refused) and `StartupError`;
//! - `s3::S3Error`, `config::ConfigError`, `model_source::FetchError`: their modules'.
//!
//! An error's message is its `Display`, which names what went wrong without the cause's internals
//! (an SDK's error chain, a path): those are in [`std::error::Error::source`], for logs ([`chain`]).

use serde::Serialize;

/// A boxed error kept as a cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

// The codes are listed once, in `error_codes!` below: the enum, `ALL` and `as_str` come from that list.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)*) => {
        /// The stable machine-readable codes clients switch on (`{"error": {"code", ...}}`, an image's
        /// `error.code`, a Lambda invocation's `errorType`). A front door maps each to its own signal
        /// (the HTTP status: `server::status`) with an exhaustive match, so a new code cannot slip
        /// through as a 500 unnoticed.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, for exhaustive tests.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as clients see it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                }
            }
        }
    };
}

error_codes! {
    /// An image's base64 text does not decode.
    InvalidBase64 = "invalid_base64",
    /// The bytes are not an image objdet reads.
    NotAnImage = "not_an_image",
    /// The image data is cut short or corrupt.
    TruncatedImage = "truncated_image",
    /// The image is over `MAX_PIXELS` or `MAX_IMAGE_SIDE`.
    ImageTooLarge = "image_too_large",
    /// The request's images together are over `MAX_REQUEST_PIXELS`.
    PixelBudgetExceeded = "pixel_budget_exceeded",
    /// The request's deadline passed before this image was done.
    DeadlineExceeded = "deadline_exceeded",
    /// ONNX Runtime failed, or the model's output does not fit its format.
    InferenceFailed = "inference_failed",
    /// A bug or a stopped part of the service.
    InternalError = "internal_error",
    /// The body is not the JSON the endpoint expects.
    InvalidJson = "invalid_json",
    /// Well-formed, but asks for something impossible (or the body broke off).
    InvalidRequest = "invalid_request",
    /// No image in the request.
    NoImages = "no_images",
    /// `names` does not have one name per image.
    NamesMismatch = "names_mismatch",
    /// A `Content-Type` the endpoint does not take.
    UnsupportedMediaType = "unsupported_media_type",
    /// A body, upload or object over its limit.
    PayloadTooLarge = "payload_too_large",
    /// More images than `MAX_IMAGES`.
    TooManyImages = "too_many_images",
    /// The answer is over the front door's response limit (Lambda's 6 MB).
    ResponseTooLarge = "response_too_large",
    /// The body stalled or the request ran past its deadline.
    RequestTimeout = "request_timeout",
    /// The configuration is invalid.
    InvalidConfig = "invalid_config",
    /// The service could not start.
    StartupFailed = "startup_failed",
    /// S3 keys were sent but no bucket is configured.
    S3NotConfigured = "s3_not_configured",
    /// The bucket is not in `ALLOWED_BUCKETS`.
    BucketNotAllowed = "bucket_not_allowed",
    /// The key is outside `S3_READ_PREFIX`.
    KeyNotAllowed = "key_not_allowed",
    /// No such S3 object.
    NotFound = "not_found",
    /// S3 refused the read.
    AccessDenied = "access_denied",
    /// An S3 call failed.
    S3Error = "s3_error",
    /// No route for the method and path.
    RouteNotFound = "route_not_found",
    /// The route exists, not for this method.
    MethodNotAllowed = "method_not_allowed",
    /// No bearer token, or not the server's.
    Unauthorized = "unauthorized",
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
}
