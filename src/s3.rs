//! S3 access: fetching images by key, presigning upload URLs, writing trigger results.
//!
//! The client takes `aws-config` defaults, so `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` point it at
//! a local S3 server and `S3_FORCE_PATH_STYLE=true` selects path-style addressing.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use bytes::{Bytes, BytesMut};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::S3Config;
use crate::error::{Error, Result, excerpt};

/// S3's limit on the length of an object key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// How many bytes of fetched objects one request may hold at once (`S3_MAX_BYTES_IN_FLIGHT`).
#[derive(Debug, Clone)]
pub struct Allowance {
    sem: Arc<Semaphore>,
    total: u32,
}

impl Allowance {
    /// An allowance of `bytes` (at most 4 GiB).
    pub fn new(bytes: usize) -> Self {
        let total = u32::try_from(bytes.max(1)).unwrap_or(u32::MAX);
        Self { sem: Arc::new(Semaphore::new(total as usize)), total }
    }

    /// Waits until `bytes` are free (all of the allowance, for an object larger than all of it).
    async fn take(&self, bytes: usize) -> Result<OwnedSemaphorePermit> {
        let want = u32::try_from(bytes).unwrap_or(u32::MAX).clamp(1, self.total);
        self.sem.clone().acquire_many_owned(want).await.map_err(|_| Error::Internal("fetch allowance closed".into()))
    }
}

/// An object's bytes, with the share of the fetch allowance they hold (see [`S3Store::get`]).
#[derive(Debug)]
pub struct Fetched {
    bytes: Bytes,
    permit: Option<OwnedSemaphorePermit>,
}

impl Fetched {
    /// The bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The bytes and the allowance to give back once they are dropped.
    pub fn into_parts(self) -> (Bytes, Option<OwnedSemaphorePermit>) {
        (self.bytes, self.permit)
    }
}

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

    /// Refuses keys an S3-keys request may not read: outside `S3_READ_PREFIX` (default
    /// `UPLOADS_PREFIX`), with `.`/`..` path segments, or longer than S3's 1,024 bytes.
    pub fn check_readable_keys(&self, keys: &[String]) -> Result<()> {
        let prefix = &self.cfg.read_prefix;
        for key in keys {
            let dotted = key.split('/').any(|seg| seg == "." || seg == "..");
            if !key.starts_with(prefix.as_str()) || dotted || key.len() > MAX_KEY_BYTES || key.is_empty() {
                return Err(Error::KeyNotAllowed { key: excerpt(key), prefix: prefix.clone() });
            }
        }
        Ok(())
    }

    /// Reads one object of at most `max_bytes`. A missing key (or bucket) is [`Error::NotFound`],
    /// a refused one [`Error::AccessDenied`].
    ///
    /// With `in_flight`, the object's size is taken from that allowance before its body is read
    /// and handed back with the bytes: the caller drops the permit once it is done with them.
    pub async fn get(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: usize,
        in_flight: Option<&Allowance>,
    ) -> Result<Fetched> {
        let out = self.client.get_object().bucket(bucket).key(key).send().await.map_err(|e| {
            let status = e.raw_response().map(|r| r.status().as_u16());
            let code = e.as_service_error().and_then(|s| s.meta().code()).map(str::to_owned);
            let not_found = e.as_service_error().is_some_and(|s| s.is_no_such_key())
                || code.as_deref() == Some("NoSuchBucket")
                || status == Some(404);
            if not_found {
                Error::NotFound(format!("s3://{}/{}", excerpt(bucket), excerpt(key)))
            } else if status == Some(403) || code.as_deref() == Some("AccessDenied") {
                // Without s3:ListBucket, S3 answers 403 for a key that does not exist, too.
                tracing::warn!(bucket, key = %excerpt(key), error = %DisplayErrorContext(&e), "S3 refused GetObject");
                Error::AccessDenied(format!("s3://{}/{}", excerpt(bucket), excerpt(key)))
            } else {
                tracing::error!(bucket, key = %excerpt(key), error = %DisplayErrorContext(&e), "S3 GetObject failed");
                Error::S3(format!("GetObject failed ({})", code.as_deref().unwrap_or("no error code")))
            }
        })?;
        let declared = usize::try_from(out.content_length().unwrap_or(0).max(0)).unwrap_or(usize::MAX);
        if declared > max_bytes {
            return Err(Error::PayloadTooLarge { limit: max_bytes });
        }
        let permit = match in_flight {
            Some(allowance) => Some(allowance.take(declared).await?),
            None => None,
        };
        // Read into one buffer of the declared size (no second copy), never past `max_bytes`
        // whatever the server declared.
        let mut body = out.body;
        let mut data = BytesMut::with_capacity(declared);
        while let Some(chunk) = body.try_next().await.map_err(|e| {
            tracing::error!(bucket, key = %excerpt(key), error = %DisplayErrorContext(&e), "reading an S3 object failed");
            Error::S3("reading the object failed".into())
        })? {
            if data.len() + chunk.len() > max_bytes {
                return Err(Error::PayloadTooLarge { limit: max_bytes });
            }
            data.extend_from_slice(&chunk);
        }
        Ok(Fetched { bytes: data.freeze(), permit })
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
                tracing::error!(bucket, key = %excerpt(key), error = %DisplayErrorContext(&e), "S3 PutObject failed");
                Error::S3("PutObject failed".into())
            })?;
        Ok(())
    }
}
