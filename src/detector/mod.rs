//! The detector: bytes → decode (limits first) → resize → tensor → ORT → rows → boxes → NMS.
//!
//! [`Model`] is one ORT session with its buffers; it is a plain synchronous object, usable on its
//! own (tests, benchmarks). [`Detector`] (in [`pool`]) owns the worker threads that run `Model`s
//! for callers, fed from one queue.

pub mod decode;
pub mod dispatch;
pub mod graph_cache;
pub mod jpeg_scan;
pub mod pool;
pub mod postprocess;
pub mod preprocess;
pub mod runtime;

pub use dispatch::SessionKind;
pub use pool::Detector;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use ort::session::{OutputSelector, RunOptions, Session};
use ort::value::TensorRef;

use crate::config::DetectorConfig;
use crate::error::{ImageError, StartupError};
use crate::telemetry::ms_since;
use decode::{Limits, RgbImage, decode_base64_into, decode_image_into};
pub use postprocess::{BBox, Object};
use preprocess::{INPUT_LEN, INPUT_SIZE, Preprocessor};

/// The bytes of one image to detect on.
#[derive(Debug, Clone)]
pub enum Input {
    /// Encoded image bytes (JPEG/PNG/WebP).
    Image(Bytes),
    /// Base64 text of an encoded image (decoded on the worker, in parallel).
    Base64(Bytes),
}

/// Time spent in each stage for one image, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    /// Base64 and image decoding.
    pub decode_ms: f64,
    /// Resize and tensor fill.
    pub preprocess_ms: f64,
    /// `session.run`.
    pub inference_ms: f64,
    /// Thresholding, scaling and NMS.
    pub postprocess_ms: f64,
}

/// What the detector found in one image.
#[derive(Debug, Clone)]
pub struct Detections {
    /// Image width after EXIF orientation.
    pub width: u32,
    /// Image height after EXIF orientation.
    pub height: u32,
    /// Objects, best first, boxes in image pixels.
    pub objects: Vec<Object>,
}

/// The outcome for one image: detections or the image's error, with stage times either way.
#[derive(Debug)]
pub struct Outcome {
    /// Detections, or why there are none.
    pub result: Result<Detections, ImageError>,
    /// Where this image's time went.
    pub times: StageTimes,
    /// The session that ran it (`None` if it never reached one).
    pub ran_on: Option<SessionKind>,
}

impl Outcome {
    /// An image that failed before reaching a session.
    pub fn failed(e: ImageError) -> Self {
        Outcome { result: Err(e), times: StageTimes::default(), ran_on: None }
    }
}

/// The pixels a request may still decode (`MAX_REQUEST_PIXELS`), shared by all of its images.
///
/// Each image takes its width × height from the budget once its header is read and before its
/// pixels are decoded; an image that no longer fits fails with
/// [`ImageError::PixelBudgetExceeded`] and the others go on. This bounds the decoding CPU one request
/// can cost whatever its images' sizes and count.
#[derive(Debug)]
pub struct PixelBudget {
    total: u64,
    left: AtomicU64,
}

impl PixelBudget {
    /// A budget of `total` pixels.
    pub fn new(total: u64) -> Arc<Self> {
        Arc::new(Self { total, left: AtomicU64::new(total) })
    }

    /// Takes `pixels` from the budget, or refuses without taking anything.
    pub fn take(&self, pixels: u64) -> Result<(), ImageError> {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(pixels))
            .map(|_| ())
            .map_err(|_| ImageError::PixelBudgetExceeded { budget: self.total })
    }
}

/// Reads the labels file: one class name per line.
pub fn load_labels(path: &std::path::Path) -> Result<Arc<[String]>, StartupError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| StartupError::Labels { path: path.to_path_buf(), source })?;
    let labels: Vec<String> = text.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
    if labels.is_empty() {
        return Err(StartupError::NoLabels(path.to_path_buf()));
    }
    Ok(labels.into())
}

/// Per-image buffers larger than this (an image over ~5 MP) are not kept for the next image.
pub const KEEP_BUFFER_BYTES: usize = 16 << 20;

/// One ORT session with its reusable buffers. Synchronous; owned by one thread at a time.
///
/// The pool's lead worker has two sessions sharing these buffers (see [`dispatch`]): `session` is
/// its solo session and `lead_pool` its pool session, once built.
pub struct Model {
    session: Session,
    lead_pool: Option<Session>,
    run_options: RunOptions<ort::session::HasSelectedOutputs>,
    pre: Preprocessor,
    tensor: Vec<f32>,
    /// Reused for each image's encoded bytes (base64 input) and decoded pixels.
    encoded: Vec<u8>,
    rgb: RgbImage,
    labels: Arc<[String]>,
    score_threshold: f32,
    nms_iou: f32,
    limits: Limits,
}

impl Model {
    /// Loads one session of the configured model.
    pub fn load(cfg: &DetectorConfig) -> Result<Self, StartupError> {
        let labels = load_labels(&cfg.labels_path)?;
        let (source, _) = graph_cache::graph_sources(cfg);
        Self::with_parts(cfg, labels, &ort::session::builder::PrepackedWeights::new(), &source, runtime::Arena::Own)
    }

    fn with_parts(
        cfg: &DetectorConfig,
        labels: Arc<[String]>,
        weights: &ort::session::builder::PrepackedWeights,
        source: &graph_cache::GraphSource,
        arena: runtime::Arena,
    ) -> Result<Self, StartupError> {
        let session = runtime::session_in(cfg, weights, source, arena)?;
        let run_options = RunOptions::new()
            .map_err(|source| StartupError::Options { what: "run options", source })?
            .with_outputs(OutputSelector::no_default().with(runtime::OUTPUT_NAME));
        Ok(Self {
            session,
            lead_pool: None,
            run_options,
            pre: Preprocessor::new(),
            tensor: vec![0.0; INPUT_LEN],
            encoded: Vec::new(),
            rgb: RgbImage::default(),
            labels,
            score_threshold: cfg.score_threshold,
            nms_iou: cfg.nms_iou,
            limits: cfg.limits(),
        })
    }

    /// Detects objects in one input, recording the time of each stage.
    pub fn detect(&mut self, input: &Input, times: &mut StageTimes) -> Result<Detections, ImageError> {
        self.detect_on(SessionKind::Pool, input, None, times)
    }

    /// [`Model::detect`] on the session of `kind`, taking the image's pixels from `budget`
    /// before decoding them.
    ///
    /// The base64 and pixel buffers are kept between images (pages already mapped: with a fixed
    /// malloc mmap threshold, see `memory`, fresh multi-MB buffers per image would fault ~1,100
    /// pages each time); any buffer that grew past [`KEEP_BUFFER_BYTES`] for an unusually large
    /// image is released afterwards, so memory returns to its usual level after every image.
    pub fn detect_on(
        &mut self,
        kind: SessionKind,
        input: &Input,
        budget: Option<&PixelBudget>,
        times: &mut StageTimes,
    ) -> Result<Detections, ImageError> {
        let t = Instant::now();
        let mut rgb = std::mem::take(&mut self.rgb);
        let admit = |w: u32, h: u32| budget.map_or(Ok(()), |b| b.take(u64::from(w) * u64::from(h)));
        let decoded = match input {
            Input::Image(bytes) => decode_image_into(bytes, &self.limits, &mut rgb, admit),
            Input::Base64(text) => decode_base64_into(text, &mut self.encoded)
                .and_then(|()| decode_image_into(&self.encoded, &self.limits, &mut rgb, admit)),
        };
        times.decode_ms = ms_since(t);
        let result = decoded.and_then(|()| self.detect_rgb_on(kind, &rgb, times));
        if rgb.pixels.capacity() <= KEEP_BUFFER_BYTES {
            self.rgb = rgb;
        }
        if self.encoded.capacity() > KEEP_BUFFER_BYTES {
            self.encoded = Vec::new();
        }
        self.pre.release_buffers_over(KEEP_BUFFER_BYTES);
        result
    }

    /// Detects objects in already-decoded pixels.
    pub fn detect_rgb(&mut self, img: &RgbImage, times: &mut StageTimes) -> Result<Detections, ImageError> {
        self.detect_rgb_on(SessionKind::Pool, img, times)
    }

    fn detect_rgb_on(
        &mut self,
        kind: SessionKind,
        img: &RgbImage,
        times: &mut StageTimes,
    ) -> Result<Detections, ImageError> {
        let t = Instant::now();
        self.pre.run(img, &mut self.tensor)?;
        times.preprocess_ms = ms_since(t);

        let t = Instant::now();
        let rows = self.run_on(kind)?;
        times.inference_ms = ms_since(t);

        let t = Instant::now();
        let objects =
            postprocess::postprocess(&rows, img.width, img.height, self.score_threshold, self.nms_iou, &self.labels);
        times.postprocess_ms = ms_since(t);
        Ok(Detections { width: img.width, height: img.height, objects })
    }

    /// The bare `session.run` on the current input tensor, returning the raw detection rows.
    /// (The benchmark times this against the whole pipeline.)
    pub fn run_session(&mut self) -> Result<Vec<f32>, ImageError> {
        self.run_on(SessionKind::Pool)
    }

    fn run_on(&mut self, kind: SessionKind) -> Result<Vec<f32>, ImageError> {
        let shape = [1usize, INPUT_SIZE as usize, INPUT_SIZE as usize, 3];
        let input = TensorRef::from_array_view((shape, self.tensor.as_slice())).map_err(ImageError::Inference)?;
        // The lead's pool session is `lead_pool`; every other session is `session`.
        let session = match (kind, self.lead_pool.as_mut()) {
            (SessionKind::Pool, Some(pool)) => pool,
            _ => &mut self.session,
        };
        let outputs =
            session.run_with_options(ort::inputs![input], &self.run_options).map_err(ImageError::Inference)?;
        let value = outputs.get(runtime::OUTPUT_NAME).ok_or(ImageError::NoOutput(runtime::OUTPUT_NAME))?;
        let (_, rows) = value.try_extract_tensor::<f32>().map_err(ImageError::Inference)?;
        Ok(rows.to_vec())
    }

    /// Gives the lead worker's model its pool session, which shares its buffers.
    fn add_lead_pool_session(&mut self, session: Session) {
        self.lead_pool = Some(session);
    }

    /// Mutable access to the input tensor (benchmarks fill it directly).
    pub fn input_tensor(&mut self) -> &mut [f32] {
        &mut self.tensor
    }
}
