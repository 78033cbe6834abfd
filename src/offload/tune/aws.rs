//! Memory sizes measured on a deployed function: each size applied with
//! `UpdateFunctionConfiguration` (waiting until Lambda reports the update done, which also gives
//! the next invocation a fresh, cold execution environment), one cold and `warm` invocations with
//! `LogType=Tail`, the durations read from the `REPORT` line of each log tail. Several models are
//! compared by setting the function's `MODEL_URI` (an S3 URI) or `MODEL_PATH` (a path in its
//! image) before each one's sizes. The function's original memory size and environment are put
//! back when the run ends, fails or is interrupted (Ctrl-C, SIGTERM).

use std::time::{Duration, Instant};

use aws_sdk_lambda::operation::get_function_configuration::GetFunctionConfigurationOutput;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{Environment, LastUpdateStatus, LogType};
use base64::Engine as _;

use super::{MB_PER_VCPU, ReportLine, SizeResult};
use crate::error::BoxError;

/// Why tuning a deployed function stopped.
#[derive(Debug, thiserror::Error)]
pub enum AwsTuneError {
    /// A Lambda API call failed.
    #[error("Lambda {call} failed")]
    Call {
        /// The API call.
        call: &'static str,
        /// The SDK's error.
        #[source]
        source: BoxError,
    },
    /// The function has no memory size to restore.
    #[error("the function reports no memory size")]
    NoMemorySize,
    /// An update did not finish in time, or failed.
    #[error("the configuration update {to} {what}")]
    Update {
        /// What was asked for ("to 1024 MB", "of the environment").
        to: String,
        /// What happened.
        what: String,
    },
    /// Interrupted (the original size was restored).
    #[error("interrupted; the function's memory size was restored to {restored_mb} MB")]
    Interrupted {
        /// The size put back.
        restored_mb: u32,
    },
    /// The original size (and environment) could not be put back: the function is left changed.
    #[error(
        "could not restore the function's memory size to {original_mb} MB (and its environment): set it back by hand"
    )]
    Restore {
        /// The size it had.
        original_mb: u32,
        /// Why.
        #[source]
        source: Box<AwsTuneError>,
    },
}

fn call<E: std::error::Error + Send + Sync + 'static>(call: &'static str) -> impl FnOnce(E) -> AwsTuneError {
    move |e| AwsTuneError::Call { call, source: Box::new(e) }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Function name or ARN.
    pub function: String,
    /// Memory sizes, MB.
    pub sizes: Vec<u32>,
    /// The invocation's payload (an API Gateway event).
    pub payload: Vec<u8>,
    /// Images per invocation.
    pub batch: usize,
    /// Warm invocations per size.
    pub warm: usize,
    /// Models to compare: S3 URIs (set as `MODEL_URI`) or paths in the function's image (set as
    /// `MODEL_PATH`). Empty: the function's own model.
    pub models: Vec<String>,
    /// How long an update may take.
    pub update_timeout: Duration,
    /// How often an update's status is asked for.
    pub poll: Duration,
}

/// The environment variable that selects `model` and the name results show for it.
fn model_variable(model: &str) -> (&'static str, String) {
    let var = if model.starts_with("s3://") { "MODEL_URI" } else { "MODEL_PATH" };
    let name = model.rsplit('/').next().unwrap_or(model).to_string();
    (var, name)
}

/// Measures every size (of every model), then restores the original size and environment — also
/// when a call fails or the process is asked to stop (`interrupted` resolves).
pub async fn run(
    client: &aws_sdk_lambda::Client,
    opts: &Options,
    interrupted: impl std::future::Future<Output = ()>,
) -> Result<Vec<SizeResult>, AwsTuneError> {
    let original = configuration(client, opts).await?;
    let original_mb = original.memory_size().and_then(|m| u32::try_from(m).ok()).ok_or(AwsTuneError::NoMemorySize)?;
    let original_env = original.environment().and_then(|e| e.variables()).cloned().unwrap_or_default();
    tracing::info!(function = %crate::error::excerpt(&opts.function), original_mb, "tuning a deployed function");
    let outcome = tokio::select! {
        r = measure(client, opts, &original_env) => r,
        () = interrupted => Err(AwsTuneError::Interrupted { restored_mb: original_mb }),
    };
    let env = (!opts.models.is_empty()).then_some(original_env);
    if let Err(e) = update(client, opts, Some(original_mb), env).await {
        return Err(AwsTuneError::Restore { original_mb, source: Box::new(e) });
    }
    tracing::info!(original_mb, "memory size restored");
    outcome
}

async fn measure(
    client: &aws_sdk_lambda::Client,
    opts: &Options,
    original_env: &std::collections::HashMap<String, String>,
) -> Result<Vec<SizeResult>, AwsTuneError> {
    let mut results = vec![];
    let models: Vec<Option<&String>> =
        if opts.models.is_empty() { vec![None] } else { opts.models.iter().map(Some).collect() };
    for model in models {
        let mut name = String::new();
        if let Some(model) = model {
            let (var, shown) = model_variable(model);
            let mut env = original_env.clone();
            env.remove("MODEL_URI");
            env.remove("MODEL_PATH");
            env.insert(var.to_string(), model.clone());
            update(client, opts, None, Some(env)).await?;
            tracing::info!(variable = var, model = %crate::error::excerpt(model), "model selected");
            name = shown;
        }
        for &mb in &opts.sizes {
            update(client, opts, Some(mb), None).await?;
            let mut result = SizeResult {
                model: name.clone(),
                memory_mb: mb,
                vcpus: f64::from(mb) / MB_PER_VCPU,
                visible_cores: super::lambda_visible_cores(mb),
                batch: opts.batch,
                ..Default::default()
            };
            for i in 0..=opts.warm {
                match invoke(client, opts).await {
                    Ok(report) => {
                        result.peak_mb = Some(result.peak_mb.unwrap_or(0.0).max(f64::from(report.max_memory_used_mb)));
                        if i == 0 {
                            result.init_ms = report.init_ms;
                            result.cold_ms = Some(report.duration_ms);
                        } else {
                            result.warm_ms.push(report.duration_ms);
                        }
                    }
                    Err(why) => {
                        result.failure = Some(why);
                        break;
                    }
                }
            }
            results.push(result);
        }
    }
    Ok(results)
}

/// The function's configuration as Lambda reports it now.
async fn configuration(
    client: &aws_sdk_lambda::Client,
    opts: &Options,
) -> Result<GetFunctionConfigurationOutput, AwsTuneError> {
    let request = client.get_function_configuration().function_name(&opts.function);
    request.send().await.map_err(call("GetFunctionConfiguration"))
}

/// Sets the memory size and/or the environment and waits until Lambda reports the update done.
async fn update(
    client: &aws_sdk_lambda::Client,
    opts: &Options,
    mb: Option<u32>,
    env: Option<std::collections::HashMap<String, String>>,
) -> Result<(), AwsTuneError> {
    let shown = mb.map_or_else(|| "of the environment".to_string(), |mb| format!("to {mb} MB"));
    let size = mb
        .map(i32::try_from)
        .transpose()
        .map_err(|_| AwsTuneError::Update { to: shown.clone(), what: "is out of range".into() })?;
    client
        .update_function_configuration()
        .function_name(&opts.function)
        .set_memory_size(size)
        .set_environment(env.map(|v| Environment::builder().set_variables(Some(v)).build()))
        .send()
        .await
        .map_err(call("UpdateFunctionConfiguration"))?;
    let start = Instant::now();
    loop {
        let c = configuration(client, opts).await?;
        let size_done = size.is_none() || c.memory_size() == size;
        match c.last_update_status() {
            None | Some(LastUpdateStatus::Successful) if size_done => return Ok(()),
            Some(LastUpdateStatus::Failed) => {
                let reason = c.last_update_status_reason().unwrap_or("no reason given");
                return Err(AwsTuneError::Update {
                    to: shown,
                    what: format!("failed: {}", crate::error::excerpt(reason)),
                });
            }
            _ if start.elapsed() > opts.update_timeout => {
                return Err(AwsTuneError::Update { to: shown, what: "did not finish in time".into() });
            }
            // Lambda offers no notification for this; its documentation polls.
            _ => tokio::time::sleep(opts.poll).await,
        }
    }
}

/// One invocation; its REPORT line, or why there is none (a function error, no log tail).
async fn invoke(client: &aws_sdk_lambda::Client, opts: &Options) -> Result<ReportLine, String> {
    let out = client
        .invoke()
        .function_name(&opts.function)
        .log_type(LogType::Tail)
        .payload(Blob::new(opts.payload.clone()))
        .send()
        .await
        .map_err(|e| format!("Invoke failed: {}", crate::error::chain(&e)))?;
    if let Some(error) = out.function_error() {
        return Err(format!("the function failed ({})", crate::error::excerpt(error)));
    }
    let tail = out.log_result().unwrap_or_default();
    let log = base64::engine::general_purpose::STANDARD.decode(tail).unwrap_or_default();
    String::from_utf8_lossy(&log)
        .lines()
        .find_map(ReportLine::parse)
        .ok_or_else(|| "no REPORT line in the invocation's log tail".to_string())
}
