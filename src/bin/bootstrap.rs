//! The AWS Lambda entry point: loads the model during Init, then runs the front door that
//! `_HANDLER` (the function's `ImageConfig.Command`) names: `http` serves API Gateway / function
//! URL events through the same Router as `objdet serve`, `s3` the upload trigger, `bulk` the
//! Step Functions batches of a prefix.

use std::sync::Arc;

use objdet::config::{Handler, ProcessConfig};
use objdet::lambda;
use objdet::server::{self, RequestLimits};
use objdet::telemetry::emf::EmfRecorder;
use objdet::telemetry::metrics::Source;
use objdet::{Config, DetectService, telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init(true);
    let process = ProcessConfig::from_env();
    // `bootstrap --self-test`: the Dockerfile's build step (see objdet::selftest).
    if std::env::args().nth(1).as_deref() == Some("--self-test") {
        let config = init(Config::from_env())?;
        let report =
            init(tokio::task::block_in_place(|| objdet::selftest::run(&config.detector, &process.selftest_expect)))?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let malloc_tuned = objdet::memory::tune_malloc(process.malloc_tuned_by_env);
    tracing::debug!(malloc_tuned, "malloc mmap threshold");
    // An unknown entry point fails Init before the model is loaded.
    let handler = init(process.handler)?;
    let config = Arc::new(init(Config::from_env())?);
    // EMF metrics, written out by each invocation before it answers; installed before the model
    // loads, so that the first invocation reports the cold start.
    let metrics = match config.metrics.enabled {
        true => Some(init(EmfRecorder::new(&config.metrics.namespace, &config.metrics.service).install())?),
        false => None,
    };
    let metrics = lambda::Metrics::new(metrics, &config.detector.model_path);
    // Init phase: ORT, the model and the S3 client are ready before the first invocation.
    let service = init(DetectService::from_config(config.clone()).await)?;
    match handler {
        Handler::Http => {
            let service = service.with_source(Source::ApiGateway);
            lambda::run_http(server::app(service, RequestLimits::lambda(&config)), metrics).await
        }
        Handler::S3 => lambda::run_s3(service.with_source(Source::Trigger), metrics).await,
        Handler::Bulk => lambda::run_bulk(service.with_source(Source::Bulk), metrics).await,
    }
}

/// A start-up failure, logged with its causes and returned as the process's error (its message
/// the whole chain, so that the Init error says what to fix).
fn init<T, E: std::error::Error + 'static>(result: Result<T, E>) -> Result<T, lambda_runtime::Error> {
    result.map_err(|e| {
        let chain = objdet::error::chain(&e);
        tracing::error!(error = %chain, "Init failed");
        chain.into()
    })
}
