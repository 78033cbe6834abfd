//! The request service: a request's images (inline base64, a raw body or S3 keys) → per-image
//! results with timing. Knows nothing of HTTP servers or Lambda; every front door calls it.

pub mod error;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;

use crate::api::{DetectResponse, ImageResult, S3Keys, Timing, Upload, UploadsRequest, UploadsResponse};
use crate::config::Config;
use crate::detector::error::LoadError;
use crate::detector::{Detector, Input, Outcome, PixelBudget};
use crate::error::Coded as _;
use crate::s3::{S3Error, S3Store};
use crate::telemetry::metrics::{self, Source};
use crate::telemetry::ms_since;
pub use error::{ImageError, RequestError, StartupError};

type Result<T, E = RequestError> = std::result::Result<T, E>;

/// One image's outcome as the service answers it.
type ItemOutcome = Outcome<ImageError>;

/// When and how a request body arrived (measured by the front door).
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// When the front door started handling the request.
    pub start: Instant,
    /// Time spent receiving the body.
    pub receive_ms: f64,
    /// Body size in bytes.
    pub payload_bytes: u64,
}

impl Arrival {
    /// A request whose body was already in memory (`receive_ms` = 0).
    pub fn now(payload_bytes: usize) -> Self {
        Self { start: Instant::now(), receive_ms: 0.0, payload_bytes: payload_bytes as u64 }
    }
}

/// Detection as a service: limits, batching, S3 and timing around the [`Detector`].
#[derive(Debug, Clone)]
pub struct DetectService {
    detector: Arc<Detector>,
    s3: Option<S3Store>,
    config: Arc<Config>,
    /// Time after a request's start past which its images not yet detected are answered
    /// `deadline_exceeded` (and dropped from the queue) instead of being waited for.
    image_deadline: Option<std::time::Duration>,
    /// The front door this service answers for (the `source` of its metrics).
    source: Source,
}

/// Queued image text a JSON body is read ahead of detection by (see
/// [`DetectService::detect_json_stream`]): a whole Lambda-sized body (≤ 6 MB) and more.
pub const READ_AHEAD_BYTES: usize = 8 << 20;

impl DetectService {
    /// Loads the detector (on a blocking thread, off the async runtime) and, when a bucket is configured, the S3
    /// client. With `MODEL_URI`, the model is first downloaded (see [`crate::model_source`]).
    pub async fn from_config(config: Arc<Config>) -> Result<Self, StartupError> {
        let init = Instant::now();
        let config = match &config.model_source {
            None => config,
            Some(source) => {
                let fetched = crate::model_source::fetch(source, &config.s3).await?;
                let mut local = (*config).clone();
                local.detector.model_path = fetched.model;
                if fetched.labels.is_some() {
                    local.detector.model.labels_path = fetched.labels;
                }
                Arc::new(local)
            }
        };
        let t = Instant::now();
        // Loading is blocking work (file reads, ORT): off the async runtime's threads.
        let detector_config = config.detector.clone();
        let loaded = tokio::task::spawn_blocking(move || Detector::load(&detector_config))
            .await
            .unwrap_or(Err(LoadError::ThreadExited("model loader")));
        let detector = loaded.map_err(|e| match &config.model_source {
            Some(source) => StartupError::FromUri { uri: source.uri.to_string(), source: Box::new(e.into()) },
            None => e.into(),
        })?;
        let detector = Arc::new(detector);
        crate::memory::release_free_memory();
        metrics::started(ms_since(init));
        tracing::info!(
            model = %config.detector.model_path.display(),
            sessions = config.detector.sessions,
            intra_threads = config.detector.intra_threads,
            solo_threads = config.detector.solo_threads,
            load_ms = ms_since(t),
            "model loaded"
        );
        let s3_wanted = config.s3.upload_bucket.is_some() || !config.s3.allowed_buckets.is_empty();
        let s3 = if s3_wanted { Some(S3Store::from_env(config.s3.clone()).await) } else { None };
        Ok(Self::new(detector, s3, config))
    }

    /// Builds the service around a loaded detector and an optional S3 store.
    pub fn new(detector: Arc<Detector>, s3: Option<S3Store>, config: Arc<Config>) -> Self {
        Self { detector, s3, config, image_deadline: None, source: Source::Local }
    }

    /// The same service, its requests counted as coming through `source`.
    pub fn with_source(mut self, source: Source) -> Self {
        self.source = source;
        self
    }

    /// The front door this service answers for.
    pub fn source(&self) -> Source {
        self.source
    }

    /// `answer`, recorded in the metrics when it completes (a request dropped before, by its
    /// deadline or a client that left, is counted by the front door that answers it).
    async fn observed<E: crate::error::Coded>(
        &self,
        answer: impl std::future::Future<Output = Result<DetectResponse, E>>,
    ) -> Result<DetectResponse, E> {
        let answer = answer.await;
        match &answer {
            Ok(response) => metrics::answered(self.source, response),
            Err(e) => metrics::failed(self.source, e.code()),
        }
        answer
    }

    /// The same service, answering the images of a request that are not detected `after` its
    /// start with `deadline_exceeded`, so that a front door with a deadline (API Gateway's 30 s)
    /// gets the rest of the batch answered in time instead of losing all of it.
    pub fn with_image_deadline(mut self, after: std::time::Duration) -> Self {
        self.image_deadline = Some(after);
        self
    }

    /// `outcome`, or `deadline_exceeded` once the request's deadline has passed (dropping the
    /// image's job, which takes it off the queue).
    fn within<E, F>(&self, start: Instant, outcome: F) -> impl std::future::Future<Output = ItemOutcome> + use<E, F>
    where
        F: std::future::Future<Output = Outcome<E>>,
        ImageError: From<E>,
    {
        let deadline = self.image_deadline;
        async move {
            match deadline {
                None => outcome.await.err_into(),
                Some(after) => tokio::time::timeout_at((start + after).into(), outcome).await.map_or_else(
                    |_| Outcome::failed(ImageError::DeadlineExceeded { secs: after.as_secs_f64() }),
                    Outcome::err_into,
                ),
            }
        }
    }

    /// The configuration in effect.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The detector.
    pub fn detector(&self) -> &Arc<Detector> {
        &self.detector
    }

    /// The S3 store, when configured.
    pub fn s3(&self) -> Option<&S3Store> {
        self.s3.as_ref()
    }

    /// `POST /api/detect` with a JSON body that is still arriving: inline base64 images or S3 keys.
    ///
    /// Each image is queued for detection as soon as its string is complete. The body is read
    /// ahead of detection by at most [`READ_AHEAD_BYTES`] of queued image text (or `2 × sessions
    /// + 2` images, if those are larger), so neither a large body nor the decoded images of the
    /// whole batch are ever held at once (TCP flow control holds the sender back). A body that
    /// fits is read whole at once, so a client that sends it and hangs up is noticed (by hyper,
    /// which then drops this future) while its images are still queued, and they are skipped.
    /// `receive_ms` counts only the time spent waiting for body bytes.
    pub async fn detect_json_stream<S>(&self, body: S, start: Instant) -> Result<DetectResponse>
    where
        S: futures::Stream<Item = Result<Bytes>> + Unpin,
    {
        self.observed(self.json_stream(body, start)).await
    }

    async fn json_stream<S>(&self, mut body: S, start: Instant) -> Result<DetectResponse>
    where
        S: futures::Stream<Item = Result<Bytes>> + Unpin,
    {
        let max_in_flight = self.max_in_flight();
        let budget = self.pixel_budget();
        let mut scanner = crate::body_scanner::BodyScanner::new();
        let mut events = Vec::new();
        let mut pending: std::collections::VecDeque<(futures::future::BoxFuture<'static, Outcome>, usize)> =
            Default::default();
        let mut pending_bytes = 0usize;
        let mut outcomes: Vec<ItemOutcome> = Vec::new();
        let (mut names, mut s3) = (None, None);
        let (mut received, mut images, mut wait) = (0usize, 0usize, std::time::Duration::ZERO);
        loop {
            let t = Instant::now();
            let chunk = body.next().await;
            wait += t.elapsed();
            let chunk = match chunk {
                None => break,
                Some(Err(e)) => return Err(e),
                Some(Ok(c)) => c,
            };
            received += chunk.len();
            scanner.feed(&chunk, &mut events)?;
            for event in events.drain(..) {
                match event {
                    crate::body_scanner::Event::Image(text) => {
                        images += 1;
                        self.check_count(images)?;
                        let len = text.len();
                        pending_bytes += len;
                        let queued = self.detector.start_within(Input::Base64(Bytes::from(text)), Some(budget.clone()));
                        pending.push_back((queued, len));
                        while pending.len() > max_in_flight && pending_bytes > READ_AHEAD_BYTES {
                            if let Some((oldest, bytes)) = pending.pop_front() {
                                outcomes.push(self.within(start, oldest).await);
                                pending_bytes -= bytes;
                            }
                        }
                    }
                    crate::body_scanner::Event::Names(n) => names = Some(n),
                    crate::body_scanner::Event::S3(k) => s3 = Some(k),
                }
            }
        }
        scanner.finish()?;
        let arrival = Arrival { start, receive_ms: wait.as_secs_f64() * 1e3, payload_bytes: received as u64 };
        match s3 {
            Some(_) if scanner.has_field("images") => {
                Err(RequestError::Invalid("send either \"images\" or \"s3\", not both".into()))
            }
            Some(keys) => {
                if names.is_some() {
                    return Err(RequestError::Invalid(
                        "\"names\" is not used with \"s3\": results are named by key".into(),
                    ));
                }
                self.s3_keys(keys, arrival).await
            }
            None if images == 0 => Err(RequestError::NoImages),
            None => {
                let names = resolve_names(names, images)?;
                for (p, _) in pending {
                    outcomes.push(self.within(start, p).await);
                }
                Ok(self.respond(names.into_iter().zip(outcomes).collect(), arrival, None))
            }
        }
    }

    /// Detects a batch of named inputs (inline images, local files), in order.
    pub async fn detect_inputs(&self, items: Vec<(String, Input)>, arrival: Arrival) -> Result<DetectResponse> {
        self.observed(self.inputs(items, arrival)).await
    }

    async fn inputs(&self, items: Vec<(String, Input)>, arrival: Arrival) -> Result<DetectResponse> {
        if items.is_empty() {
            return Err(RequestError::NoImages);
        }
        self.check_count(items.len())?;
        let budget = self.pixel_budget();
        let (names, pending): (Vec<_>, Vec<_>) = items
            .into_iter()
            .map(|(name, input)| (name, self.detector.start_within(input, Some(budget.clone()))))
            .unzip();
        let outcomes = futures::future::join_all(pending.into_iter().map(|p| self.within(arrival.start, p))).await;
        Ok(self.respond(names.into_iter().zip(outcomes).collect(), arrival, None))
    }

    /// `POST /api/detect` with a raw image body: one result.
    pub async fn detect_raw(&self, body: Bytes, name: Option<String>, arrival: Arrival) -> Result<DetectResponse> {
        self.observed(self.raw(body, name, arrival)).await
    }

    async fn raw(&self, body: Bytes, name: Option<String>, arrival: Arrival) -> Result<DetectResponse> {
        if body.is_empty() {
            return Err(RequestError::NoImages);
        }
        let job = self.detector.start_within(Input::Image(body), Some(self.pixel_budget()));
        let outcome = self.within(arrival.start, job).await;
        Ok(self.respond(vec![(name.unwrap_or_else(|| "image-0".into()), outcome)], arrival, None))
    }

    /// S3-keys mode: fetch the objects concurrently and detect each as soon as it arrives.
    ///
    /// Bounded like the inline stream: at most `S3_FETCH_CONCURRENCY` keys are fetched or detected
    /// at once, and the bytes of fetched objects not yet detected never exceed
    /// `S3_MAX_BYTES_IN_FLIGHT` (an object larger than that runs alone), so memory does not grow
    /// with the number of keys. Results keep the order of the keys.
    pub async fn detect_s3(&self, req: S3Keys, arrival: Arrival) -> Result<DetectResponse> {
        self.observed(self.s3_keys(req, arrival)).await
    }

    async fn s3_keys(&self, req: S3Keys, arrival: Arrival) -> Result<DetectResponse> {
        let s3 = self.s3.as_ref().ok_or(S3Error::NotConfigured)?;
        let bucket = s3.readable_bucket(req.bucket.as_deref())?;
        if req.keys.is_empty() {
            return Err(RequestError::NoImages);
        }
        self.check_count(req.keys.len())?;
        s3.check_readable_keys(&req.keys)?;
        let fetch_start = Instant::now();
        let max_object = self.config.max_body_bytes;
        let in_flight = crate::s3::Allowance::new(s3.config().max_bytes_in_flight);
        let budget = self.pixel_budget();
        let mut fetches = futures::stream::iter(req.keys.clone())
            .map(|key| {
                let (s3, detector, bucket) = (s3.clone(), self.detector.clone(), bucket.clone());
                let (in_flight, budget) = (in_flight.clone(), budget.clone());
                let fetched_at = Arc::new(std::sync::OnceLock::new());
                let at = fetched_at.clone();
                let job = async move {
                    let fetched = match s3.get(&bucket, &key, max_object, Some(&in_flight)).await {
                        Ok(fetched) => fetched,
                        Err(e) => return Outcome::failed(ImageError::Fetch(e)),
                    };
                    let _ = at.set(Instant::now());
                    let (bytes, permit) = fetched.into_parts();
                    let outcome = detector.start_within(Input::Image(bytes), Some(budget)).await;
                    drop(permit); // the image's bytes went with its job
                    outcome.err_into()
                };
                let job = self.within(arrival.start, job);
                async move { (job.await, fetched_at.get().copied()) }
            })
            .buffered(s3.config().fetch_concurrency);
        let mut outcomes = Vec::with_capacity(req.keys.len());
        let mut last_fetch = fetch_start;
        while let Some((outcome, fetched_at)) = fetches.next().await {
            last_fetch = last_fetch.max(fetched_at.unwrap_or(fetch_start));
            outcomes.push(outcome);
        }
        let s3_fetch_ms = last_fetch.duration_since(fetch_start).as_secs_f64() * 1e3;
        Ok(self.respond(req.keys.into_iter().zip(outcomes).collect(), arrival, Some(s3_fetch_ms)))
    }

    /// `POST /api/uploads`: presigned PUT URLs under `UPLOADS_PREFIX`, each signed for its
    /// file's exact size and content type.
    pub async fn presign_uploads(&self, req: UploadsRequest) -> Result<UploadsResponse> {
        let s3 = self.s3.as_ref().ok_or(S3Error::NotConfigured)?;
        let bucket = s3.config().upload_bucket.clone().ok_or(S3Error::NotConfigured)?;
        let limits = s3.config();
        // What the request is (sizes of at least 1, known types) comes before how much of it there is.
        let mut extensions = Vec::with_capacity(req.files.len());
        for file in &req.files {
            if file.size == 0 {
                return Err(RequestError::Invalid("every file needs a size of at least 1 byte".into()));
            }
            let ext = crate::detector::decode::Format::of_media_type(&file.content_type)
                .filter(|f| f.media_type == file.content_type)
                .map(|f| f.extensions[0])
                .ok_or_else(|| RequestError::UnsupportedMediaType(crate::error::excerpt(&file.content_type)))?;
            extensions.push(ext);
        }
        if req.files.is_empty() {
            return Err(RequestError::NoImages);
        }
        self.check_count(req.files.len())?;
        let mut total = 0u64;
        for file in &req.files {
            if file.size > limits.max_upload_bytes {
                return Err(RequestError::UploadTooLarge {
                    what: "a file",
                    size: file.size,
                    limit: limits.max_upload_bytes,
                });
            }
            total = total.saturating_add(file.size);
        }
        if total > limits.max_upload_batch_bytes {
            return Err(RequestError::UploadTooLarge {
                what: "the files together",
                size: total,
                limit: limits.max_upload_batch_bytes,
            });
        }
        let batch = uuid::Uuid::new_v4();
        let prefix = &limits.uploads_prefix;
        let mut uploads = Vec::with_capacity(req.files.len());
        for (i, (file, ext)) in req.files.iter().zip(extensions).enumerate() {
            let key = format!("{prefix}{batch}/{i}.{ext}");
            let (url, headers) = s3.presign_put(&bucket, &key, &file.content_type, file.size).await?;
            let headers = headers.into_iter().collect();
            uploads.push(Upload { key, url, expires_in: limits.presign_expires_secs, headers });
        }
        Ok(UploadsResponse { bucket, uploads })
    }

    /// Images queued or in ORT per request before the body (or S3) is read further.
    fn max_in_flight(&self) -> usize {
        2 * self.detector.sessions() + 2
    }

    /// A fresh `MAX_REQUEST_PIXELS` budget for one request's images.
    fn pixel_budget(&self) -> Arc<PixelBudget> {
        PixelBudget::new(self.config.max_request_pixels)
    }

    fn check_count(&self, count: usize) -> Result<()> {
        if count > self.config.max_images {
            return Err(RequestError::TooManyImages { count, limit: self.config.max_images });
        }
        Ok(())
    }

    fn respond(&self, items: Vec<(String, ItemOutcome)>, arrival: Arrival, s3_fetch_ms: Option<f64>) -> DetectResponse {
        let results: Vec<ImageResult> = items
            .into_iter()
            .map(|(name, outcome)| {
                if let Err(e) = &outcome.result {
                    tracing::info!(image = %crate::error::excerpt(&name), code = %e.code(), error = %e.message(), "image failed");
                    metrics::image_failed(e.code());
                }
                ImageResult::of(name, outcome)
            })
            .collect();
        let timing =
            Timing::of(&results, arrival.payload_bytes, arrival.receive_ms, s3_fetch_ms, ms_since(arrival.start));
        DetectResponse { results, timing }
    }

    /// One uploaded object (the S3 trigger): its one result, named by its key.
    ///
    /// What retrying cannot mend — the object is gone, too large, or S3 refuses it — is that
    /// result's error; any other S3 failure is `Err`, so that the caller can retry.
    pub async fn detect_object(&self, bucket: &str, key: &str) -> Result<DetectResponse, S3Error> {
        self.observed(self.object(bucket, key)).await
    }

    async fn object(&self, bucket: &str, key: &str) -> Result<DetectResponse, S3Error> {
        let s3 = self.s3.as_ref().ok_or(S3Error::NotConfigured)?;
        let start = Instant::now();
        let fetched = s3.get(bucket, key, self.config.max_body_bytes, None).await;
        let s3_fetch_ms = ms_since(start);
        let (payload_bytes, outcome) = match fetched {
            Ok(fetched) => {
                let (bytes, _) = fetched.into_parts();
                let len = bytes.len() as u64;
                (len, self.detector.start_within(Input::Image(bytes), Some(self.pixel_budget())).await.err_into())
            }
            Err(e) if e.is_permanent() => (0, Outcome::failed(ImageError::Fetch(e))),
            Err(e) => return Err(e),
        };
        let arrival = Arrival { start, receive_ms: 0.0, payload_bytes };
        Ok(self.respond(vec![(key.to_string(), outcome)], arrival, Some(s3_fetch_ms)))
    }
}

/// `names` as sent (one per image), or `image-0`, `image-1`, ...
fn resolve_names(names: Option<Vec<String>>, count: usize) -> Result<Vec<String>> {
    match names {
        None => Ok((0..count).map(|i| format!("image-{i}")).collect()),
        Some(n) if n.len() == count => Ok(n),
        Some(n) => Err(RequestError::NamesMismatch { images: count, names: n.len() }),
    }
}
