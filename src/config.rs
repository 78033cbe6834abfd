//! Configuration: every environment variable objdet reads, its default, validated once at start-up.
//!
//! The defaults work from the repository root after `make setup` (model in `models/`, ONNX Runtime
//! in `.cache/ort/`). The README has the same table.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not parse as its type.
    #[error("{key}={value:?} is not a valid {expected}")]
    Malformed {
        /// The variable.
        key: String,
        /// Its value (an excerpt).
        value: String,
        /// What it should be.
        expected: &'static str,
    },
    /// A value outside its range, or settings that contradict each other.
    #[error("{0}")]
    Invalid(String),
}

type Result<T, E = ConfigError> = std::result::Result<T, E>;

fn malformed(key: &str, value: &str, expected: &'static str) -> ConfigError {
    ConfigError::Malformed { key: key.to_string(), value: crate::error::excerpt(value), expected }
}

/// A number (`_` separators allowed), `default` when unset.
fn num<T: FromStr>(k: &str, v: Option<String>, default: T) -> Result<T> {
    match v {
        None => Ok(default),
        Some(s) => s.replace('_', "").parse::<T>().map_err(|_| malformed(k, &s, "number")),
    }
}

/// objdet's one boolean grammar: `1/true/yes/on`, `0/false/no/off` (any case), unset = false.
fn flag(k: &str, v: Option<String>) -> Result<bool> {
    match v.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("0" | "false" | "no" | "off") => Ok(false),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some(other) => Err(malformed(k, other, "boolean")),
    }
}

/// `get` with values trimmed and empty ones unset.
fn trimmed(get: impl Fn(&str) -> Option<String>) -> impl Fn(&str) -> Option<String> {
    move |k: &str| get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// `LOG_FORMAT` (`text`): `json` for JSON logs outside Lambda too (Lambda always logs JSON). Read
/// before the rest of the configuration, so that a configuration error is logged in that format.
pub fn log_json(get: impl Fn(&str) -> Option<String>) -> bool {
    trimmed(get)("LOG_FORMAT").is_some_and(|v| v.eq_ignore_ascii_case("json"))
}

/// What the binaries read besides [`Config`], from the same lookup: settings of the process
/// itself, read before the service's configuration (so that its errors are logged as configured).
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// `LOG_FORMAT` ([`log_json`]).
    pub log_json: bool,
    /// glibc's malloc configured through its own variables (`MALLOC_MMAP_THRESHOLD_`, or
    /// `glibc.malloc.*` in `GLIBC_TUNABLES`): objdet then leaves malloc alone (`memory`).
    pub malloc_tuned_by_env: bool,
    /// `SELFTEST_EXPECT` (`auto`): what `self-test` expects in the bundled photo.
    pub selftest_expect: Expect,
    /// `_HANDLER` (the function's `ImageConfig.Command`): the front door the Lambda bootstrap runs.
    pub handler: std::result::Result<Handler, UnknownHandler>,
}

impl ProcessConfig {
    /// Reads the process's variables from the environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the process's variables through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let raw = &get;
        let get = trimmed(raw);
        Self {
            log_json: log_json(raw),
            malloc_tuned_by_env: raw("MALLOC_MMAP_THRESHOLD_").is_some()
                || raw("GLIBC_TUNABLES").is_some_and(|t| t.contains("glibc.malloc.")),
            selftest_expect: Expect::from_env_value(get("SELFTEST_EXPECT").as_deref()),
            handler: Handler::from_env_value(get("_HANDLER").as_deref()),
        }
    }
}

/// What the photo must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// `selftest::EXPECTED` if the model is the bundled one, else nothing.
    Auto,
    /// Nothing: the model loads, runs and its output decodes.
    Nothing,
    /// This class.
    Label(String),
}

impl Expect {
    /// From `SELFTEST_EXPECT` (unset or empty: `auto`).
    pub fn from_env_value(v: Option<&str>) -> Self {
        match v.map(str::trim) {
            None | Some("" | "auto") => Expect::Auto,
            Some("none") => Expect::Nothing,
            Some(label) => Expect::Label(label.to_string()),
        }
    }
}

/// Which front door a function runs (`_HANDLER`, from the function's `ImageConfig.Command`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// HTTP events (API Gateway, function URL, ALB) through the Router.
    Http,
    /// S3 upload notifications through the trigger.
    S3,
    /// Step Functions Distributed Map batches of an S3 prefix.
    Bulk,
}

impl Handler {
    /// The names `_HANDLER` may hold.
    pub const CHOICES: &'static str = "http, s3, bulk";

    /// Parses `_HANDLER`; `None` or an unknown name is an error naming the choices.
    pub fn from_env_value(value: Option<&str>) -> Result<Self, UnknownHandler> {
        match value.map(str::trim) {
            Some("http") => Ok(Handler::Http),
            Some("s3") => Ok(Handler::S3),
            Some("bulk") => Ok(Handler::Bulk),
            Some(other) => Err(UnknownHandler::Unknown(crate::error::excerpt(other))),
            None => Err(UnknownHandler::Missing),
        }
    }
}

/// `_HANDLER` is missing or names no entry point.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UnknownHandler {
    /// Not set.
    #[error("_HANDLER is not set (choices: {}); set the function's ImageConfig.Command", Handler::CHOICES)]
    Missing,
    /// Set to no known name (an excerpt).
    #[error(
        "_HANDLER={0:?} names no entry point (choices: {choices}); set the function's ImageConfig.Command",
        choices = Handler::CHOICES
    )]
    Unknown(String),
}

/// The settings of the `objdet bulk` client, which starts and watches runs (no model, no service).
#[derive(Debug, Clone)]
pub struct BulkClientConfig {
    /// `S3_FORCE_PATH_STYLE` (false): path-style S3 URLs (moto, MinIO).
    pub force_path_style: bool,
    /// `OBJDET_BULK_POLL_MS` (2000): how often `objdet bulk` asks for the run's status.
    pub poll: Duration,
}

impl BulkClientConfig {
    /// Reads the client's variables through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = trimmed(get);
        Ok(Self {
            force_path_style: flag("S3_FORCE_PATH_STYLE", get("S3_FORCE_PATH_STYLE"))?,
            poll: Duration::from_millis(num("OBJDET_BULK_POLL_MS", get("OBJDET_BULK_POLL_MS"), 2000u64)?.max(1)),
        })
    }
}

/// Default model, relative to the working directory.
pub const DEFAULT_MODEL_PATH: &str = "models/centernet_mobilenetv3_coco.onnx";
/// Default request body limit of the HTTP server (64 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Default body limit of the Lambda front door: just under Lambda's 6 MB synchronous payload,
/// leaving room for the event envelope.
pub const DEFAULT_LAMBDA_MAX_BODY_BYTES: usize = 5_800_000;
/// Memory size that buys one full vCPU on Lambda.
pub const LAMBDA_MB_PER_VCPU: u64 = 1769;

/// Where the ONNX Runtime shared library is looked for when `ORT_DYLIB_PATH` is unset, in order.
/// Relative entries are resolved against the working directory.
pub const ORT_DYLIB_CANDIDATES: &[&str] = &[".cache/ort/libonnxruntime.so", "/opt/onnxruntime/lib/libonnxruntime.so"];

/// Detector settings: model files, thresholds, limits and threads.
#[derive(Debug, Clone)]
pub struct DetectorConfig {
    /// `MODEL_PATH`: the ONNX model.
    pub model_path: PathBuf,
    /// `ORT_DYLIB_PATH`: the ONNX Runtime shared library.
    pub ort_dylib_path: Option<PathBuf>,
    /// What overrides the model's own description (`MODEL_FORMAT`, `MODEL_INPUT_SIZE`,
    /// `MODEL_RESIZE`, `MODEL_PAD_VALUE`, `MODEL_INPUT_RANGE`, `MODEL_MEAN`, `MODEL_STD`,
    /// `MODEL_CHANNELS`, `MODEL_NMS`, `LABELS_PATH`, `SCORE_THRESHOLD`, `NMS_IOU`,
    /// `MAX_DETECTIONS`); each unset one is read from the model or its family's default
    /// (see [`crate::detector::spec`]).
    pub model: crate::detector::spec::Overrides,
    /// `MAX_PIXELS` (40,000,000): larger images are refused before decoding.
    pub max_pixels: u64,
    /// `MAX_IMAGE_SIDE` (16,384, WebP's own maximum): images wider or taller are refused before
    /// decoding, whatever their area (a 40,000,000×1 image is under `MAX_PIXELS`).
    pub max_side: u32,
    /// `ORT_SESSIONS`: ORT sessions (= images in flight). Default: the vCPU count.
    pub sessions: usize,
    /// `ORT_INTRA_THREADS`: intra-op threads per session. Default: 1.
    pub intra_threads: usize,
    /// `ORT_SOLO_THREADS`: intra-op threads of the solo session, which runs an image that arrives
    /// alone (nothing else queued or running) on every core; 0 or 1: no solo session. Default: the
    /// pool's total threads (`ORT_SESSIONS` × `ORT_INTRA_THREADS`) when the pool has several
    /// single-threaded sessions, else 0.
    pub solo_threads: usize,
    /// `ORT_SPIN` (false): let ORT's threads spin between ops (burns billed CPU on Lambda).
    pub spin: bool,
    /// `ORT_OPTIMIZED_MODEL_PATH`: where the optimized graph is cached (`off`: no cache). Default:
    /// `$XDG_CACHE_HOME/objdet/` or `~/.cache/objdet/` + `<model stem>.optimized.onnx`; none on
    /// Lambda, where every execution environment starts with an empty `/tmp`.
    pub optimized_model_path: Option<PathBuf>,
    /// `ORT_WARMUP` (false): build every session (the pool too) and run each once during start-up.
    pub warmup: bool,
    /// `JPEG_SCALED_DECODE` (true): decode a JPEG at least 4× the model's input size on both sides
    /// at 1/4 or 1/8 scale in the DCT domain, never below the input size (phone photos).
    pub scaled_jpeg: bool,
}

impl DetectorConfig {
    /// The per-image size limits.
    pub fn limits(&self) -> crate::detector::decode::Limits {
        crate::detector::decode::Limits { max_pixels: self.max_pixels, max_side: self.max_side }
    }
}

/// S3 settings for S3-key requests, presigned uploads and the upload trigger.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `UPLOAD_BUCKET`: the bucket uploads go to and keys are read from by default.
    pub upload_bucket: Option<String>,
    /// `ALLOWED_BUCKETS` (comma-separated; default: `UPLOAD_BUCKET`): buckets S3 mode may read.
    pub allowed_buckets: Vec<String>,
    /// `UPLOADS_PREFIX` (`uploads/`): where presigned uploads go and what the trigger processes.
    pub uploads_prefix: String,
    /// `RESULTS_PREFIX` (`results/`): where the trigger writes `<key>.json`.
    pub results_prefix: String,
    /// `S3_FORCE_PATH_STYLE` (false): path-style addressing, for local S3 servers.
    pub force_path_style: bool,
    /// `S3_FETCH_CONCURRENCY` (8): objects fetched (or detected) at once per request.
    pub fetch_concurrency: usize,
    /// `S3_MAX_BYTES_IN_FLIGHT` (64 MiB): bytes of fetched objects one request holds at once.
    pub max_bytes_in_flight: usize,
    /// `S3_READ_PREFIX` (default `UPLOADS_PREFIX`; empty with `S3_READ_ANY_KEY=true`): the only
    /// keys S3-keys requests may read.
    pub read_prefix: String,
    /// `PRESIGN_EXPIRES_SECS` (300): lifetime of presigned upload URLs.
    pub presign_expires_secs: u64,
    /// `MAX_UPLOAD_BYTES` (16 MiB, or `MAX_BODY_BYTES` if that is less; never more): the exact size each presigned PUT
    /// is signed for; S3 refuses any other length.
    pub max_upload_bytes: u64,
    /// `MAX_UPLOAD_BATCH_BYTES` (512 MiB): the sizes of one `POST /api/uploads` call together.
    pub max_upload_batch_bytes: u64,
}

/// An S3 object named by URI: `s3://bucket/key`, optionally `?versionId=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Uri {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// A version of the object, when the URI names one.
    pub version_id: Option<String>,
}

impl S3Uri {
    /// Parses `s3://bucket/key[?versionId=...]` (the key as S3 stores it, not URL-encoded).
    pub fn parse(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("s3://")?;
        let (path, version_id) = match rest.rsplit_once("?versionId=") {
            Some((p, v)) if !v.is_empty() && !v.contains(['/', '?', '&']) => (p, Some(v.to_string())),
            Some(_) => return None,
            None => (rest, None),
        };
        let (bucket, key) = path.split_once('/')?;
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        (bucket_ok && !key.is_empty() && key.len() <= 1024 && !key.ends_with('/')).then(|| S3Uri {
            bucket: bucket.into(),
            key: key.into(),
            version_id,
        })
    }

    /// The key's last segment (the file name the object is saved under).
    pub fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }
}

impl std::fmt::Display for S3Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, crate::error::excerpt(&self.key))?;
        match &self.version_id {
            Some(v) => write!(f, "?versionId={}", crate::error::excerpt(v)),
            None => Ok(()),
        }
    }
}

/// A model object in S3, downloaded once at start-up (`MODEL_URI`) and then loaded as
/// `MODEL_PATH` would be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSource {
    /// `MODEL_URI`: the model object.
    pub uri: S3Uri,
    /// `LABELS_URI`: a labels file object (one class name per line), for a model without names.
    pub labels_uri: Option<S3Uri>,
    /// `MODEL_SHA256`: the model's SHA-256 (hex); a download that differs fails start-up.
    pub sha256: Option<String>,
    /// `MODEL_MAX_BYTES` (256 MiB): a larger object fails start-up before its body is read.
    pub max_bytes: u64,
    /// `MODEL_DOWNLOAD_DIR` (`<temp dir>/objdet-model-<hash of the URI>`; `/tmp/...` on Lambda):
    /// where it is written (a restart writes over the last copy).
    pub dir: PathBuf,
}

/// Default `MODEL_MAX_BYTES`: 256 MiB (half of Lambda's default 512 MB of `/tmp`).
pub const DEFAULT_MODEL_MAX_BYTES: u64 = 256 << 20;

/// Bounds of `objdet serve` on what a client can hold: connections and time.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// `MAX_CONNECTIONS` (512, lowered to fit the open-file limit): connections served at once.
    pub max_connections: usize,
    /// `HEADER_TIMEOUT_SECS` (10): time to send a request's headers; also the keep-alive idle time.
    pub header_timeout: Duration,
    /// `BODY_TIMEOUT_SECS` (15): longest pause while a request body is arriving.
    pub body_timeout: Duration,
    /// `REQUEST_TIMEOUT_SECS` (300): deadline of a whole request on the server, body included
    /// (64 MiB at ~1.8 Mbit/s).
    pub request_timeout: Duration,
    /// `SHUTDOWN_GRACE_SECS` (8, under `docker stop`'s 10): after SIGTERM, time given to requests
    /// under way before they are abandoned and the process exits.
    pub shutdown_grace: Duration,
}

/// A bearer token, compared in constant time and never printed.
#[derive(Clone)]
pub struct ApiToken(std::sync::Arc<[u8; 32]>);

impl ApiToken {
    /// The token `secret` (at least 16 bytes: a guessable token is no control).
    pub fn new(secret: &str) -> Result<Self> {
        if secret.len() < 16 {
            return Err(ConfigError::Invalid("API_TOKEN must be at least 16 characters".into()));
        }
        Ok(Self(std::sync::Arc::new(sha256(secret.as_bytes()))))
    }

    /// Whether `presented` is the token. Both are hashed first, so the comparison takes the same
    /// time whatever their lengths and wherever they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        use subtle::ConstantTimeEq as _;
        bool::from(sha256(presented).ct_eq(&self.0[..]))
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(…)")
    }
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `API_TOKEN` (none): the bearer token `objdet serve` requires on every route that does
    /// work (`/api/*`). Without it the server refuses to listen beyond loopback unless
    /// `ALLOW_UNAUTHENTICATED=true` says so explicitly.
    pub api_token: Option<ApiToken>,
    /// `ALLOW_UNAUTHENTICATED` (false): serve `/api/*` without a token on a non-loopback address.
    pub allow_unauthenticated: bool,
    /// `HOST` (127.0.0.1): address `objdet serve` binds.
    pub host: String,
    /// `PORT` (5000): port `objdet serve` binds.
    pub port: u16,
    /// `MAX_BODY_BYTES` (64 MiB): request body limit.
    pub max_body_bytes: usize,
    /// `LAMBDA_MAX_BODY_BYTES` (5,800,000): body limit behind API Gateway / Lambda.
    pub lambda_max_body_bytes: usize,
    /// `MAX_IMAGES` (256): images per request.
    pub max_images: usize,
    /// `MAX_CONCURRENT_REQUESTS` (4 × `ORT_SESSIONS`): detect and upload requests worked on at
    /// once; the others wait (their bodies unread) within their deadline. With the per-request
    /// bounds this bounds the memory all clients together can make the server hold.
    pub max_concurrent_requests: usize,
    /// `MAX_REQUEST_PIXELS` (1,000,000,000): pixels all images of one request may decode in total
    /// (seconds of decoding, docs/reliability.md); images past it fail with `pixel_budget_exceeded`.
    pub max_request_pixels: u64,
    /// `LAMBDA_REQUEST_TIMEOUT_SECS` (25, under API Gateway's 30): deadline of a request behind
    /// API Gateway.
    pub lambda_request_timeout: Duration,
    /// Server connection and time bounds.
    pub server: ServerConfig,
    /// Detector settings.
    pub detector: DetectorConfig,
    /// `MODEL_URI` and its settings: the model comes from S3 (replacing `MODEL_PATH`).
    pub model_source: Option<ModelSource>,
    /// S3 settings.
    pub s3: S3Config,
    /// Metrics settings.
    pub metrics: MetricsConfig,
}

/// Where metrics go and who may read them (see docs/operations.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `METRICS` (on): record and export metrics; `off` installs no recorder (and serves no
    /// `/metrics`).
    pub enabled: bool,
    /// `METRICS_NAMESPACE` (`objdet`): the CloudWatch namespace of the EMF metrics (Lambda).
    pub namespace: String,
    /// `AWS_LAMBDA_FUNCTION_NAME` (`objdet`): the `service` dimension of every EMF metric.
    pub service: String,
    /// `METRICS_PUBLIC` (false): `objdet serve` answers `GET /metrics` without the API token.
    pub public: bool,
}

impl MetricsConfig {
    fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self> {
        let namespace = get("METRICS_NAMESPACE").unwrap_or_else(|| "objdet".into());
        // CloudWatch's rule for a namespace: 1-255 of these characters, not AWS's own prefix.
        let allowed = |c: char| c.is_ascii_alphanumeric() || " ._-/#:".contains(c);
        if namespace.len() > 255 || !namespace.chars().all(allowed) || namespace.starts_with("AWS/") {
            return Err(ConfigError::Invalid(
                "METRICS_NAMESPACE must be 1-255 letters, digits or . _ - / # : and space, not starting with AWS/"
                    .into(),
            ));
        }
        Ok(Self {
            enabled: get("METRICS").map(|v| flag("METRICS", Some(v))).transpose()?.unwrap_or(true),
            namespace,
            service: get("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|| "objdet".into()),
            public: flag("METRICS_PUBLIC", get("METRICS_PUBLIC"))?,
        })
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads configuration through `get` (used by tests with a map instead of the environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = trimmed(get);

        let secs = |k: &str, default: f64| -> Result<Duration> {
            let v: f64 = num(k, get(k), default)?;
            Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| ConfigError::Invalid(format!("{k}={v} must be a positive number of seconds")))
        };
        let model_path = PathBuf::from(get("MODEL_PATH").unwrap_or_else(|| DEFAULT_MODEL_PATH.into()));
        let ort_dylib_path = get("ORT_DYLIB_PATH").map(PathBuf::from).or_else(default_ort_dylib);
        let optimized_model_path = optimized_model_path(&get, &model_path);

        let vcpus = vcpus(get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").and_then(|m| m.parse().ok()));
        let sessions: usize = num("ORT_SESSIONS", get("ORT_SESSIONS"), vcpus)?;
        let intra_threads: usize = num("ORT_INTRA_THREADS", get("ORT_INTRA_THREADS"), 1)?;
        if sessions == 0 || intra_threads == 0 {
            return Err(ConfigError::Invalid("ORT_SESSIONS and ORT_INTRA_THREADS must be at least 1".into()));
        }
        let default_solo = if sessions > 1 && intra_threads == 1 { sessions } else { 0 };
        let solo_threads: usize = num("ORT_SOLO_THREADS", get("ORT_SOLO_THREADS"), default_solo)?;

        let model = model_overrides(&get)?;

        let upload_bucket = get("UPLOAD_BUCKET");
        let allowed_buckets = match get("ALLOWED_BUCKETS") {
            Some(list) => list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect(),
            None => upload_bucket.iter().cloned().collect(),
        };
        let prefix = |k: &str, d: &str| {
            let mut p = get(k).unwrap_or_else(|| d.to_string());
            if !p.ends_with('/') {
                p.push('/');
            }
            p
        };

        let max_body_bytes = num("MAX_BODY_BYTES", get("MAX_BODY_BYTES"), DEFAULT_MAX_BODY_BYTES)?;
        let cfg = Config {
            metrics: MetricsConfig::from_lookup(&get)?,
            api_token: get("API_TOKEN").map(|t| ApiToken::new(&t)).transpose()?,
            allow_unauthenticated: flag("ALLOW_UNAUTHENTICATED", get("ALLOW_UNAUTHENTICATED"))?,
            host: get("HOST").unwrap_or_else(|| "127.0.0.1".into()),
            port: num("PORT", get("PORT"), 5000)?,
            max_body_bytes,
            lambda_max_body_bytes: num(
                "LAMBDA_MAX_BODY_BYTES",
                get("LAMBDA_MAX_BODY_BYTES"),
                DEFAULT_LAMBDA_MAX_BODY_BYTES,
            )?,
            max_images: num("MAX_IMAGES", get("MAX_IMAGES"), 256)?,
            max_request_pixels: num("MAX_REQUEST_PIXELS", get("MAX_REQUEST_PIXELS"), 1_000_000_000)?,
            max_concurrent_requests: num("MAX_CONCURRENT_REQUESTS", get("MAX_CONCURRENT_REQUESTS"), 4 * sessions)?
                .max(1),
            lambda_request_timeout: secs("LAMBDA_REQUEST_TIMEOUT_SECS", 25.0)?,
            server: ServerConfig {
                max_connections: num("MAX_CONNECTIONS", get("MAX_CONNECTIONS"), 512usize)?.max(1),
                header_timeout: secs("HEADER_TIMEOUT_SECS", 10.0)?,
                body_timeout: secs("BODY_TIMEOUT_SECS", 15.0)?,
                request_timeout: secs("REQUEST_TIMEOUT_SECS", 300.0)?,
                shutdown_grace: secs("SHUTDOWN_GRACE_SECS", 8.0)?,
            },
            detector: DetectorConfig {
                model_path,
                ort_dylib_path,
                model,
                max_pixels: num("MAX_PIXELS", get("MAX_PIXELS"), 40_000_000)?,
                max_side: num("MAX_IMAGE_SIDE", get("MAX_IMAGE_SIDE"), 16_384)?,
                sessions,
                intra_threads,
                solo_threads,
                spin: flag("ORT_SPIN", get("ORT_SPIN"))?,
                optimized_model_path,
                warmup: flag("ORT_WARMUP", get("ORT_WARMUP"))?,
                scaled_jpeg: match get("JPEG_SCALED_DECODE") {
                    None => true,
                    v => flag("JPEG_SCALED_DECODE", v)?,
                },
            },
            model_source: model_source(&get)?,
            s3: S3Config {
                upload_bucket,
                allowed_buckets,
                uploads_prefix: prefix("UPLOADS_PREFIX", "uploads/"),
                results_prefix: prefix("RESULTS_PREFIX", "results/"),
                force_path_style: flag("S3_FORCE_PATH_STYLE", get("S3_FORCE_PATH_STYLE"))?,
                fetch_concurrency: num("S3_FETCH_CONCURRENCY", get("S3_FETCH_CONCURRENCY"), 8usize)?.max(1),
                max_bytes_in_flight: num("S3_MAX_BYTES_IN_FLIGHT", get("S3_MAX_BYTES_IN_FLIGHT"), 64usize << 20)?,
                read_prefix: if flag("S3_READ_ANY_KEY", get("S3_READ_ANY_KEY"))? {
                    String::new()
                } else {
                    get("S3_READ_PREFIX").unwrap_or_else(|| prefix("UPLOADS_PREFIX", "uploads/"))
                },
                presign_expires_secs: num("PRESIGN_EXPIRES_SECS", get("PRESIGN_EXPIRES_SECS"), 300)?,
                max_upload_bytes: num(
                    "MAX_UPLOAD_BYTES",
                    get("MAX_UPLOAD_BYTES"),
                    (16u64 << 20).min(max_body_bytes as u64),
                )?,
                max_upload_batch_bytes: num("MAX_UPLOAD_BATCH_BYTES", get("MAX_UPLOAD_BATCH_BYTES"), 512u64 << 20)?,
            },
        };
        if cfg.s3.max_upload_bytes > cfg.max_body_bytes as u64 {
            return Err(ConfigError::Invalid(
                "MAX_UPLOAD_BYTES must not exceed MAX_BODY_BYTES (the largest object detection reads)".into(),
            ));
        }
        if cfg.max_images == 0 {
            return Err(ConfigError::Invalid("MAX_IMAGES must be at least 1".into()));
        }
        if cfg.s3.uploads_prefix == cfg.s3.results_prefix {
            return Err(ConfigError::Invalid("UPLOADS_PREFIX and RESULTS_PREFIX must differ".into()));
        }
        Ok(cfg)
    }
}

/// `MODEL_URI`, `LABELS_URI`, `MODEL_SHA256`, `MODEL_MAX_BYTES`, `MODEL_DOWNLOAD_DIR`.
fn model_source(get: &impl Fn(&str) -> Option<String>) -> Result<Option<ModelSource>> {
    let uri = |k: &str| -> Result<Option<S3Uri>> {
        get(k)
            .map(|v| S3Uri::parse(&v).ok_or_else(|| malformed(k, &v, "S3 URI (s3://bucket/key[?versionId=...])")))
            .transpose()
    };
    let labels_uri = uri("LABELS_URI")?;
    let Some(model) = uri("MODEL_URI")? else {
        if labels_uri.is_some() || get("MODEL_SHA256").is_some() {
            return Err(ConfigError::Invalid("LABELS_URI and MODEL_SHA256 go with MODEL_URI, which is not set".into()));
        }
        return Ok(None);
    };
    let sha256 = match get("MODEL_SHA256") {
        None => None,
        Some(v) if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) => Some(v.to_ascii_lowercase()),
        Some(v) => return Err(malformed("MODEL_SHA256", &v, "SHA-256 (64 hex digits)")),
    };
    let max_bytes = match get("MODEL_MAX_BYTES") {
        None => DEFAULT_MODEL_MAX_BYTES,
        Some(v) => v
            .replace('_', "")
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| malformed("MODEL_MAX_BYTES", &v, "positive number"))?,
    };
    let dir = get("MODEL_DOWNLOAD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(download_dir_name(&model)));
    Ok(Some(ModelSource { uri: model, labels_uri, sha256, max_bytes, dir }))
}

/// `objdet-model-` + 16 hex digits of the URI's SHA-256: one directory per model object, so a
/// restarted server downloads over its last copy instead of leaving one per process.
fn download_dir_name(uri: &S3Uri) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(uri.to_string().as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("objdet-model-{hex}")
}

/// The `MODEL_*` overrides of the model's own description, and the thresholds.
fn model_overrides(get: &impl Fn(&str) -> Option<String>) -> Result<crate::detector::spec::Overrides> {
    use crate::detector::spec::{Format, Nms, Overrides, ResizeKind};
    let lower = |k: &str| get(k).map(|v| v.to_ascii_lowercase());
    let opt_num = |k: &str| -> Result<Option<f32>> {
        get(k).map(|v| v.parse::<f32>().map_err(|_| malformed(k, &v, "number"))).transpose()
    };
    let unit = |k: &str| -> Result<Option<f32>> {
        let v = opt_num(k)?;
        match v {
            Some(v) if !(0.0..=1.0).contains(&v) => Err(ConfigError::Invalid(format!("{k}={v} must be within 0..1"))),
            v => Ok(v),
        }
    };
    let triple = |k: &str| -> Result<Option<[f32; 3]>> {
        let Some(v) = get(k) else { return Ok(None) };
        let nums: Option<Vec<f32>> = v.split(',').map(|n| n.trim().parse().ok()).collect();
        match nums.as_deref() {
            Some(&[a]) => Ok(Some([a; 3])),
            Some(&[a, b, c]) => Ok(Some([a, b, c])),
            _ => Err(malformed(k, &v, "number or three comma-separated numbers")),
        }
    };
    let format = match lower("MODEL_FORMAT").as_deref() {
        None | Some("auto") => None,
        Some(f) => Some(Format::parse(f).ok_or_else(|| malformed("MODEL_FORMAT", f, "model format"))?),
    };
    let input_size = match get("MODEL_INPUT_SIZE") {
        None => None,
        Some(v) => {
            let lower = v.to_ascii_lowercase();
            let parse = |s: &str| s.trim().parse::<u32>().ok().filter(|n| (1..=8192).contains(n));
            let size = match lower.split_once('x') {
                Some((w, h)) => parse(w).zip(parse(h)),
                None => parse(&lower).map(|n| (n, n)),
            };
            Some(size.ok_or_else(|| malformed("MODEL_INPUT_SIZE", &v, "size (640 or 640x480, at most 8192)"))?)
        }
    };
    let resize = match lower("MODEL_RESIZE").as_deref() {
        None | Some("auto") => None,
        Some("stretch") => Some(ResizeKind::Stretch),
        Some("letterbox") => Some(ResizeKind::Letterbox),
        Some("none") => Some(ResizeKind::None),
        Some(other) => return Err(malformed("MODEL_RESIZE", other, "resize (stretch, letterbox, none)")),
    };
    let pad = match get("MODEL_PAD_VALUE") {
        None => None,
        Some(v) => Some(v.parse::<u8>().map_err(|_| malformed("MODEL_PAD_VALUE", &v, "value 0..255"))?),
    };
    let scale = match get("MODEL_INPUT_RANGE").as_deref() {
        None => None,
        Some("0..1") => Some(1.0 / 255.0),
        Some("0..255") => Some(1.0),
        Some(other) => return Err(malformed("MODEL_INPUT_RANGE", other, "range (0..1 or 0..255)")),
    };
    let bgr = match lower("MODEL_CHANNELS").as_deref() {
        None => None,
        Some("rgb") => Some(false),
        Some("bgr") => Some(true),
        Some(other) => return Err(malformed("MODEL_CHANNELS", other, "channel order (rgb, bgr)")),
    };
    let nms = match lower("MODEL_NMS").as_deref() {
        None | Some("auto") => None,
        Some("none") => Some(Nms::None),
        Some("class") => Some(Nms::PerClass),
        Some("agnostic") => Some(Nms::Agnostic),
        Some(other) => return Err(malformed("MODEL_NMS", other, "NMS policy (none, class, agnostic)")),
    };
    let std = triple("MODEL_STD")?;
    if std.is_some_and(|s| s.iter().any(|v| !v.is_normal())) {
        return Err(ConfigError::Invalid("MODEL_STD must be non-zero".into()));
    }
    let max_detections = match get("MAX_DETECTIONS") {
        None => None,
        Some(v) => Some(
            v.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| malformed("MAX_DETECTIONS", &v, "positive number"))?,
        ),
    };
    Ok(Overrides {
        format,
        input_size,
        resize,
        pad,
        scale,
        mean: triple("MODEL_MEAN")?,
        std,
        bgr,
        nms,
        labels_path: get("LABELS_PATH").map(PathBuf::from),
        score_threshold: unit("SCORE_THRESHOLD")?,
        nms_iou: unit("NMS_IOU")?,
        max_detections,
    })
}

/// `ORT_OPTIMIZED_MODEL_PATH`, or the default cache path (see [`DetectorConfig::optimized_model_path`]).
fn optimized_model_path(get: &impl Fn(&str) -> Option<String>, model: &Path) -> Option<PathBuf> {
    match get("ORT_OPTIMIZED_MODEL_PATH") {
        Some(v) if matches!(v.to_ascii_lowercase().as_str(), "off" | "none" | "false" | "0") => None,
        Some(v) => Some(PathBuf::from(v)),
        None if get("AWS_LAMBDA_FUNCTION_NAME").is_some() => None,
        None => {
            let dir = get("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| get("HOME").map(|h| Path::new(&h).join(".cache")))?;
            let stem = model.file_stem().unwrap_or_default().to_string_lossy();
            Some(dir.join("objdet").join(format!("{stem}.optimized.onnx")))
        }
    }
}

/// The first existing entry of [`ORT_DYLIB_CANDIDATES`], then `libonnxruntime.so` beside the executable.
fn default_ort_dylib() -> Option<PathBuf> {
    let beside_exe = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|d| d.join("libonnxruntime.so")));
    ORT_DYLIB_CANDIDATES.iter().map(PathBuf::from).chain(beside_exe).find(|p| p.exists())
}

/// vCPUs this process may use: on Lambda derived from the memory size (1,769 MB ≈ 1 vCPU, at most 6),
/// elsewhere the cgroup-aware available parallelism.
pub fn vcpus(lambda_memory_mb: Option<u64>) -> usize {
    match lambda_memory_mb {
        Some(mb) => ((mb as f64 / LAMBDA_MB_PER_VCPU as f64).round() as usize).clamp(1, 6),
        None => std::thread::available_parallelism().map(usize::from).unwrap_or(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn handler_names() {
        assert_eq!(Handler::from_env_value(Some("http")).unwrap(), Handler::Http);
        assert_eq!(Handler::from_env_value(Some("s3")).unwrap(), Handler::S3);
        let err = Handler::from_env_value(Some("bootstrap")).unwrap_err().to_string();
        assert!(err.contains("http, s3") && err.contains("ImageConfig.Command"), "{err}");
        assert!(Handler::from_env_value(None).unwrap_err().to_string().contains("_HANDLER is not set"));
    }

    #[test]
    fn process_settings_parse() {
        let process = |pairs: &[(&str, &str)]| {
            let map: std::collections::HashMap<String, String> =
                pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            ProcessConfig::from_lookup(|k| map.get(k).cloned())
        };
        let p = process(&[("_HANDLER", " s3 "), ("SELFTEST_EXPECT", "dog"), ("LOG_FORMAT", "JSON")]);
        assert_eq!(p.handler.unwrap(), Handler::S3);
        assert_eq!(p.selftest_expect, Expect::Label("dog".into()));
        assert!(p.log_json && !p.malloc_tuned_by_env);
        let p = process(&[("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")]);
        assert!(p.malloc_tuned_by_env && !p.log_json);
        assert_eq!(p.selftest_expect, Expect::Auto);
        assert!(p.handler.unwrap_err().to_string().contains("_HANDLER is not set"));
        assert!(process(&[("MALLOC_MMAP_THRESHOLD_", "1")]).malloc_tuned_by_env);
        assert_eq!(process(&[("SELFTEST_EXPECT", "none")]).selftest_expect, Expect::Nothing);
    }

    #[test]
    fn defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.port, 5000);
        assert_eq!(c.max_images, 256);
        assert_eq!(c.max_body_bytes, 64 << 20);
        assert_eq!(c.detector.max_pixels, 40_000_000);
        assert_eq!(c.detector.model, crate::detector::spec::Overrides::default());
        assert_eq!(c.s3.uploads_prefix, "uploads/");
        assert!(c.s3.allowed_buckets.is_empty());
    }

    #[test]
    fn optimized_graph_cache_defaults_to_the_user_cache_dir_except_on_lambda() {
        let path = |pairs: &[(&str, &str)]| cfg(pairs).unwrap().detector.optimized_model_path;
        let in_cache = PathBuf::from("/home/u/.cache/objdet/centernet_mobilenetv3_coco.optimized.onnx");
        assert_eq!(path(&[("HOME", "/home/u")]), Some(in_cache));
        let xdg = PathBuf::from("/xdg/objdet/m.optimized.onnx");
        assert_eq!(path(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/xdg"), ("MODEL_PATH", "/m/m.onnx")]), Some(xdg));
        assert_eq!(path(&[("HOME", "/home/u"), ("ORT_OPTIMIZED_MODEL_PATH", "off")]), None);
        assert_eq!(path(&[("ORT_OPTIMIZED_MODEL_PATH", "/c/g.onnx")]), Some(PathBuf::from("/c/g.onnx")));
        assert_eq!(path(&[("HOME", "/home/u"), ("AWS_LAMBDA_FUNCTION_NAME", "f")]), None);
        assert_eq!(path(&[]), None);
    }

    #[test]
    fn lambda_memory_maps_to_vcpus() {
        assert_eq!(vcpus(Some(128)), 1);
        assert_eq!(vcpus(Some(1769)), 1);
        assert_eq!(vcpus(Some(3538)), 2);
        assert_eq!(vcpus(Some(10240)), 6);
        let c = cfg(&[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "5307")]).unwrap();
        assert_eq!(c.detector.sessions, 3);
        let c = cfg(&[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "5307"), ("ORT_SESSIONS", "2")]).unwrap();
        assert_eq!(c.detector.sessions, 2);
    }

    #[test]
    fn a_solo_session_only_beside_several_single_threaded_pool_sessions() {
        let solo = |pairs: &[(&str, &str)]| cfg(pairs).unwrap().detector.solo_threads;
        assert_eq!(solo(&[("ORT_SESSIONS", "2")]), 2);
        assert_eq!(solo(&[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "5307")]), 3);
        assert_eq!(solo(&[("ORT_SESSIONS", "1")]), 0);
        assert_eq!(solo(&[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1769")]), 0);
        assert_eq!(solo(&[("ORT_SESSIONS", "2"), ("ORT_INTRA_THREADS", "2")]), 0);
        assert_eq!(solo(&[("ORT_SESSIONS", "2"), ("ORT_SOLO_THREADS", "0")]), 0);
        assert_eq!(solo(&[("ORT_SESSIONS", "4"), ("ORT_SOLO_THREADS", "2")]), 2);
    }

    #[test]
    fn model_overrides_parse() {
        use crate::detector::spec::{Format, Nms, ResizeKind};
        let c = cfg(&[
            ("MODEL_FORMAT", "Anchors"),
            ("MODEL_INPUT_SIZE", "640x480"),
            ("MODEL_RESIZE", "stretch"),
            ("MODEL_INPUT_RANGE", "0..255"),
            ("MODEL_MEAN", "123.7, 116.3, 103.5"),
            ("MODEL_STD", "58"),
            ("MODEL_CHANNELS", "BGR"),
            ("MODEL_NMS", "agnostic"),
            ("SCORE_THRESHOLD", "0.5"),
        ])
        .unwrap()
        .detector
        .model;
        assert_eq!(c.format, Some(Format::Anchors));
        assert_eq!(c.input_size, Some((640, 480)));
        assert_eq!(c.resize, Some(ResizeKind::Stretch));
        assert_eq!(c.scale, Some(1.0));
        assert_eq!(c.mean, Some([123.7, 116.3, 103.5]));
        assert_eq!(c.std, Some([58.0; 3]));
        assert_eq!((c.bgr, c.nms, c.score_threshold, c.nms_iou), (Some(true), Some(Nms::Agnostic), Some(0.5), None));
        assert_eq!(cfg(&[("MODEL_INPUT_SIZE", "512")]).unwrap().detector.model.input_size, Some((512, 512)));
        assert_eq!(cfg(&[("MODEL_FORMAT", "auto")]).unwrap().detector.model.format, None);
    }

    #[test]
    fn model_uris_parse_and_bad_ones_are_errors() {
        let u = S3Uri::parse("s3://my-models/detectors/yolo v8.onnx?versionId=3HL4kqtJlcpXroDTDmJ").unwrap();
        assert_eq!((u.bucket.as_str(), u.key.as_str()), ("my-models", "detectors/yolo v8.onnx"));
        assert_eq!((u.version_id.as_deref(), u.file_name()), (Some("3HL4kqtJlcpXroDTDmJ"), "yolo v8.onnx"));
        for bad in
            ["s3://b/k", "https://x/y", "s3://Bucket/k", "s3://bucket", "s3://bucket/", "s3://bucket/k?versionId="]
        {
            assert_eq!(S3Uri::parse(bad), None, "{bad}");
        }
        let c = cfg(&[("MODEL_URI", "s3://models/m.onnx"), ("MODEL_SHA256", &"AB".repeat(32))]).unwrap();
        let source = c.model_source.unwrap();
        assert_eq!((source.max_bytes, source.sha256), (256 << 20, Some("ab".repeat(32))));
        assert!(matches!(cfg(&[("MODEL_URI", "models/m.onnx")]), Err(ConfigError::Malformed { .. })));
        assert!(matches!(
            cfg(&[("MODEL_URI", "s3://models/m.onnx"), ("MODEL_SHA256", "abc")]),
            Err(ConfigError::Malformed { .. })
        ));
        assert!(matches!(cfg(&[("MODEL_SHA256", &"a".repeat(64))]), Err(ConfigError::Invalid(_))));
        assert_eq!(cfg(&[]).unwrap().model_source, None);
    }

    #[test]
    fn allowed_buckets_default_to_upload_bucket() {
        let c = cfg(&[("UPLOAD_BUCKET", "up")]).unwrap();
        assert_eq!(c.s3.allowed_buckets, vec!["up".to_string()]);
        let c = cfg(&[("UPLOAD_BUCKET", "up"), ("ALLOWED_BUCKETS", "a, b")]).unwrap();
        assert_eq!(c.s3.allowed_buckets, vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(matches!(cfg(&[("PORT", "http")]), Err(ConfigError::Malformed { expected: "number", .. })));
        assert!(matches!(cfg(&[("SCORE_THRESHOLD", "2")]), Err(ConfigError::Invalid(_))));
        assert!(matches!(cfg(&[("MODEL_FORMAT", "yolo")]), Err(ConfigError::Malformed { .. })));
        assert!(matches!(cfg(&[("MODEL_INPUT_SIZE", "0")]), Err(ConfigError::Malformed { .. })));
        assert!(matches!(cfg(&[("MODEL_MEAN", "1,2")]), Err(ConfigError::Malformed { .. })));
        assert!(matches!(cfg(&[("MODEL_STD", "0")]), Err(ConfigError::Invalid(_))));
        assert!(matches!(cfg(&[("ORT_SESSIONS", "0")]), Err(ConfigError::Invalid(_))));
        assert!(matches!(
            cfg(&[("S3_FORCE_PATH_STYLE", "maybe")]),
            Err(ConfigError::Malformed { expected: "boolean", .. })
        ));
        assert!(matches!(cfg(&[("UPLOADS_PREFIX", "x"), ("RESULTS_PREFIX", "x/")]), Err(ConfigError::Invalid(_))));
    }
}
