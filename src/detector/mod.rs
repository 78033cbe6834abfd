//! The detector: bytes → decode (limits first) → resize → tensor → ORT → rows → boxes → NMS.
//!
//! [`Model`] is one ORT session with its buffers; it is a plain synchronous object, usable on its
//! own (tests, benchmarks). [`Detector`] owns a small pool of worker threads, each owning one
//! `Model`, fed from one queue.
//!
//! Why a pool of sessions on dedicated threads rather than one session behind a mutex:
//! `Session::run` needs `&mut self`, so one session serialises every image; on this model the
//! per-image cost also includes decode and resize, which a single session would leave the
//! other cores idle for. With N workers (default: one per vCPU, one intra-op thread each),
//! image *i+1* is decoded and resized on one core while image *i* is in ORT on another, and
//! inference never runs on the async executor: callers only await a oneshot reply.
//! Measurements behind the default are in `docs/performance.md`.

pub mod decode;
pub mod graph_cache;
pub mod postprocess;
pub mod preprocess;
pub mod runtime;

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use ort::session::{OutputSelector, RunOptions, Session};
use ort::value::TensorRef;

use crate::api::{Object, ms_since};
use crate::config::DetectorConfig;
use crate::error::{Error, Result};
use decode::{RgbImage, decode_base64_into, decode_image_into};
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
    pub result: Result<Detections>,
    /// Where this image's time went.
    pub times: StageTimes,
}

/// Reads the labels file: one class name per line.
pub fn load_labels(path: &std::path::Path) -> Result<Arc<[String]>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Startup(format!("cannot read labels {} (LABELS_PATH): {e}", path.display())))?;
    let labels: Vec<String> = text.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
    if labels.is_empty() {
        return Err(Error::Startup(format!("labels file {} is empty", path.display())));
    }
    Ok(labels.into())
}

/// Per-image buffers larger than this (an image over ~5 MP) are not kept for the next image.
pub const KEEP_BUFFER_BYTES: usize = 16 << 20;

/// One ORT session with its reusable buffers. Synchronous; owned by one thread at a time.
pub struct Model {
    session: Session,
    run_options: RunOptions<ort::session::HasSelectedOutputs>,
    pre: Preprocessor,
    tensor: Vec<f32>,
    /// Reused for each image's encoded bytes (base64 input) and decoded pixels.
    encoded: Vec<u8>,
    rgb: RgbImage,
    labels: Arc<[String]>,
    score_threshold: f32,
    nms_iou: f32,
    max_pixels: u64,
}

impl Model {
    /// Loads one session of the configured model.
    pub fn load(cfg: &DetectorConfig) -> Result<Self> {
        let labels = load_labels(&cfg.labels_path)?;
        let (source, _) = graph_cache::graph_sources(cfg);
        Self::with_parts(cfg, labels, &ort::session::builder::PrepackedWeights::new(), &source)
    }

    fn with_parts(
        cfg: &DetectorConfig,
        labels: Arc<[String]>,
        weights: &ort::session::builder::PrepackedWeights,
        source: &graph_cache::GraphSource,
    ) -> Result<Self> {
        let session = runtime::session(cfg, weights, source)?;
        let run_options = RunOptions::new()
            .map_err(|e| Error::Startup(format!("run options: {e}")))?
            .with_outputs(OutputSelector::no_default().with(runtime::OUTPUT_NAME));
        Ok(Self {
            session,
            run_options,
            pre: Preprocessor::new(),
            tensor: vec![0.0; INPUT_LEN],
            encoded: Vec::new(),
            rgb: RgbImage::default(),
            labels,
            score_threshold: cfg.score_threshold,
            nms_iou: cfg.nms_iou,
            max_pixels: cfg.max_pixels,
        })
    }

    /// Detects objects in one input, recording the time of each stage.
    ///
    /// The base64 and pixel buffers are kept between images (pages already mapped: with a fixed
    /// malloc mmap threshold, see `memory`, fresh multi-MB buffers per image would fault ~1,100
    /// pages each time); one that grew past [`KEEP_BUFFER_BYTES`] for an unusually large image
    /// is released afterwards.
    pub fn detect(&mut self, input: &Input, times: &mut StageTimes) -> Result<Detections> {
        let t = Instant::now();
        let mut rgb = std::mem::take(&mut self.rgb);
        let decoded = match input {
            Input::Image(bytes) => decode_image_into(bytes, self.max_pixels, &mut rgb),
            Input::Base64(text) => decode_base64_into(text, &mut self.encoded)
                .and_then(|()| decode_image_into(&self.encoded, self.max_pixels, &mut rgb)),
        };
        times.decode_ms = ms_since(t);
        let result = decoded.and_then(|()| self.detect_rgb(&rgb, times));
        if rgb.pixels.capacity() <= KEEP_BUFFER_BYTES {
            self.rgb = rgb;
        }
        if self.encoded.capacity() > KEEP_BUFFER_BYTES {
            self.encoded = Vec::new();
        }
        result
    }

    /// Detects objects in already-decoded pixels.
    pub fn detect_rgb(&mut self, img: &RgbImage, times: &mut StageTimes) -> Result<Detections> {
        let t = Instant::now();
        self.pre.run(img, &mut self.tensor)?;
        times.preprocess_ms = ms_since(t);

        let t = Instant::now();
        let rows = self.run_session()?;
        times.inference_ms = ms_since(t);

        let t = Instant::now();
        let objects =
            postprocess::postprocess(&rows, img.width, img.height, self.score_threshold, self.nms_iou, &self.labels);
        times.postprocess_ms = ms_since(t);
        Ok(Detections { width: img.width, height: img.height, objects })
    }

    /// The bare `session.run` on the current input tensor, returning the raw detection rows.
    /// (The benchmark times this against the whole pipeline.)
    pub fn run_session(&mut self) -> Result<Vec<f32>> {
        let shape = [1usize, INPUT_SIZE as usize, INPUT_SIZE as usize, 3];
        let input = TensorRef::from_array_view((shape, self.tensor.as_slice()))
            .map_err(|e| Error::Inference(format!("input tensor: {e}")))?;
        let outputs = self
            .session
            .run_with_options(ort::inputs![input], &self.run_options)
            .map_err(|e| Error::Inference(e.to_string()))?;
        let value = outputs
            .get(runtime::OUTPUT_NAME)
            .ok_or_else(|| Error::Inference(format!("model returned no {}", runtime::OUTPUT_NAME)))?;
        let (_, rows) = value.try_extract_tensor::<f32>().map_err(|e| Error::Inference(e.to_string()))?;
        Ok(rows.to_vec())
    }

    /// Mutable access to the input tensor (benchmarks fill it directly).
    pub fn input_tensor(&mut self) -> &mut [f32] {
        &mut self.tensor
    }
}

struct Job {
    input: Input,
    reply: tokio::sync::oneshot::Sender<Outcome>,
}

/// A pool of worker threads, each owning one [`Model`], fed from one FIFO queue.
///
/// Cheap to share (`Arc<Detector>`); dropping the last handle stops the workers.
pub struct Detector {
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    labels: Arc<[String]>,
    sessions: usize,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector").field("sessions", &self.sessions).finish_non_exhaustive()
    }
}

impl Detector {
    /// Loads ONNX Runtime, the labels and `cfg.sessions` sessions (built in parallel, sharing
    /// packed weights), and starts one worker per session.
    pub fn load(cfg: &DetectorConfig) -> Result<Self> {
        let labels = load_labels(&cfg.labels_path)?;
        // The cached weights are read while the runtime library loads (or after it, if no thread
        // can be started).
        let reader = {
            let cfg = cfg.clone();
            std::thread::Builder::new().name("objdet-cache".into()).spawn(move || graph_cache::plan(&cfg)).ok()
        };
        let t = Instant::now();
        let env = runtime::environment(cfg.ort_dylib_path.as_deref());
        tracing::debug!(ms = ms_since(t), "ONNX Runtime loaded");
        let plan = match reader {
            Some(reader) => reader.join().map_err(|_| Error::Internal("reading the graph cache panicked".into()))?,
            None => graph_cache::plan(cfg),
        };
        env?;
        let weights = ort::session::builder::PrepackedWeights::new();
        let (first_source, other_sources) = plan.sources();
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let mut workers = Vec::with_capacity(cfg.sessions);
        for i in 0..cfg.sessions {
            let (cfg, labels, weights, rx, ready) =
                (cfg.clone(), labels.clone(), weights.clone(), rx.clone(), ready_tx.clone());
            let source = if i == 0 { first_source.clone() } else { other_sources.clone() };
            let handle = std::thread::Builder::new()
                .name(format!("objdet-infer-{i}"))
                .spawn(move || match Model::with_parts(&cfg, labels, &weights, &source) {
                    Ok(mut model) => {
                        // The first run of a session allocates its buffers and is ~40 % slower; with
                        // ORT_WARMUP it is paid during start-up (e.g. provisioned concurrency) instead.
                        let t = Instant::now();
                        let warm = if cfg.warmup { model.run_session().map(|_| ()) } else { Ok(()) };
                        tracing::debug!(worker = i, ms = ms_since(t), "session warmed up");
                        let _ = ready.send(warm);
                        worker(model, &rx);
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                })
                .map_err(|e| Error::Startup(format!("cannot start worker thread: {e}")))?;
            workers.push(handle);
        }
        drop(ready_tx);
        let detector =
            Detector { queue: Mutex::new(Some(tx)), workers: Mutex::new(workers), labels, sessions: cfg.sessions };
        for _ in 0..cfg.sessions {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(Error::Startup("a worker exited while loading the model".into())),
            }
        }
        Ok(detector)
    }

    /// Number of sessions (images processed at once).
    pub fn sessions(&self) -> usize {
        self.sessions
    }

    /// The class names, index = class id.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    fn submit(&self, input: Input) -> tokio::sync::oneshot::Receiver<Outcome> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = queue.as_ref() {
            // A send error means the workers are gone: the dropped reply reports it below.
            let _ = tx.send(Job { input, reply });
        }
        rx
    }

    /// Queues one image now and returns a future of its outcome (lets a caller keep feeding the
    /// queue while earlier images are in ORT). Never blocks the async executor.
    pub fn start(&self, input: Input) -> futures::future::BoxFuture<'static, Outcome> {
        let rx = self.submit(input);
        Box::pin(async move { Self::outcome(rx.await) })
    }

    /// Detects objects in one image without blocking the async executor.
    pub async fn detect(&self, input: Input) -> Outcome {
        self.start(input).await
    }

    /// Detects objects in one image, blocking the calling thread (CLI and benchmarks).
    pub fn detect_blocking(&self, input: Input) -> Outcome {
        Self::outcome(self.submit(input).blocking_recv())
    }

    fn outcome(r: std::result::Result<Outcome, tokio::sync::oneshot::error::RecvError>) -> Outcome {
        r.unwrap_or_else(|_| Outcome {
            result: Err(Error::Internal("the inference worker stopped".into())),
            times: StageTimes::default(),
        })
    }
}

impl Drop for Detector {
    fn drop(&mut self) {
        if let Ok(mut q) = self.queue.lock() {
            q.take();
        }
        if let Ok(mut w) = self.workers.lock() {
            for h in w.drain(..) {
                let _ = h.join();
            }
        }
    }
}

fn worker(mut model: Model, rx: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let job = {
            let guard = rx.lock().unwrap_or_else(|p| p.into_inner());
            guard.recv()
        };
        let Ok(Job { input, reply }) = job else { return };
        if reply.is_closed() {
            continue; // the client went away: skip the work
        }
        let mut times = StageTimes::default();
        // A panic inside a decoder must cost one image, not the worker.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| model.detect(&input, &mut times)))
            .unwrap_or_else(|_| Err(Error::Internal("the image decoder panicked".into())));
        let _ = reply.send(Outcome { result, times });
    }
}
