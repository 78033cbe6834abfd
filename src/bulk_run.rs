//! `objdet bulk`: starting a bulk run (the Step Functions state machine of template.yaml) over an
//! S3 prefix, and watching it: the Distributed Map run's item counts while it runs, and at the end
//! the batches' summaries from its ResultWriter manifest.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_credential_types::provider::ProvideCredentials as _;
use serde::Serialize;

use crate::bulk::BatchSummary;

/// Clients for starting and watching runs.
#[derive(Debug, Clone)]
pub struct BulkRuns {
    sfn: aws_sdk_sfn::Client,
    s3: aws_sdk_s3::Client,
}

/// Where a run stands.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// The execution's ARN.
    pub execution: String,
    /// `RUNNING`, `SUCCEEDED`, `FAILED`, `TIMED_OUT`, `ABORTED`.
    pub status: String,
    /// The map run's items: total, succeeded, failed, pending, running (batches with ItemBatcher).
    pub items: BTreeMap<String, i64>,
    /// The batches' summaries added up (once the run has ended and written its manifest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<BatchSummary>,
    /// Where the run's manifest is (`s3://bucket/key`), once written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Status {
    /// Whether the execution has ended.
    pub fn ended(&self) -> bool {
        self.status != "RUNNING" && self.status != "PENDING_REDRIVE"
    }
}

impl BulkRuns {
    /// Clients from the default AWS configuration (`AWS_ENDPOINT_URL_*` for local stand-ins,
    /// `S3_FORCE_PATH_STYLE=true` for path-style S3); an error saying how to give credentials when
    /// there are none.
    pub async fn from_env(cfg: &crate::config::BulkClientConfig) -> Result<Self> {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let provider = sdk.credentials_provider().context("no AWS credentials are configured")?;
        provider.provide_credentials().await.context(
            "objdet bulk needs AWS credentials and none were found (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, \
             AWS_PROFILE, SSO or an instance role)",
        )?;
        let s3 = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(cfg.force_path_style).build();
        Ok(Self { sfn: aws_sdk_sfn::Client::new(&sdk), s3: aws_sdk_s3::Client::from_conf(s3) })
    }

    /// Starts a run of `state_machine` over `s3://bucket/prefix`; returns the execution's ARN.
    /// Refuses a state machine that does not exist and a prefix without objects.
    pub async fn start(&self, state_machine: &str, bucket: &str, prefix: &str) -> Result<String> {
        self.sfn.describe_state_machine().state_machine_arn(state_machine).send().await.map_err(|e| {
            let missing = e.as_service_error().is_some_and(|s| s.is_state_machine_does_not_exist() || s.is_invalid_arn());
            if missing {
                anyhow::anyhow!(
                    "no state machine {state_machine}: pass the stack's BulkStateMachineArn output (--state-machine or OBJDET_STATE_MACHINE)"
                )
            } else {
                sdk(e).context("DescribeStateMachine")
            }
        })?;
        let listed = self
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .max_keys(1)
            .send()
            .await
            .map_err(sdk)
            .with_context(|| format!("listing s3://{bucket}/{prefix}"))?;
        if listed.key_count().unwrap_or(0) == 0 {
            bail!("no objects under s3://{bucket}/{prefix}: nothing to detect");
        }
        let input = serde_json::json!({"bucket": bucket, "prefix": prefix}).to_string();
        let out = self
            .sfn
            .start_execution()
            .state_machine_arn(state_machine)
            .name(format!("objdet-{}", uuid::Uuid::new_v4()))
            .input(input)
            .send()
            .await
            .map_err(sdk)
            .context("StartExecution")?;
        Ok(out.execution_arn().to_string())
    }

    /// Where `execution` stands; once it has ended, with its batches' summaries.
    pub async fn status(&self, execution: &str) -> Result<Status> {
        let ex = self
            .sfn
            .describe_execution()
            .execution_arn(execution)
            .send()
            .await
            .map_err(sdk)
            .with_context(|| format!("DescribeExecution {execution}"))?;
        let mut status = Status {
            execution: execution.to_string(),
            status: ex.status().as_str().to_string(),
            error: ex.error().map(|e| format!("{e}: {}", ex.cause().unwrap_or(""))),
            ..Default::default()
        };
        let runs = self.sfn.list_map_runs().execution_arn(execution).send().await;
        let map_run = runs.ok().and_then(|r| r.map_runs().first().map(|m| m.map_run_arn().to_string()));
        if let Some(run) = map_run
            && let Ok(run) = self.sfn.describe_map_run().map_run_arn(run).send().await
            && let Some(c) = run.item_counts()
        {
            for (k, v) in [
                ("total", c.total()),
                ("succeeded", c.succeeded()),
                ("failed", c.failed()),
                ("pending", c.pending()),
                ("running", c.running()),
            ] {
                status.items.insert(k.into(), v);
            }
        }
        if status.ended()
            && let Some(output) = ex.output()
        {
            let manifest = serde_json::from_str::<serde_json::Value>(output)
                .ok()
                .and_then(|v| v.pointer("/map_run/ResultWriterDetails").cloned());
            if let Some(details) = manifest {
                let (bucket, key) = (details["Bucket"].as_str(), details["Key"].as_str());
                if let (Some(bucket), Some(key)) = (bucket, key) {
                    status.manifest = Some(format!("s3://{bucket}/{key}"));
                    status.summary = self.summaries(bucket, key).await.ok();
                }
            }
        }
        Ok(status)
    }

    /// Polls `execution` every `every` until it ends, calling `progress` with each status.
    pub async fn wait(&self, execution: &str, every: Duration, mut progress: impl FnMut(&Status)) -> Result<Status> {
        loop {
            let status = self.status(execution).await?;
            progress(&status);
            if status.ended() {
                return Ok(status);
            }
            tokio::time::sleep(every).await;
        }
    }

    /// The batches' summaries in the run's manifest (its SUCCEEDED result files), added up.
    async fn summaries(&self, bucket: &str, manifest_key: &str) -> Result<BatchSummary> {
        let manifest: serde_json::Value = serde_json::from_slice(&self.get(bucket, manifest_key).await?)?;
        let files = manifest.pointer("/ResultFiles/SUCCEEDED").and_then(|f| f.as_array()).cloned().unwrap_or_default();
        if files.is_empty() {
            bail!("the manifest lists no result files");
        }
        let mut total = BatchSummary::default();
        for file in files {
            let Some(key) = file["Key"].as_str() else { continue };
            let entries: Vec<serde_json::Value> = serde_json::from_slice(&self.get(bucket, key).await?)?;
            for entry in entries {
                let output = entry["Output"].as_str().unwrap_or("null");
                if let Ok(s) = serde_json::from_str::<BatchSummary>(output) {
                    total.items += s.items;
                    total.processed += s.processed;
                    total.skipped += s.skipped;
                    total.ignored += s.ignored;
                    total.ms += s.ms;
                    for (code, n) in s.failed {
                        *total.failed.entry(code).or_default() += n;
                    }
                }
            }
        }
        Ok(total)
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Vec<u8>> {
        let out = self
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(sdk)
            .with_context(|| format!("reading s3://{bucket}/{key}"))?;
        Ok(out.body.collect().await.context("reading the manifest")?.into_bytes().to_vec())
    }
}

/// An SDK error with its whole context (service code, message, request id) for the CLI's user.
fn sdk(e: impl std::error::Error) -> anyhow::Error {
    anyhow::anyhow!("{}", aws_sdk_s3::error::DisplayErrorContext(e))
}
