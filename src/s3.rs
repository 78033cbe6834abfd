//! S3 access: fetching images by key, presigning upload URLs, writing trigger results.
//!
//! The client takes `aws-config` defaults, so `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` point it at
//! a local S3 server and `S3_FORCE_PATH_STYLE=true` selects path-style addressing.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use crate::config::S3Config;
use crate::error::{Error, Result};

/// A configured S3 client plus the bucket policy of this deployment.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    cfg: S3Config,
}

impl S3Store {
    /// Builds the client from the default AWS configuration chain (env, profile, IMDS, ...).
    pub async fn from_env(cfg: S3Config) -> Self {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let conf = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(cfg.force_path_style).build();
        Self { client: Client::from_conf(conf), cfg }
    }

    /// Wraps an existing client (tests).
    pub fn new(client: Client, cfg: S3Config) -> Self {
        Self { client, cfg }
    }

    /// The S3 settings.
    pub fn config(&self) -> &S3Config {
        &self.cfg
    }

    /// The underlying SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Resolves the bucket of an S3-keys request and checks it against `ALLOWED_BUCKETS`.
    pub fn readable_bucket(&self, requested: Option<&str>) -> Result<String> {
        let bucket = match requested {
            Some(b) => b.to_string(),
            None => self.cfg.upload_bucket.clone().ok_or(Error::S3NotConfigured)?,
        };
        if self.cfg.allowed_buckets.contains(&bucket) { Ok(bucket) } else { Err(Error::BucketNotAllowed(bucket)) }
    }

    /// Reads one object; a missing key (or bucket) is [`Error::NotFound`].
    pub async fn get(&self, bucket: &str, key: &str, max_bytes: usize) -> Result<Bytes> {
        let out = self.client.get_object().bucket(bucket).key(key).send().await.map_err(|e| {
            let not_found = e
                .as_service_error()
                .map(|s| s.is_no_such_key() || s.meta().code() == Some("NoSuchBucket"))
                .unwrap_or(false)
                || e.raw_response().map(|r| r.status().as_u16() == 404).unwrap_or(false);
            if not_found {
                Error::NotFound(format!("s3://{bucket}/{key}"))
            } else {
                Error::S3(format!("GetObject s3://{bucket}/{key}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)))
            }
        })?;
        if out.content_length().unwrap_or(0) > max_bytes as i64 {
            return Err(Error::PayloadTooLarge { limit: max_bytes });
        }
        let data = out.body.collect().await.map_err(|e| Error::S3(format!("reading s3://{bucket}/{key}: {e}")))?;
        Ok(data.into_bytes())
    }

    /// A presigned PUT URL for `key` in the upload bucket.
    pub async fn presign_put(&self, bucket: &str, key: &str, content_type: &str) -> Result<String> {
        let conf = PresigningConfig::expires_in(Duration::from_secs(self.cfg.presign_expires_secs))
            .map_err(|e| Error::Config(format!("PRESIGN_EXPIRES_SECS: {e}")))?;
        let req = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .presigned(conf)
            .await
            .map_err(|e| Error::S3(format!("presigning s3://{bucket}/{key}: {e}")))?;
        Ok(req.uri().to_string())
    }

    /// Writes a JSON document.
    pub async fn put_json(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<()> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| {
                Error::S3(format!("PutObject s3://{bucket}/{key}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)))
            })?;
        Ok(())
    }
}
