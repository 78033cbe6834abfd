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
use crate::error::{BoxError, Coded, ErrorCode, excerpt};

/// What went wrong with S3. The SDK's error is kept as the cause (logged, never sent to clients).
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// No bucket is configured (`UPLOAD_BUCKET`).
    #[error("S3 is not configured on this deployment (set UPLOAD_BUCKET)")]
    NotConfigured,
    /// A bucket outside `ALLOWED_BUCKETS`.
    #[error("bucket {0:?} is not allowed")]
    BucketNotAllowed(String),
    /// A key an S3-keys request may not read (outside `S3_READ_PREFIX`, or not a plain key).
    #[error("key {key:?} may not be read: S3-keys requests read keys under {prefix:?} (no `.` or `..` segments)")]
    KeyNotAllowed {
        /// The key (an excerpt).
        key: String,
        /// `S3_READ_PREFIX`.
        prefix: String,
    },
    /// The object (or its bucket) does not exist.
    #[error("no such S3 object: s3://{bucket}/{key}")]
    NotFound {
        /// Bucket (an excerpt).
        bucket: String,
        /// Key (an excerpt).
        key: String,
    },
    /// S3 refused to read the object (403; also what S3 answers for a missing key to a reader
    /// without `s3:ListBucket`).
    #[error("S3 refused access to s3://{bucket}/{key} (or it does not exist)")]
    AccessDenied {
        /// Bucket (an excerpt).
        bucket: String,
        /// Key (an excerpt).
        key: String,
    },
    /// The object is larger than the limit.
    #[error("the S3 object exceeds the {limit}-byte limit")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// An S3 call failed for another reason.
    #[error("S3 {operation} failed")]
    Call {
        /// `GetObject`, `PutObject`, ...
        operation: &'static str,
        /// The SDK's error.
        #[source]
        source: BoxError,
    },
    /// `PRESIGN_EXPIRES_SECS` is not a valid expiry.
    #[error("PRESIGN_EXPIRES_SECS is not a valid presigned-URL expiry")]
    Expiry(#[source] aws_sdk_s3::presigning::PresigningConfigError),
    /// The fetch allowance of a request was closed (a bug).
    #[error("the S3 fetch allowance was closed")]
    AllowanceClosed,
}

impl Coded for S3Error {
    fn code(&self) -> ErrorCode {
        match self {
            S3Error::NotConfigured => ErrorCode::S3NotConfigured,
            S3Error::BucketNotAllowed(_) => ErrorCode::BucketNotAllowed,
            S3Error::KeyNotAllowed { .. } => ErrorCode::KeyNotAllowed,
            S3Error::NotFound { .. } => ErrorCode::NotFound,
            S3Error::AccessDenied { .. } => ErrorCode::AccessDenied,
            S3Error::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            S3Error::Call { .. } => ErrorCode::S3Error,
            S3Error::Expiry(_) => ErrorCode::InvalidConfig,
            S3Error::AllowanceClosed => ErrorCode::InternalError,
        }
    }
}

impl S3Error {
    /// Whether retrying cannot mend it: the object is gone, refused or too large.
    pub fn is_permanent(&self) -> bool {
        matches!(self, S3Error::NotFound { .. } | S3Error::AccessDenied { .. } | S3Error::TooLarge { .. })
    }
}

fn call(operation: &'static str) -> impl FnOnce(BoxError) -> S3Error {
    move |source| S3Error::Call { operation, source }
}

type Result<T, E = S3Error> = std::result::Result<T, E>;

/// A failed `GetObject` as an [`S3Error`]: a missing object or bucket is [`S3Error::NotFound`], a
/// refused one [`S3Error::AccessDenied`].
fn get_error(
    e: aws_sdk_s3::error::SdkError<
        aws_sdk_s3::operation::get_object::GetObjectError,
        aws_sdk_s3::config::http::HttpResponse,
    >,
    bucket: &str,
    key: &str,
) -> S3Error {
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.as_service_error().and_then(|s| s.meta().code()).map(str::to_owned);
    let not_found = e.as_service_error().is_some_and(|s| s.is_no_such_key())
        || code.as_deref() == Some("NoSuchBucket")
        || status == Some(404);
    if not_found {
        S3Error::NotFound { bucket: excerpt(bucket), key: excerpt(key) }
    } else if status == Some(403) || code.as_deref() == Some("AccessDenied") {
        // Without s3:ListBucket, S3 answers 403 for a key that does not exist, too.
        tracing::warn!(bucket, key = %excerpt(key), error = %DisplayErrorContext(&e), "S3 refused GetObject");
        S3Error::AccessDenied { bucket: excerpt(bucket), key: excerpt(key) }
    } else {
        tracing::error!(bucket, key = %excerpt(key), error = %DisplayErrorContext(&e), "S3 GetObject failed");
        call("GetObject")(e.into())
    }
}

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
        self.sem.clone().acquire_many_owned(want).await.map_err(|_| S3Error::AllowanceClosed)
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
            None => self.cfg.upload_bucket.clone().ok_or(S3Error::NotConfigured)?,
        };
        if self.cfg.allowed_buckets.contains(&bucket) {
            Ok(bucket)
        } else {
            Err(S3Error::BucketNotAllowed(excerpt(&bucket)))
        }
    }

    /// Refuses keys an S3-keys request may not read: outside `S3_READ_PREFIX` (default
    /// `UPLOADS_PREFIX`), with `.`/`..` path segments, or longer than S3's 1,024 bytes.
    pub fn check_readable_keys(&self, keys: &[String]) -> Result<()> {
        let prefix = &self.cfg.read_prefix;
        for key in keys {
            let dotted = key.split('/').any(|seg| seg == "." || seg == "..");
            if !key.starts_with(prefix.as_str()) || dotted || key.len() > MAX_KEY_BYTES || key.is_empty() {
                return Err(S3Error::KeyNotAllowed { key: excerpt(key), prefix: prefix.clone() });
            }
        }
        Ok(())
    }

    /// Reads one object of at most `max_bytes`. A missing key (or bucket) is [`S3Error::NotFound`],
    /// a refused one [`S3Error::AccessDenied`].
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
        let out =
            self.client.get_object().bucket(bucket).key(key).send().await.map_err(|e| get_error(e, bucket, key))?;
        let declared = usize::try_from(out.content_length().unwrap_or(0).max(0)).unwrap_or(usize::MAX);
        if declared > max_bytes {
            return Err(S3Error::TooLarge { limit: max_bytes });
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
            call("GetObject body read")(e.into())
        })? {
            if data.len() + chunk.len() > max_bytes {
                return Err(S3Error::TooLarge { limit: max_bytes });
            }
            data.extend_from_slice(&chunk);
        }
        Ok(Fetched { bytes: data.freeze(), permit })
    }

    /// Streams the object (of `version`, if given) into the file `dest`, never more than
    /// `max_bytes` (refused from its declared length before the body is read, and counted while it
    /// arrives), returning its length and SHA-256. The file is written whole or removed.
    pub async fn download(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        max_bytes: u64,
        dest: &std::path::Path,
    ) -> Result<(u64, [u8; 32])> {
        use sha2::Digest as _;
        use tokio::io::AsyncWriteExt as _;
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(version.map(str::to_string))
            .send()
            .await
            .map_err(|e| get_error(e, bucket, key))?;
        let too_large = || S3Error::TooLarge { limit: usize::try_from(max_bytes).unwrap_or(usize::MAX) };
        if u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0) > max_bytes {
            return Err(too_large());
        }
        let write = |e: std::io::Error| call("GetObject (writing the file)")(e.into());
        let result = async {
            let mut file = tokio::fs::File::create(dest).await.map_err(write)?;
            let (mut len, mut hash) = (0u64, sha2::Sha256::new());
            let mut body = out.body;
            while let Some(chunk) = body.try_next().await.map_err(|e| call("GetObject body read")(e.into()))? {
                len += chunk.len() as u64;
                if len > max_bytes {
                    return Err(too_large());
                }
                hash.update(&chunk);
                file.write_all(&chunk).await.map_err(write)?;
            }
            file.flush().await.map_err(write)?;
            file.sync_all().await.map_err(write)?;
            Ok((len, hash.finalize().into()))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(dest).await;
        }
        result
    }

    /// A presigned PUT of `key` signed for exactly `content_length` bytes of `content_type` (S3
    /// refuses any other length or type), with the headers the PUT must send.
    pub async fn presign_put(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
        content_length: u64,
    ) -> Result<(String, Vec<(String, String)>)> {
        let conf = PresigningConfig::expires_in(Duration::from_secs(self.cfg.presign_expires_secs))
            .map_err(S3Error::Expiry)?;
        let req = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .content_length(i64::try_from(content_length).unwrap_or(i64::MAX))
            .presigned(conf)
            .await
            .map_err(|e| call("PutObject presigning")(e.into()))?;
        let headers = req.headers().map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect();
        Ok((req.uri().to_string(), headers))
    }

    /// The ETag of an object (without quotes), `None` when it does not exist.
    pub async fn etag(&self, bucket: &str, key: &str) -> Result<Option<String>> {
        Ok(self.head(bucket, key).await?.and_then(|h| h.e_tag().map(normalize_etag)))
    }

    /// One user-metadata value of an object, `None` when it or the object does not exist.
    pub async fn metadata(&self, bucket: &str, key: &str, name: &str) -> Result<Option<String>> {
        Ok(self.head(bucket, key).await?.and_then(|h| h.metadata().and_then(|m| m.get(name).cloned())))
    }

    async fn head(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>> {
        match self.client.head_object().bucket(bucket).key(key).send().await {
            Ok(out) => Ok(Some(out)),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => {
                tracing::error!(bucket, key = %excerpt(key), error = %DisplayErrorContext(&e), "S3 HeadObject failed");
                Err(call("HeadObject")(e.into()))
            }
        }
    }

    /// Writes a JSON document.
    pub async fn put_json(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<()> {
        self.put_json_with_metadata(bucket, key, body, &[]).await
    }

    /// Writes a JSON document with user metadata.
    pub async fn put_json_with_metadata(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        metadata: &[(&str, &str)],
    ) -> Result<()> {
        let mut put = self.client.put_object();
        for (k, v) in metadata {
            put = put.metadata(*k, *v);
        }
        put.bucket(bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| {
                tracing::error!(bucket, key = %excerpt(key), error = %DisplayErrorContext(&e), "S3 PutObject failed");
                call("PutObject")(e.into())
            })?;
        Ok(())
    }
}
/// An ETag without the quotes S3 lists it with.
pub fn normalize_etag(etag: &str) -> String {
    etag.trim().trim_matches('"').to_string()
}
