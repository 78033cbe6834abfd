//! The detector: bytes → decode (limits first) → preprocess as the model's [`ModelSpec`] says →
//! ORT → the model's head → NMS → boxes mapped back to the image.
//!
//! Any ONNX detector of the families in [`spec`] runs here: the model describes itself at load
//! (its inputs, outputs and metadata, read by [`onnx`] before any session is built).
//!
//! [`Model`] is one ORT session with its buffers; it is a plain synchronous object, usable on its
//! own (tests, benchmarks). [`Detector`] (in [`pool`]) owns the worker threads that run `Model`s
//! for callers, fed from one queue.

pub mod cpu;
pub mod decode;
pub mod dispatch;
pub mod error;
pub mod graph_cache;
pub mod heads;
pub mod jpeg_scan;
pub mod mask;
pub mod onnx;
pub mod pool;
pub mod postprocess;
pub mod preprocess;
pub mod rotated;
pub mod runtime;
pub mod spec;
pub mod transform;

pub use dispatch::SessionKind;
pub use pool::Detector;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use ort::session::{OutputSelector, RunOptions, Session, SessionInputValue};
use ort::value::{Tensor, TensorRef};

use crate::config::DetectorConfig;
use crate::telemetry::ms_since;
use decode::{Limits, RgbImage, decode_base64_into, decode_image_with};
use error::{DetectError, LoadError};
use heads::Candidate;
pub use postprocess::{BBox, Keypoint, Object, RotatedBox};
use preprocess::Preprocessor;
pub use preprocess::{InputTensor, TensorData};
pub use spec::ModelSpec;
pub use transform::Transform;

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

/// The outcome for one image: detections or the image's error (the detector's, or a caller's
/// wrapping it), with stage times either way.
#[derive(Debug)]
pub struct Outcome<E = DetectError> {
    /// Detections, or why there are none.
    pub result: Result<Detections, E>,
    /// Where this image's time went.
    pub times: StageTimes,
    /// The session that ran it (`None` if it never reached one).
    pub ran_on: Option<SessionKind>,
}

impl<E> Outcome<E> {
    /// An image that failed before reaching a session.
    pub fn failed(e: E) -> Self {
        Outcome { result: Err(e), times: StageTimes::default(), ran_on: None }
    }

    /// The same outcome with the error converted (a caller's error type wrapping the detector's).
    pub fn err_into<F: From<E>>(self) -> Outcome<F> {
        Outcome { result: self.result.map_err(F::from), times: self.times, ran_on: self.ran_on }
    }
}

/// The pixels a request may still decode (`MAX_REQUEST_PIXELS`), shared by all of its images.
///
/// Each image takes its width × height from the budget once its header is read and before its
/// pixels are decoded; an image that no longer fits fails with
/// [`DetectError::PixelBudgetExceeded`] and the others go on. This bounds the decoding CPU one request
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
    pub fn take(&self, pixels: u64) -> Result<(), DetectError> {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(pixels))
            .map(|_| ())
            .map_err(|_| DetectError::PixelBudgetExceeded { budget: self.total })
    }
}

/// Reads the model's interface and describes it ([`spec::probe`]) with the configured overrides;
/// nothing is built or written. A graph objdet cannot interpret is refused here, naming what it saw.
pub fn describe(cfg: &DetectorConfig) -> Result<ModelSpec, LoadError> {
    let path = &cfg.model_path;
    let info = onnx::ModelInfo::read(path).map_err(|e| LoadError::Model { path: path.clone(), source: e.into() })?;
    spec::probe(path, &info, &cfg.model).map_err(|source| LoadError::Spec { path: path.clone(), source })
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
    spec: Arc<ModelSpec>,
    pre: Preprocessor,
    tensor: InputTensor,
    /// Reused for each image's encoded bytes (base64 input) and decoded pixels.
    encoded: Vec<u8>,
    rgb: RgbImage,
    /// The head's outputs as f32: dimensions and elements, reused.
    outputs: Vec<(Vec<usize>, Vec<f32>)>,
    candidates: Vec<Candidate>,
    /// Mask buffers (segment models), reused.
    masks: mask::MaskScratch,
    limits: Limits,
    /// `JPEG_SCALED_DECODE`: large JPEGs decoded at a DCT scale (see [`decode::dct_scale`]).
    scaled_jpeg: bool,
}

impl Model {
    /// Loads one session of the configured model.
    pub fn load(cfg: &DetectorConfig) -> Result<Self, LoadError> {
        let spec = Arc::new(describe(cfg)?);
        // ONNX Runtime first: the weights container and cached tensors below call into it (ort
        // panics on a library it has not been told where to find).
        runtime::environment(cfg.ort_dylib_path.as_deref())?;
        let (source, _) = graph_cache::graph_sources(cfg);
        Self::with_parts(cfg, spec, &ort::session::builder::PrepackedWeights::new(), &source, runtime::Arena::Own)
    }

    fn with_parts(
        cfg: &DetectorConfig,
        spec: Arc<ModelSpec>,
        weights: &ort::session::builder::PrepackedWeights,
        source: &graph_cache::GraphSource,
        arena: runtime::Arena,
    ) -> Result<Self, LoadError> {
        let session = runtime::session_in(cfg, &spec, weights, source, arena)?;
        let mut selector = OutputSelector::no_default();
        for name in spec.head.outputs() {
            selector = selector.with(name);
        }
        let run_options = RunOptions::new()
            .map_err(|source| LoadError::Options { what: "run options", source })?
            .with_outputs(selector);
        Ok(Self {
            session,
            lead_pool: None,
            run_options,
            pre: Preprocessor::new(&spec.input),
            tensor: InputTensor::new(&spec.input),
            encoded: Vec::new(),
            rgb: RgbImage::default(),
            outputs: Vec::new(),
            candidates: Vec::new(),
            masks: mask::MaskScratch::default(),
            limits: cfg.limits(),
            scaled_jpeg: cfg.scaled_jpeg,
            spec,
        })
    }

    /// The model's description.
    pub fn spec(&self) -> &Arc<ModelSpec> {
        &self.spec
    }

    /// Detects objects in one input, recording the time of each stage.
    pub fn detect(&mut self, input: &Input, times: &mut StageTimes) -> Result<Detections, DetectError> {
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
    ) -> Result<Detections, DetectError> {
        let t = Instant::now();
        let mut rgb = std::mem::take(&mut self.rgb);
        let decoded = self.decode(input, budget, &mut rgb);
        times.decode_ms = ms_since(t);
        let result = decoded.and_then(|full| self.detect_scaled_on(kind, &rgb, full, times));
        self.release(rgb);
        result
    }

    /// Decodes `input` into `rgb` as serving does (limits first, EXIF orientation, DCT scaling
    /// where the model's input allows it); returns the image's own size.
    fn decode(
        &mut self,
        input: &Input,
        budget: Option<&PixelBudget>,
        rgb: &mut RgbImage,
    ) -> Result<(u32, u32), DetectError> {
        let admit = |w: u32, h: u32| budget.map_or(Ok(()), |b| b.take(u64::from(w) * u64::from(h)));
        let spec = &self.spec.input;
        let wanted = |w: u32, h: u32| preprocess::Geometry::wanted(spec, w, h);
        let want: Option<decode::Want<'_>> = self.scaled_jpeg.then_some(&wanted);
        let (limits, idct) = (&self.limits, spec.idct);
        match input {
            Input::Image(bytes) => decode_image_with(bytes, limits, idct, want, rgb, admit),
            Input::Base64(text) => decode_base64_into(text, &mut self.encoded)
                .and_then(|()| decode_image_with(&self.encoded, limits, idct, want, rgb, admit)),
        }
    }

    /// Keeps the image buffers for the next image unless an unusually large image grew them.
    fn release(&mut self, rgb: RgbImage) {
        if rgb.pixels.capacity() <= KEEP_BUFFER_BYTES {
            self.rgb = rgb;
        }
        if self.encoded.capacity() > KEEP_BUFFER_BYTES {
            self.encoded = Vec::new();
        }
        self.pre.release_buffers_over(KEEP_BUFFER_BYTES);
        self.tensor.release_over(KEEP_BUFFER_BYTES);
    }

    /// The input tensor [`Model::detect`] would give the model for `input` — decoded and
    /// preprocessed by the same code — without running it (calibration sets for quantization).
    pub fn input_for(&mut self, input: &Input) -> Result<&InputTensor, DetectError> {
        let mut rgb = std::mem::take(&mut self.rgb);
        let result =
            self.decode(input, None, &mut rgb).and_then(|full| self.pre.run_from(&rgb, full, &mut self.tensor));
        if rgb.pixels.capacity() <= KEEP_BUFFER_BYTES {
            self.rgb = rgb;
        }
        result.map(|_| &self.tensor)
    }

    /// Detects objects in already-decoded pixels.
    pub fn detect_rgb(&mut self, img: &RgbImage, times: &mut StageTimes) -> Result<Detections, DetectError> {
        self.detect_rgb_on(SessionKind::Pool, img, times)
    }

    fn detect_rgb_on(
        &mut self,
        kind: SessionKind,
        img: &RgbImage,
        times: &mut StageTimes,
    ) -> Result<Detections, DetectError> {
        self.detect_scaled_on(kind, img, (img.width, img.height), times)
    }

    /// Detection on a picture of an image of size `full` (smaller when its JPEG was decoded at a
    /// DCT scale); boxes and the reported size are the image's.
    fn detect_scaled_on(
        &mut self,
        kind: SessionKind,
        img: &RgbImage,
        full: (u32, u32),
        times: &mut StageTimes,
    ) -> Result<Detections, DetectError> {
        let t = Instant::now();
        let transform = self.pre.run_from(img, full, &mut self.tensor)?;
        times.preprocess_ms = ms_since(t);

        let t = Instant::now();
        self.run_on(kind, full.0, full.1)?;
        times.inference_ms = ms_since(t);

        let t = Instant::now();
        let objects = self.decode_outputs(&transform)?;
        times.postprocess_ms = ms_since(t);
        Ok(Detections { width: full.0, height: full.1, objects })
    }

    /// The head, NMS and the mapping back, on the outputs of the last run.
    fn decode_outputs(&mut self, transform: &Transform) -> Result<Vec<Object>, DetectError> {
        let views: Vec<heads::Output<'_>> =
            self.outputs.iter().map(|(dims, data)| heads::Output { dims, data }).collect();
        heads::decode(&self.spec.head, &views, self.spec.score_threshold, &mut self.candidates)
            .map_err(|e| DetectError::Output(e.into()))?;
        Ok(postprocess::finish(&mut self.candidates, &self.spec, transform, &views, &mut self.masks))
    }

    /// The bare `session.run` on the current input tensor (the benchmark times this against the
    /// whole pipeline). An image of `width`×`height` is what an original-size input is told.
    pub fn run_session(&mut self) -> Result<(), DetectError> {
        if self.tensor.shape == [0; 4] {
            // Not filled yet: a grey image of the input's size.
            let (w, h) = (self.spec.input.width, self.spec.input.height);
            let grey = RgbImage { width: w, height: h, pixels: vec![114; w as usize * h as usize * 3] };
            self.pre.run(&grey, &mut self.tensor)?;
        }
        self.run_on(SessionKind::Pool, self.spec.input.width, self.spec.input.height)
    }

    /// Fills the input tensor from `img` (benchmarks time the stages one by one).
    pub fn preprocess(&mut self, img: &RgbImage) -> Result<Transform, DetectError> {
        self.pre.run(img, &mut self.tensor)
    }

    /// Decodes the outputs of the last run for an image mapped by `transform` (benchmarks).
    pub fn postprocess(&mut self, transform: &Transform) -> Result<Vec<Object>, DetectError> {
        self.decode_outputs(transform)
    }

    fn run_on(&mut self, kind: SessionKind, width: u32, height: u32) -> Result<(), DetectError> {
        let image: SessionInputValue<'_> = match &self.tensor.data {
            TensorData::F32(v) => {
                TensorRef::from_array_view((self.tensor.shape, v.as_slice())).map_err(DetectError::Inference)?.into()
            }
            TensorData::U8(v) => {
                TensorRef::from_array_view((self.tensor.shape, v.as_slice())).map_err(DetectError::Inference)?.into()
            }
        };
        let mut inputs: Vec<(std::borrow::Cow<'_, str>, SessionInputValue<'_>)> =
            vec![(self.spec.input.name.as_str().into(), image)];
        if let Some(name) = &self.spec.input.sizes_input {
            let sizes = Tensor::from_array(([1usize, 2], vec![i64::from(width), i64::from(height)]))
                .map_err(DetectError::Inference)?;
            inputs.push((name.as_str().into(), sizes.into()));
        }
        // The lead's pool session is `lead_pool`; every other session is `session`.
        let session = match (kind, self.lead_pool.as_mut()) {
            (SessionKind::Pool, Some(pool)) => pool,
            _ => &mut self.session,
        };
        let outputs = session.run_with_options(inputs, &self.run_options).map_err(DetectError::Inference)?;
        let names = self.spec.head.outputs();
        self.outputs.resize_with(names.len(), Default::default);
        for (name, (dims, data)) in names.into_iter().zip(self.outputs.iter_mut()) {
            let value = outputs.get(name).ok_or_else(|| DetectError::NoOutput(crate::error::excerpt(name)))?;
            read_output(value, dims, data)?;
        }
        Ok(())
    }

    /// Gives the lead worker's model its pool session, which shares its buffers.
    fn add_lead_pool_session(&mut self, session: Session) {
        self.lead_pool = Some(session);
    }
}

/// Copies an output tensor into `dims` and `data` as f32, whatever its numeric element type
/// (labels and class ids often come as int64).
fn read_output(value: &ort::value::DynValue, dims: &mut Vec<usize>, data: &mut Vec<f32>) -> Result<(), DetectError> {
    use ort::value::{TensorElementType as T, ValueType};
    fn copy<E: ort::value::PrimitiveTensorElementType + Copy>(
        value: &ort::value::DynValue,
        dims: &mut Vec<usize>,
        data: &mut Vec<f32>,
        f: impl Fn(E) -> f32,
    ) -> Result<(), DetectError> {
        let (shape, elems) = value.try_extract_tensor::<E>().map_err(DetectError::Inference)?;
        dims.clear();
        dims.extend(shape.iter().map(|&d| usize::try_from(d).unwrap_or(0)));
        data.clear();
        data.extend(elems.iter().map(|&e| f(e)));
        Ok(())
    }
    match value.dtype() {
        ValueType::Tensor { ty: T::Float32, .. } => copy::<f32>(value, dims, data, |e| e),
        ValueType::Tensor { ty: T::Float64, .. } => copy::<f64>(value, dims, data, |e| e as f32),
        ValueType::Tensor { ty: T::Int64, .. } => copy::<i64>(value, dims, data, |e| e as f32),
        ValueType::Tensor { ty: T::Int32, .. } => copy::<i32>(value, dims, data, |e| e as f32),
        ValueType::Tensor { ty: T::Uint8, .. } => copy::<u8>(value, dims, data, f32::from),
        other => Err(DetectError::Output(format!("an output of type {other:?}, not a number tensor").into())),
    }
}
