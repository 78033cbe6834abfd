//! The metrics objdet emits: one list ([`CATALOG`]), recorded through the `metrics` facade where
//! the work happens (the request service), exported by whichever recorder the process installed:
//! EMF documents on Lambda ([`super::emf`]), Prometheus text on `objdet serve` ([`prometheus`]),
//! nothing in the CLI.
//!
//! Labels are few and bounded: `source` (one of [`Source`]) and `code` (an
//! [`ErrorCode`](crate::error::ErrorCode)); never a name, key or label text. The EMF exporter adds
//! `service` (the function's name) as the dimension every metric has.

use crate::api::DetectResponse;
use crate::error::ErrorCode;

/// How a metric aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Summed over the interval.
    Counter,
    /// One value per event (EMF: an array of values; Prometheus: a histogram with [`Metric::buckets`]).
    Histogram,
}

/// A metric's unit, as CloudWatch names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Unit {
    /// A count.
    Count,
    /// Milliseconds.
    Milliseconds,
    /// Bytes.
    Bytes,
}

impl Unit {
    /// CloudWatch's name of the unit.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Bytes => "Bytes",
        }
    }
}

/// One metric: its name everywhere, how it aggregates, its unit and labels.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Metric {
    /// The name, the same in EMF and Prometheus.
    pub name: &'static str,
    /// Counter or histogram.
    pub kind: Kind,
    /// Unit.
    pub unit: Unit,
    /// Labels (EMF dimensions besides `service`).
    pub labels: &'static [&'static str],
    /// What it counts or measures.
    pub help: &'static str,
    /// Prometheus histogram buckets (upper bounds); empty for counters.
    pub buckets: &'static [f64],
}

const MS_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1e3, 2e3, 5e3, 1e4, 3e4];
const BYTE_BUCKETS: &[f64] = &[1e3, 1e4, 1e5, 1e6, 2.5e6, 6e6, 1.6e7, 6.4e7];
const OBJECT_BUCKETS: &[f64] = &[0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 300.0];

const fn counter(name: &'static str, labels: &'static [&'static str], help: &'static str) -> Metric {
    Metric { name, kind: Kind::Counter, unit: Unit::Count, labels, help, buckets: &[] }
}

const fn histogram(name: &'static str, unit: Unit, labels: &'static [&'static str], help: &'static str) -> Metric {
    let buckets = match unit {
        Unit::Milliseconds => MS_BUCKETS,
        Unit::Bytes => BYTE_BUCKETS,
        Unit::Count => OBJECT_BUCKETS,
    };
    Metric { name, kind: Kind::Histogram, unit, labels, help, buckets }
}

/// Requests answered, by front door (`source`), errors included.
pub const REQUESTS: Metric = counter("Requests", &["source"], "requests answered, errors included");
/// Requests refused or failed, by error code.
pub const REQUEST_ERRORS: Metric = counter("RequestErrors", &["code"], "requests answered with an error");
/// Wall time of a detection request inside objdet, body reception included.
pub const REQUEST_MS: Metric =
    histogram("RequestMs", Unit::Milliseconds, &["source"], "wall time of a detection request, body included");
/// Body (or object) bytes of a detection request.
pub const PAYLOAD_BYTES: Metric = histogram("PayloadBytes", Unit::Bytes, &["source"], "request body or object bytes");
/// Images in answered detection requests.
pub const IMAGES: Metric = counter("Images", &["source"], "images in answered detection requests");
/// Images answered with an error inside a 200 answer, by error code.
pub const IMAGE_ERRORS: Metric = counter("ImageErrors", &["code"], "images answered with an error");
/// Per image: base64 + image decode + resize.
pub const DECODE_MS: Metric = histogram("DecodeMs", Unit::Milliseconds, &[], "decode and preprocess time per image");
/// Per image: time in `session.run`.
pub const INFERENCE_MS: Metric = histogram("InferenceMs", Unit::Milliseconds, &[], "session.run time per image");
/// Per image: head, NMS, mapping back, masks/keypoints/rotated boxes.
pub const POSTPROCESS_MS: Metric = histogram("PostprocessMs", Unit::Milliseconds, &[], "postprocess time per image");
/// Per image: objects found.
pub const OBJECTS: Metric = histogram("Objects", Unit::Count, &[], "objects found per image");
/// Processes that loaded the model (on Lambda: cold starts).
pub const COLD_START: Metric = counter("ColdStart", &[], "processes started (Lambda: cold starts)");
/// Time to make the model ready in a new process: download (`MODEL_URI`) and load.
pub const INIT_MS: Metric = histogram("InitMs", Unit::Milliseconds, &[], "model download and load time at start");

/// Every metric objdet emits. The template test (scripts/test-template.py) checks each alarm and
/// dashboard widget against this list (written to `infra/metrics.json` by a test).
pub const CATALOG: &[Metric] = &[
    REQUESTS,
    REQUEST_ERRORS,
    REQUEST_MS,
    PAYLOAD_BYTES,
    IMAGES,
    IMAGE_ERRORS,
    DECODE_MS,
    INFERENCE_MS,
    POSTPROCESS_MS,
    OBJECTS,
    COLD_START,
    INIT_MS,
];

/// The metric called `name`.
pub fn lookup(name: &str) -> Option<&'static Metric> {
    CATALOG.iter().find(|m| m.name == name)
}

/// Which front door a request came through (the `source` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    /// `objdet serve` (EC2/Docker/local).
    Http,
    /// The Lambda HTTP function (API Gateway, function URL, ALB).
    ApiGateway,
    /// The S3 upload trigger.
    Trigger,
    /// A Step Functions bulk batch.
    Bulk,
    /// In-process: the CLI, tests and benchmarks (no recorder is installed there).
    #[default]
    Local,
}

impl Source {
    /// Every source, for exhaustive tests.
    pub const ALL: [Source; 5] = [Source::Http, Source::ApiGateway, Source::Trigger, Source::Bulk, Source::Local];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Http => "http",
            Source::ApiGateway => "api_gateway",
            Source::Trigger => "trigger",
            Source::Bulk => "bulk",
            Source::Local => "local",
        }
    }
}

/// A detection request answered: the request's metrics and each detected image's.
pub fn answered(source: Source, response: &DetectResponse) {
    let s = source.as_str();
    metrics::counter!(REQUESTS.name, "source" => s).increment(1);
    metrics::histogram!(REQUEST_MS.name, "source" => s).record(response.timing.total_ms);
    metrics::histogram!(PAYLOAD_BYTES.name, "source" => s).record(response.timing.payload_bytes as f64);
    metrics::counter!(IMAGES.name, "source" => s).increment(response.results.len() as u64);
    // Failed images were counted by code as they were answered ([`image_failed`]).
    for image in response.results.iter().filter(|r| r.error.is_none()) {
        metrics::histogram!(DECODE_MS.name).record(image.decode_ms);
        metrics::histogram!(INFERENCE_MS.name).record(image.inference_ms);
        metrics::histogram!(POSTPROCESS_MS.name).record(image.postprocess_ms);
        metrics::histogram!(OBJECTS.name).record(image.objects.len() as f64);
    }
}

/// An image answered with an error (inside a 200 answer or an error result document).
pub fn image_failed(code: ErrorCode) {
    metrics::counter!(IMAGE_ERRORS.name, "code" => code.as_str()).increment(1);
}

/// A request answered with an error.
pub fn failed(source: Source, code: ErrorCode) {
    metrics::counter!(REQUESTS.name, "source" => source.as_str()).increment(1);
    metrics::counter!(REQUEST_ERRORS.name, "code" => code.as_str()).increment(1);
}

/// An error answer given after the request was counted (a Lambda response over its size limit).
pub fn failed_after(code: ErrorCode) {
    metrics::counter!(REQUEST_ERRORS.name, "code" => code.as_str()).increment(1);
}

/// The process made its model ready in `init_ms`.
pub fn started(init_ms: f64) {
    metrics::counter!(COLD_START.name).increment(1);
    metrics::histogram!(INIT_MS.name).record(init_ms);
}

/// The Prometheus exporter of `objdet serve`.
pub mod prometheus {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

    use super::{CATALOG, Kind};

    /// Installs the Prometheus recorder as the process's recorder, with each histogram's
    /// buckets from the catalog; the handle renders `GET /metrics`.
    pub fn install() -> Result<PrometheusHandle, super::InstallError> {
        let recorder = builder().map_err(super::InstallError::Prometheus)?.build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(|_| super::InstallError::AlreadyInstalled)?;
        super::describe();
        Ok(handle)
    }

    /// The exporter's settings: each histogram's buckets from the catalog.
    pub fn builder() -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
        let mut builder = PrometheusBuilder::new();
        for m in CATALOG.iter().filter(|m| m.kind == Kind::Histogram) {
            builder = builder.set_buckets_for_metric(Matcher::Full(m.name.to_string()), m.buckets)?;
        }
        Ok(builder)
    }
}

/// Why a metrics recorder could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The process already has a recorder.
    #[error("a metrics recorder is already installed")]
    AlreadyInstalled,
    /// The Prometheus exporter refused its settings.
    #[error("the Prometheus exporter refused its settings")]
    Prometheus(#[source] metrics_exporter_prometheus::BuildError),
}

/// Gives the installed recorder each metric's unit and help text (Prometheus prints them as
/// `# HELP`; the EMF exporter takes units from the catalog itself).
pub fn describe() {
    for m in CATALOG {
        let unit = match m.unit {
            Unit::Count => metrics::Unit::Count,
            Unit::Milliseconds => metrics::Unit::Milliseconds,
            Unit::Bytes => metrics::Unit::Bytes,
        };
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, unit, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, unit, m.help),
        }
    }
}

/// The catalog as the template test reads it (`infra/metrics.json`): each metric with the
/// dimension sets the EMF exporter gives it (`[service]` and `[service, labels…]`).
pub fn catalog_json() -> serde_json::Value {
    let metrics: Vec<serde_json::Value> = CATALOG
        .iter()
        .map(|m| {
            let mut sets = vec![vec!["service"]];
            if !m.labels.is_empty() {
                sets.push([&["service"][..], m.labels].concat());
            }
            serde_json::json!({
                "name": m.name, "kind": m.kind, "unit": m.unit.as_str(), "labels": m.labels,
                "dimension_sets": sets, "help": m.help,
            })
        })
        .collect();
    serde_json::json!({
        "generated_by": "cargo test --lib telemetry::metrics (OBJDET_WRITE_CATALOG=1 rewrites it)",
        "sources": Source::ALL.map(Source::as_str),
        "metrics": metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// `infra/metrics.json` is what the code emits: the template test checks the alarms and the
    /// dashboard against it, so a renamed metric fails there instead of in production.
    #[test]
    fn the_catalog_file_is_the_code_catalog() {
        let path = root().join("infra/metrics.json");
        let expected = serde_json::to_string_pretty(&catalog_json()).unwrap() + "\n";
        if std::env::var_os("OBJDET_WRITE_CATALOG").is_some() {
            std::fs::write(&path, &expected).unwrap();
        }
        let found = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            found == expected,
            "{} is stale: run OBJDET_WRITE_CATALOG=1 cargo test --lib telemetry",
            path.display()
        );
    }

    /// docs/operations.md explains every metric and every source.
    #[test]
    fn every_metric_is_documented() {
        let doc = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
        for m in CATALOG {
            assert!(doc.contains(&format!("`{}`", m.name)), "docs/operations.md does not explain {}", m.name);
        }
        for s in Source::ALL {
            assert!(
                doc.contains(&format!("`{}`", s.as_str())),
                "docs/operations.md does not name source {}",
                s.as_str()
            );
        }
    }

    #[test]
    fn names_are_unique_and_histograms_have_rising_buckets() {
        for (i, m) in CATALOG.iter().enumerate() {
            assert!(CATALOG[..i].iter().all(|o| o.name != m.name), "{} twice", m.name);
            assert_eq!(m.kind == Kind::Histogram, !m.buckets.is_empty(), "{}", m.name);
            assert!(m.buckets.windows(2).all(|w| w[0] < w[1]), "{}", m.name);
            assert!(m.labels.len() <= 1, "{}: dimensions stay few", m.name);
        }
    }
}
