//! The detector's errors: [`DetectError`] for one image, [`LoadError`] for starting.
//!
//! They know nothing of where images come from (S3, a request's deadline or budget): the service
//! wraps them in its own errors (`service::error`).

use crate::error::{BoxError, Coded, ErrorCode};

/// The image formats objdet decodes, as messages name them.
pub const FORMAT_NAMES: &str = "JPEG, PNG or WebP";

/// Why the detector has no detections for one image (decoding, the pixel limits, inference).
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
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
    #[error("not a supported image ({}): empty data", FORMAT_NAMES)]
    Empty,
    /// An image format objdet does not read.
    #[error("not a supported image: {format} images are not supported")]
    UnsupportedFormat {
        /// The format the bytes are in.
        format: String,
    },
    /// Bytes of no known image format.
    #[error("not a supported image: unrecognised data (expected {})", FORMAT_NAMES)]
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
    /// The JPEG's scan data cannot be the frame its header claims (see `detector::jpeg_scan`).
    #[error("truncated or corrupt image data: {reason}")]
    TruncatedScan {
        /// What the bytes lack.
        reason: String,
    },
    /// The header claims more pixels than `MAX_PIXELS`, or a side over `MAX_IMAGE_SIDE`.
    #[error("image of {width}x{height} pixels exceeds the limits ({max_pixels} pixels, {max_side} per side)")]
    TooLarge {
        /// Claimed width (0 when the decoder refused before telling).
        width: u32,
        /// Claimed height.
        height: u32,
        /// `MAX_PIXELS` in effect.
        max_pixels: u64,
        /// `MAX_IMAGE_SIDE` in effect.
        max_side: u32,
    },
    /// The request's images together claim more pixels than `MAX_REQUEST_PIXELS`.
    #[error("the request's images exceed its budget of {budget} pixels in total; send the rest in another request")]
    PixelBudgetExceeded {
        /// `MAX_REQUEST_PIXELS`.
        budget: u64,
    },
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

impl Coded for DetectError {
    fn code(&self) -> ErrorCode {
        use DetectError::*;
        match self {
            Base64NotText(_) | Base64Empty | Base64(_) => ErrorCode::InvalidBase64,
            Empty | UnsupportedFormat { .. } | Unrecognised | Header(_) | NoPixels { .. } => ErrorCode::NotAnImage,
            Truncated(_) | TruncatedScan { .. } => ErrorCode::TruncatedImage,
            TooLarge { .. } => ErrorCode::ImageTooLarge,
            PixelBudgetExceeded { .. } => ErrorCode::PixelBudgetExceeded,
            Inference(_) | NoOutput(_) | Output(_) => ErrorCode::InferenceFailed,
            Resize(_) | WorkerStopped | DecoderPanicked => ErrorCode::InternalError,
        }
    }
}

/// Why the detector cannot start (ONNX Runtime, the model file, its interface, threads).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
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
    /// The model is not a detector objdet can run, or its settings contradict it.
    #[error("cannot run the model {path} as a detector (MODEL_PATH)")]
    Spec {
        /// The model file.
        path: std::path::PathBuf,
        /// What does not fit.
        #[source]
        source: super::spec::SpecError,
    },
    /// The optimized-graph cache cannot be written (the caller then runs without it).
    #[error("cannot write the optimized-graph cache (ORT_OPTIMIZED_MODEL_PATH)")]
    Cache(#[source] std::io::Error),
    /// A worker thread could not be started.
    #[error("cannot start a worker thread")]
    Thread(#[source] std::io::Error),
    /// The warm-up run (`ORT_WARMUP`) failed.
    #[error("the warm-up run failed")]
    Warmup(#[source] DetectError),
    /// A thread exited (panicked) while loading the model.
    #[error("the {0} thread exited while loading the model")]
    ThreadExited(&'static str),
}

impl Coded for LoadError {
    fn code(&self) -> ErrorCode {
        ErrorCode::StartupFailed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::chain;

    #[test]
    fn a_cause_is_kept_but_not_shown() {
        let io = std::io::Error::other("disk on fire at /secret/path");
        let source = super::super::spec::SpecError::Labels { path: "labels.txt".into(), source: io };
        let e = LoadError::Spec { path: "model.onnx".into(), source };
        assert!(!e.message().contains("/secret/path"), "{}", e.message());
        assert!(std::error::Error::source(&e).is_some());
        assert!(chain(&e).contains("/secret/path"), "{}", chain(&e));
    }
}
