//! The self-test of an image build: load ONNX Runtime and the model as configured, detect the
//! bundled photo, and say what was found. `bootstrap --self-test` and `objdet self-test` run it as
//! a build step of the Dockerfile, so an image that lacks a library ONNX Runtime links, or the
//! model, fails its build instead of its first invocation.

use std::time::Instant;

use crate::config::DetectorConfig;
use crate::detector::{Detector, Input};
use crate::error::{ImageError, StartupError};
use crate::telemetry::ms_since;

/// The bundled photo: a person in a street.
pub const PHOTO: &[u8] = include_bytes!("../assets/selftest.jpg");

/// The class the photo must be found to hold.
pub const EXPECTED: &str = "person";

/// What the self-test found.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    /// Labels found in the photo, best first.
    pub labels: Vec<String>,
    /// Start-up time: ONNX Runtime, the model, the sessions.
    pub load_ms: f64,
    /// The photo's detection time.
    pub detect_ms: f64,
}

/// Why the self-test failed.
#[derive(Debug, thiserror::Error)]
pub enum SelfTestError {
    /// The service cannot start.
    #[error("self-test: start-up failed")]
    Startup(#[from] StartupError),
    /// The photo could not be detected on.
    #[error("self-test: the bundled photo failed")]
    Photo(#[source] ImageError),
    /// The detector ran but missed what the photo holds.
    #[error("self-test: expected a {EXPECTED} in the bundled photo, found {0:?}")]
    Missed(Vec<String>),
}

/// Loads the detector of `cfg`, detects [`PHOTO`] and checks that it holds [`EXPECTED`].
pub fn run(cfg: &DetectorConfig) -> Result<Report, SelfTestError> {
    let t = Instant::now();
    let detector = Detector::load(cfg)?;
    let load_ms = ms_since(t);
    let t = Instant::now();
    let outcome = detector.detect_blocking(Input::Image(bytes::Bytes::from_static(PHOTO)));
    let detect_ms = ms_since(t);
    let found = outcome.result.map_err(SelfTestError::Photo)?;
    let labels: Vec<String> = found.objects.into_iter().map(|o| o.label).collect();
    if !labels.iter().any(|l| l == EXPECTED) {
        return Err(SelfTestError::Missed(labels));
    }
    Ok(Report { labels, load_ms, detect_ms })
}
