//! The AWS Lambda entry point: loads the model during Init, then serves API Gateway / function URL
//! events through the same Router as `objdet serve`, and S3 upload notifications through the trigger.

use std::sync::Arc;

use objdet::lambda::LambdaHandler;
use objdet::{Config, DetectService, server, telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init(true);
    let malloc_tuned = objdet::memory::tune_malloc();
    tracing::debug!(malloc_tuned, "malloc mmap threshold");
    let config = Arc::new(Config::from_env()?);
    // Init phase: ORT, the model and the S3 client are ready before the first invocation.
    let service = DetectService::from_config(config.clone()).await?;
    let router = server::app(service.clone(), config.lambda_max_body_bytes.min(config.max_body_bytes));
    LambdaHandler::new(router, service).run().await
}
