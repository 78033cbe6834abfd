//! objdet: COCO object detection that runs in-process, as an HTTP server (EC2/Docker/local) or as an
//! AWS Lambda behind API Gateway and S3 upload triggers, plus the client that measures which wins.
//!
//! The core ([`detector`], [`service`]) knows nothing of HTTP servers or Lambda; [`server`],
//! [`lambda`] and [`trigger`] are thin front doors around it.

pub mod api;
pub mod body_scanner;
pub mod bulk;
#[cfg(feature = "cli")]
pub mod bulk_run;
pub mod config;
pub mod detector;
pub mod error;
#[cfg(feature = "cli")]
pub mod eval;
pub mod lambda;
pub mod memory;
pub mod model_source;
#[cfg(feature = "cli")]
pub mod offload;
pub mod results;
pub mod s3;
pub mod selftest;
pub mod server;
pub mod service;
pub mod telemetry;
pub mod trigger;

pub use config::Config;
pub use detector::Detector;
pub use service::DetectService;
pub use service::error::{ImageError, RequestError, StartupError};
