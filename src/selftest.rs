//! The self-test of an image build: load ONNX Runtime and the model as configured, detect the
//! bundled photo (which proves the model runs and its output decodes), and say what was found.
//! `bootstrap --self-test` and `objdet self-test` run it as a build step of the Dockerfile, so an
//! image that lacks a library ONNX Runtime links, or a model objdet cannot run, fails its build
//! instead of its first invocation.
//!
//! What the photo must hold is `SELFTEST_EXPECT` (a Dockerfile build argument): `auto` (the
//! default) expects a person of the bundled model only, since another model has its own classes;
//! `none` expects nothing; any other value is a class name that must be found.

use std::time::Instant;

use crate::config::DetectorConfig;
pub use crate::config::Expect;
use crate::detector::error::{DetectError, LoadError};
use crate::detector::{Detector, Input};
use crate::service::error::StartupError;
use crate::telemetry::ms_since;

/// The bundled photo: a person in a street.
pub const PHOTO: &[u8] = include_bytes!("../assets/selftest.jpg");

/// The class the bundled model must find in the photo.
pub const EXPECTED: &str = "person";

/// The bundled model's SHA-256 (models/SHA256SUMS): `auto` expects [`EXPECTED`] of it only.
pub const BUNDLED_MODEL_SHA256: &str = "5076c7504cf91c638c70c94b02847585162f06c0958c0c7db24f130fa1aaa459";

/// What the self-test found.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    /// The model, as `objdet detect --help` describes it.
    pub model: String,
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
    /// The detector cannot start.
    #[error("self-test: the detector cannot start")]
    Load(#[from] LoadError),
    /// The photo could not be detected on.
    #[error("self-test: the bundled photo failed")]
    Photo(#[source] DetectError),
    /// The detector ran but missed what the photo holds.
    #[error("self-test: expected a {expected} in the bundled photo, found {found:?} (SELFTEST_EXPECT)")]
    Missed {
        /// The class expected.
        expected: String,
        /// The classes found.
        found: Vec<String>,
    },
}

/// Loads the detector of `cfg`, detects [`PHOTO`] and checks that it holds what `expect` says.
pub fn run(cfg: &DetectorConfig, expect: &Expect) -> Result<Report, SelfTestError> {
    let t = Instant::now();
    let detector = Detector::load(cfg)?;
    let load_ms = ms_since(t);
    let t = Instant::now();
    let outcome = detector.detect_blocking(Input::Image(bytes::Bytes::from_static(PHOTO)));
    let detect_ms = ms_since(t);
    let found = outcome.result.map_err(SelfTestError::Photo)?;
    let labels: Vec<String> = found.objects.into_iter().map(|o| o.label).collect();
    let expected = match expect {
        Expect::Nothing => None,
        Expect::Label(l) => Some(l.clone()),
        Expect::Auto => is_bundled(&cfg.model_path).then(|| EXPECTED.to_string()),
    };
    if let Some(expected) = expected
        && !labels.contains(&expected)
    {
        return Err(SelfTestError::Missed { expected, found: labels });
    }
    Ok(Report { model: detector.spec().summary(), labels, load_ms, detect_ms })
}

/// Whether the file is the bundled model (by content, wherever it lies).
fn is_bundled(path: &std::path::Path) -> bool {
    use sha2::Digest as _;
    let Ok(bytes) = std::fs::read(path) else { return false };
    let digest: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    digest == BUNDLED_MODEL_SHA256
}
