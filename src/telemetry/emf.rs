//! CloudWatch's embedded metric format (EMF): the metrics of one Lambda invocation as JSON log
//! lines on stdout, which CloudWatch Logs turns into metrics. No API call, no permission.
//!
//! The recorder accumulates what the process records; [`EmfHandle::flush`] writes it out — once
//! per invocation, before the handler returns its answer (a frozen environment must lose
//! nothing) — and starts again from zero. One document per label set (a document carries one
//! value per dimension), each with the dimension sets `[service]` and `[service, labels…]`;
//! histogram values go as arrays of at most 100, the format's limit, in as many documents as
//! they need.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};
use serde_json::{Map, Value, json};

use super::metrics::lookup;

/// The format's limit on values per metric in one document.
pub const MAX_VALUES: usize = 100;

/// The EMF recorder (installed as the process's recorder) and its handle share this.
struct Inner {
    registry: Registry<Key, AtomicStorage>,
    namespace: String,
    service: String,
}

/// The recorder `bootstrap` installs.
pub struct EmfRecorder(Arc<Inner>);

/// Writes out what the recorder holds.
#[derive(Clone)]
pub struct EmfHandle(Arc<Inner>);

/// Per-invocation properties: searchable in CloudWatch Logs, not dimensions.
#[derive(Debug, Clone, Default)]
pub struct Properties {
    /// The Lambda request id.
    pub request_id: Option<String>,
    /// The X-Ray trace id.
    pub trace_id: Option<String>,
    /// The model file's name.
    pub model: Option<String>,
}

impl EmfRecorder {
    /// A recorder for `namespace`, every metric with the dimension `service` = `service`.
    pub fn new(namespace: &str, service: &str) -> Self {
        Self(Arc::new(Inner {
            registry: Registry::atomic(),
            namespace: namespace.to_string(),
            service: service.to_string(),
        }))
    }

    /// Its handle.
    pub fn handle(&self) -> EmfHandle {
        EmfHandle(self.0.clone())
    }

    /// Installs it as the process's recorder.
    pub fn install(self) -> Result<EmfHandle, super::metrics::InstallError> {
        let handle = self.handle();
        metrics::set_global_recorder(self).map_err(|_| super::metrics::InstallError::AlreadyInstalled)?;
        Ok(handle)
    }
}

impl Recorder for EmfRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0.registry.get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0.registry.get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0.registry.get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

/// A label set (sorted `(key, value)` pairs) and the metrics recorded with it: one document's worth.
type Groups = BTreeMap<Vec<(String, String)>, Vec<(String, Values)>>;

/// One metric's values since the last flush.
enum Values {
    Count(u64),
    Samples(Vec<f64>),
}

impl EmfHandle {
    /// The documents of everything recorded since the last call (emptying the recorder), one
    /// JSON object per line, stamped `timestamp_ms`.
    pub fn take(&self, properties: &Properties, timestamp_ms: u64) -> Vec<Value> {
        let mut groups = Groups::new();
        let mut group = |key: &Key, values: Values| {
            let labels = key.labels().map(|l| (l.key().to_string(), l.value().to_string())).collect();
            groups.entry(labels).or_default().push((key.name().to_string(), values));
        };
        self.0.registry.visit_counters(|key, counter| {
            let n = counter.swap(0, Ordering::Relaxed);
            if n > 0 {
                group(key, Values::Count(n));
            }
        });
        self.0.registry.visit_histograms(|key, histogram| {
            let mut samples = Vec::new();
            histogram.clear_with(|chunk| samples.extend_from_slice(chunk));
            if !samples.is_empty() {
                group(key, Values::Samples(samples));
            }
        });
        let mut docs = Vec::new();
        for (labels, metrics) in groups {
            let chunks = metrics
                .iter()
                .map(|(_, v)| match v {
                    Values::Count(_) => 1,
                    Values::Samples(s) => s.len().div_ceil(MAX_VALUES),
                })
                .max()
                .unwrap_or(0);
            for chunk in 0..chunks {
                let mut doc = Map::new();
                let mut declared = Vec::new();
                for (name, values) in &metrics {
                    let value = match values {
                        Values::Count(n) if chunk == 0 => json!(n),
                        Values::Samples(s) if chunk * MAX_VALUES < s.len() => {
                            json!(s[chunk * MAX_VALUES..s.len().min((chunk + 1) * MAX_VALUES)])
                        }
                        _ => continue,
                    };
                    let unit = lookup(name).map_or("None", |m| m.unit.as_str());
                    declared.push(json!({"Name": name, "Unit": unit}));
                    doc.insert(name.clone(), value);
                }
                let mut dimensions = vec![vec!["service".to_string()]];
                if !labels.is_empty() {
                    dimensions.push(
                        std::iter::once("service".to_string()).chain(labels.iter().map(|(k, _)| k.clone())).collect(),
                    );
                }
                doc.insert(
                    "_aws".into(),
                    json!({
                        "Timestamp": timestamp_ms,
                        "CloudWatchMetrics": [{"Namespace": self.0.namespace, "Dimensions": dimensions, "Metrics": declared}],
                    }),
                );
                doc.insert("service".into(), json!(self.0.service));
                for (k, v) in &labels {
                    doc.insert(k.clone(), json!(v));
                }
                for (k, v) in [
                    ("requestId", &properties.request_id),
                    ("traceId", &properties.trace_id),
                    ("model", &properties.model),
                ] {
                    if let Some(v) = v {
                        doc.insert(k.into(), json!(v));
                    }
                }
                docs.push(Value::Object(doc));
            }
        }
        docs
    }

    /// Writes [`Self::take`]'s documents to `out`, one line each, and flushes it.
    pub fn flush_to(&self, properties: &Properties, out: &mut impl Write) -> std::io::Result<()> {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let mut text = Vec::new();
        for doc in self.take(properties, now) {
            serde_json::to_writer(&mut text, &doc)?;
            text.push(b'\n');
        }
        out.write_all(&text)?;
        out.flush()
    }

    /// Writes the documents to stdout (CloudWatch Logs reads EMF from the function's output);
    /// a failure to write is logged, never the invocation's.
    pub fn flush(&self, properties: &Properties) {
        if let Err(e) = self.flush_to(properties, &mut std::io::stdout().lock()) {
            tracing::warn!(error = %e, "metrics not written");
        }
    }
}

/// A metric summed over EMF documents whose members include `labels` (an array's values summed):
/// what CloudWatch's `Sum` statistic makes of them. For tests and tools that read the logs.
pub fn total(docs: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    docs.iter()
        .filter(|d| labels.iter().all(|(k, v)| d[*k] == *v))
        .map(|d| match &d[name] {
            Value::Number(n) => n.as_f64().unwrap_or(0.0),
            Value::Array(a) => a.iter().filter_map(Value::as_f64).sum(),
            _ => 0.0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DetectResponse, ImageResult, Timing};
    use crate::error::{ErrorBody, ErrorCode};
    use crate::telemetry::metrics::{self as m, CATALOG, Kind, Source};

    /// The document structure of AWS's published EMF specification ("Specification: Embedded
    /// metric format", CloudWatch User Guide) as a JSON schema: the root has `_aws` with a
    /// millisecond `Timestamp` and `CloudWatchMetrics`, each directive a namespace, dimension sets
    /// of at most 30 keys and at most 100 metric definitions, units from CloudWatch's list. What
    /// a schema cannot say (each referenced member is at the root) is checked by `members`.
    const EMF_SCHEMA: &str = r#"{
      "$schema": "http://json-schema.org/draft-07/schema#",
      "type": "object",
      "required": ["_aws"],
      "properties": {
        "_aws": {
          "type": "object",
          "required": ["Timestamp", "CloudWatchMetrics"],
          "properties": {
            "Timestamp": {"type": "integer", "minimum": 0},
            "CloudWatchMetrics": {
              "type": "array",
              "items": {
                "type": "object",
                "required": ["Namespace", "Dimensions", "Metrics"],
                "additionalProperties": false,
                "properties": {
                  "Namespace": {"type": "string", "minLength": 1, "maxLength": 1024},
                  "Dimensions": {
                    "type": "array",
                    "items": {
                      "type": "array",
                      "maxItems": 30,
                      "items": {"type": "string", "minLength": 1, "maxLength": 250}
                    }
                  },
                  "Metrics": {
                    "type": "array",
                    "maxItems": 100,
                    "items": {
                      "type": "object",
                      "required": ["Name"],
                      "additionalProperties": false,
                      "properties": {
                        "Name": {"type": "string", "minLength": 1, "maxLength": 1024},
                        "Unit": {"enum": ["Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes",
                          "Megabytes", "Gigabytes", "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits",
                          "Terabits", "Percent", "Count", "Bytes/Second", "Kilobytes/Second",
                          "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second",
                          "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second",
                          "Count/Second", "None"]},
                        "StorageResolution": {"enum": [1, 60]}
                      }
                    }
                  }
                }
              }
            }
          }
        }
      }
    }"#;

    /// The spec's rules a schema cannot state: every dimension key is a string member of the root,
    /// every declared metric a number or an array of at most 100 numbers there.
    fn members(doc: &Value) {
        for directive in doc["_aws"]["CloudWatchMetrics"].as_array().unwrap() {
            for set in directive["Dimensions"].as_array().unwrap() {
                for key in set.as_array().unwrap() {
                    assert!(doc[key.as_str().unwrap()].is_string(), "dimension {key} missing in {doc}");
                }
            }
            for metric in directive["Metrics"].as_array().unwrap() {
                let value = &doc[metric["Name"].as_str().unwrap()];
                let ok = value.is_number()
                    || value
                        .as_array()
                        .is_some_and(|a| !a.is_empty() && a.len() <= MAX_VALUES && a.iter().all(Value::is_number));
                assert!(ok, "metric {metric} has no valid value in {doc}");
            }
        }
    }

    fn image(error: Option<ErrorCode>) -> ImageResult {
        ImageResult {
            name: "uploads/a secret name.jpg".into(),
            width: Some(640),
            height: Some(480),
            objects: vec![],
            inference_ms: 12.5,
            decode_ms: 3.0,
            postprocess_ms: 0.5,
            error: error.map(|c| ErrorBody { code: c.as_str().into(), message: "m".into() }),
        }
    }

    #[test]
    fn documents_follow_the_specification_and_carry_what_was_recorded() {
        let schema: Value = serde_json::from_str(EMF_SCHEMA).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let recorder = EmfRecorder::new("objdet-test", "fn-name");
        let handle = recorder.handle();
        // 3 images of which one failed, one refused request, a start, and 250 more images (past
        // the format's 100 values per document).
        let three = DetectResponse {
            results: vec![image(None), image(Some(ErrorCode::NotAnImage)), image(None)],
            timing: Timing { payload_bytes: 1234, total_ms: 40.0, ..Default::default() },
        };
        let many = DetectResponse { results: (0..250).map(|_| image(None)).collect(), timing: Timing::default() };
        metrics::with_local_recorder(&recorder, || {
            m::started(850.0);
            m::image_failed(ErrorCode::NotAnImage);
            m::answered(Source::Trigger, &three);
            m::answered(Source::ApiGateway, &many);
            m::failed(Source::ApiGateway, ErrorCode::TooManyImages);
        });
        let properties = Properties {
            request_id: Some("req-1".into()),
            trace_id: Some("Root=1-abc".into()),
            model: Some("m.onnx".into()),
        };
        let docs = handle.take(&properties, 1_700_000_000_000);
        assert!(!docs.is_empty());
        for doc in &docs {
            let errors: Vec<String> = validator.iter_errors(doc).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{doc}: {errors:?}");
            members(doc);
            assert_eq!(doc["service"], "fn-name");
            assert_eq!(doc["requestId"], "req-1");
            assert_eq!(doc["traceId"], "Root=1-abc");
            assert_eq!(doc["model"], "m.onnx");
            assert!(!doc.to_string().contains("secret"), "an image name reached the metrics: {doc}");
            let directive = &doc["_aws"]["CloudWatchMetrics"][0];
            assert_eq!(directive["Namespace"], "objdet-test");
            for metric in directive["Metrics"].as_array().unwrap() {
                let def = m::lookup(metric["Name"].as_str().unwrap()).expect("a catalog metric");
                assert_eq!(metric["Unit"], def.unit.as_str(), "{metric}");
                let labels: Vec<&str> = def.labels.to_vec();
                let mut expected = vec![vec!["service"]];
                if !labels.is_empty() {
                    expected.push([&["service"][..], &labels].concat());
                }
                assert_eq!(directive["Dimensions"], json!(expected), "{metric}");
                assert_eq!(doc[def.name].is_array(), def.kind == Kind::Histogram, "{metric}");
            }
        }
        assert_eq!(total(&docs, "Images", &[("source", "trigger")]), 3.0);
        assert_eq!(total(&docs, "Images", &[("source", "api_gateway")]), 250.0);
        assert_eq!(total(&docs, "Requests", &[("source", "api_gateway")]), 2.0);
        assert_eq!(total(&docs, "ImageErrors", &[("code", "not_an_image")]), 1.0);
        assert_eq!(total(&docs, "RequestErrors", &[("code", "too_many_images")]), 1.0);
        assert_eq!(total(&docs, "ColdStart", &[]), 1.0);
        assert_eq!(total(&docs, "InitMs", &[]), 850.0);
        assert_eq!(total(&docs, "PayloadBytes", &[("source", "trigger")]), 1234.0);
        // Successful images only: 2 + 250 decode times, over three documents of at most 100.
        let decode: usize = docs.iter().filter_map(|d| d["DecodeMs"].as_array()).map(Vec::len).sum();
        assert_eq!(decode, 252);
        assert_eq!(docs.iter().filter(|d| d["DecodeMs"].is_array()).count(), 3);
        // Everything was taken: the next invocation starts from nothing.
        assert!(handle.take(&properties, 1).is_empty());
        // Every catalog metric was recorded here, so every one was checked above.
        for def in CATALOG {
            assert!(docs.iter().any(|d| !d[def.name].is_null()), "{} never emitted", def.name);
        }
    }

    #[test]
    fn buffered_output_is_one_json_document_per_line() {
        let recorder = EmfRecorder::new("ns", "svc");
        metrics::with_local_recorder(&recorder, || m::failed(Source::Http, ErrorCode::Unauthorized));
        let mut out = Vec::new();
        recorder.handle().flush_to(&Properties::default(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        // Requests by source and RequestErrors by code: two label sets, two documents.
        let docs: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(docs.len(), 2, "{text}");
        assert_eq!(total(&docs, "Requests", &[("source", "http")]), 1.0);
        assert_eq!(total(&docs, "RequestErrors", &[("code", "unauthorized")]), 1.0);
        assert!(docs.iter().all(|d| d["_aws"]["Timestamp"].as_u64().unwrap() > 1_600_000_000_000));
    }
}
