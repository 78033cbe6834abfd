//! `objdet eval`: a labelled set streamed through the serving path, scored as pycocotools does.
//!
//! Each image goes to the same [`Detector`] a request uses (limits-first decode, EXIF
//! orientation, `JPEG_SCALED_DECODE`, the model's preprocessing, head, NMS, mapping back), on
//! every session of the pool, a bounded number at a time: nothing here re-implements a stage.
//! Its objects are matched to the set's by [`coco::Evaluator`] as soon as they arrive, so memory
//! holds the images in flight and ~20 bytes per detection, whatever the set's size.

pub mod calibration;
pub mod coco;
pub mod dataset;
pub mod obb;
pub mod plot;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt as _;

use crate::detector::{Detector, Input, ModelSpec};
use crate::error::Coded as _;
use crate::telemetry::ms_since;
pub use coco::{EngineError, Evaluator, Metrics};
pub use dataset::{DataError, Dataset};

/// Thresholds an evaluation runs the model with, as the references evaluate: every detection
/// scoring at least 0.001, at most 100 per image (COCO's limit; Ultralytics' `val` keeps 300 at
/// IoU 0.7 NMS).
pub const EVAL_SCORE_THRESHOLD: f32 = 0.001;
/// See [`EVAL_SCORE_THRESHOLD`].
pub const EVAL_MAX_DETECTIONS: usize = 100;

/// Why an evaluation could not run (an image that fails is counted in the report instead).
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The set cannot be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The engine refused the records.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The model and the set share no class.
    #[error(
        "the model's classes ({model}) and the set's ({data}) have no name in common: \
         nothing could be scored (a model without class names is matched by position only when the \
         counts agree)"
    )]
    NoCommonClass {
        /// The model's names, shortened.
        model: String,
        /// The set's names, shortened.
        data: String,
    },
}

/// How the model's classes map onto the set's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClassMap {
    /// `name` (case and surrounding spaces ignored) or `position` (a model without names).
    pub matched_by: &'static str,
    /// For each model class id, the set's class index.
    #[serde(skip)]
    pub to_data: Vec<Option<usize>>,
    /// The set's classes the model does not have (their AP is 0 where they have objects).
    pub data_only: Vec<String>,
    /// The model's classes the set does not have (their detections are not scored).
    pub model_only: Vec<String>,
}

impl ClassMap {
    /// Matches `spec`'s classes to `data_names`.
    pub fn new(spec: &ModelSpec, data_names: &[String]) -> Result<Self, EvalError> {
        let count = spec.head.classes().unwrap_or(spec.names.len()).max(spec.names.len());
        let model: Vec<String> = (0..count as u32).map(|i| spec.label(i)).collect();
        let norm = |s: &str| s.trim().to_lowercase();
        let generated = spec.names_source == crate::detector::spec::NamesSource::Generated;
        let (matched_by, to_data): (&'static str, Vec<Option<usize>>) = if generated && count == data_names.len() {
            ("position", (0..count).map(Some).collect())
        } else {
            let index: BTreeMap<String, usize> =
                data_names.iter().enumerate().rev().map(|(i, n)| (norm(n), i)).collect();
            ("name", model.iter().map(|n| index.get(&norm(n)).copied()).collect())
        };
        let covered: std::collections::BTreeSet<usize> = to_data.iter().flatten().copied().collect();
        if covered.is_empty() {
            let short = |v: &[String]| crate::error::excerpt(&v.join(", "));
            return Err(EvalError::NoCommonClass { model: short(&model), data: short(data_names) });
        }
        let data_only = (0..data_names.len()).filter(|i| !covered.contains(i)).map(|i| data_names[i].clone()).collect();
        let model_only = model.iter().zip(&to_data).filter(|(_, d)| d.is_none()).map(|(n, _)| n.clone()).collect();
        Ok(Self { matched_by, to_data, data_only, model_only })
    }
}

/// An image that could not be evaluated (it is left out of the metrics, as Ultralytics leaves
/// out images it cannot read; its objects are counted in [`Report::objects_skipped`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedImage {
    /// The image's name in the set.
    pub name: String,
    /// The error code a request would have answered.
    pub code: String,
    /// Why.
    pub message: String,
}

/// The thresholds in effect.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Thresholds {
    /// Detections scoring below were dropped by the model's pipeline.
    pub score: f32,
    /// NMS IoU.
    pub nms_iou: f32,
    /// At most this many detections per image, after NMS.
    pub max_detections: usize,
    /// IoU thresholds of the AP (pycocotools': .50:.05:.95).
    pub ap_iou: &'static str,
    /// pycocotools' maxDets.
    pub max_dets: [usize; 3],
}

/// Mean time per image in each stage, ms.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StageMeans {
    /// Base64/image decoding.
    pub decode_ms: f64,
    /// Resize and tensor fill.
    pub preprocess_ms: f64,
    /// `session.run`.
    pub inference_ms: f64,
    /// Head, NMS, mapping back.
    pub postprocess_ms: f64,
}

/// What `objdet eval` found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The model's file name (what `objdet tune --eval-json` matches models by).
    pub model_file: String,
    /// The model, as `/healthz` and the logs describe it.
    pub model: String,
    /// The set.
    pub data: String,
    /// Images in the set.
    pub images: usize,
    /// Images evaluated.
    pub evaluated: usize,
    /// Ground-truth objects in the evaluated images.
    pub objects: usize,
    /// Objects in the images that failed.
    pub objects_skipped: usize,
    /// Images the pipeline could not take.
    pub failed: Vec<FailedImage>,
    /// Ground-truth boxes that reached outside their image, clamped to it.
    pub boxes_clamped: usize,
    /// Images without a label file (background images).
    pub unlabelled: usize,
    /// COCO images whose decoded size differs from the file's `width`/`height`.
    pub size_mismatches: usize,
    /// Detections of model classes the set does not have (not scored).
    pub detections_unscored: usize,
    /// Class matching.
    pub classes: ClassMap,
    /// Thresholds.
    pub thresholds: Thresholds,
    /// `JPEG_SCALED_DECODE` as it was.
    pub jpeg_scaled_decode: bool,
    /// AP @[.50:.95] (COCO's mAP).
    pub map50_95: f64,
    /// AP @ .50.
    pub map50: f64,
    /// AP @ .75.
    pub map75: f64,
    /// Every headline number, named as pycocotools prints them (-1: nothing to measure).
    pub stats: BTreeMap<&'static str, f64>,
    /// AP @[.50:.95] per class of the set (`null`: no object of it in the set).
    pub per_class: BTreeMap<String, Option<f64>>,
    /// AP @ .50 per class.
    pub per_class_ap50: BTreeMap<String, Option<f64>>,
    /// Wall time per evaluated image, ms (all sessions busy).
    pub ms_per_image: f64,
    /// Mean stage times per image.
    pub stages: StageMeans,
    /// The engine.
    pub engine: String,
    /// The task's own metric (segment, pose and obb models), beside the boxes'.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskMetrics>,
    /// Full metrics (PR curves for the plot).
    #[serde(skip)]
    pub metrics: Metrics,
    /// The set's class names in its order (the table's rows).
    #[serde(skip)]
    pub names: Vec<String>,
}

/// A task's own metric beside the boxes' (segment: masks, pose: keypoints, obb: rotated boxes).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskMetrics {
    /// pycocotools' `iouType`: `segm`, `keypoints` (or hotcoco's `obb`).
    pub iou_type: &'static str,
    /// AP @[.50:.95] (mask IoU, OKS or rotated IoU).
    pub map50_95: f64,
    /// AP @ .50.
    pub map50: f64,
    /// AP @ .75.
    pub map75: f64,
    /// Every headline number, named as pycocotools prints them.
    pub stats: BTreeMap<&'static str, f64>,
    /// AP @[.50:.95] per class of the set.
    pub per_class: BTreeMap<String, Option<f64>>,
    /// The OKS sigmas (pose): COCO's for 17 keypoints, else 1/K each as Ultralytics' val.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oks_sigmas: Option<Vec<f64>>,
    /// How the objects were matched.
    pub note: &'static str,
}

/// One detection as COCO's results format has it (`--detections`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CocoResult {
    /// The image's id.
    pub image_id: u64,
    /// The set's category id (its position for a YOLO set).
    pub category_id: u64,
    /// `[x, y, w, h]`, pixels.
    pub bbox: [f64; 4],
    /// Confidence.
    pub score: f64,
}

/// Options of a run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Images detected at once (default: twice the sessions, plus two).
    pub in_flight: Option<usize>,
    /// Whether the decoder was told to use DCT scaling (reported only).
    pub jpeg_scaled_decode: bool,
}

/// Runs `data` through `detector`; `progress(done, total)` after each image; `sink` gets each
/// image's scored detections (for `--detections`).
pub async fn run(
    detector: Arc<Detector>,
    data: &Dataset,
    opts: &Options,
    mut progress: impl FnMut(usize, usize),
    mut sink: impl FnMut(&[CocoResult]),
) -> Result<Report, EvalError> {
    let spec = detector.spec().clone();
    let classes = ClassMap::new(&spec, &data.names)?;
    let mut evaluator = Evaluator::new(&data.names)?;
    let task = TaskEval::new(spec.head.extra(), &data.names)?;
    let mut task = task;
    let in_flight = opts.in_flight.unwrap_or(2 * detector.sessions() + 2).max(1);
    // A session's first run allocates its arena and packs weights: each session runs the set's
    // first image once before the clock starts, so ms_per_image is the steady state.
    if let Some(first) = data.samples.first().and_then(|s| std::fs::read(&s.path).ok()) {
        let first = bytes::Bytes::from(first);
        let warm = (0..detector.sessions()).map(|_| detector.start_within(Input::Image(first.clone()), None));
        futures::future::join_all(warm).await;
    }
    let start = Instant::now();
    let mut outcomes = futures::stream::iter(data.samples.iter())
        .map(|sample| {
            let detector = detector.clone();
            async move {
                match tokio::fs::read(&sample.path).await {
                    Ok(bytes) => (sample, Ok(detector.start_within(Input::Image(bytes.into()), None).await)),
                    Err(e) => (sample, Err(e)),
                }
            }
        })
        .buffered(in_flight);
    let (mut failed, mut evaluated, mut objects, mut skipped) = (Vec::new(), 0usize, 0usize, 0usize);
    let (mut clamped, mut mismatches, mut unscored) = (0usize, 0usize, 0usize);
    let mut stages = StageMeans::default();
    let (mut truth, mut found, mut results) = (Vec::new(), Vec::new(), Vec::new());
    let mut done = 0;
    while let Some((sample, outcome)) = outcomes.next().await {
        done += 1;
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                skipped += sample.objects.len();
                failed.push(FailedImage {
                    name: sample.name.clone(),
                    code: "unreadable".into(),
                    message: e.to_string(),
                });
                progress(done, data.samples.len());
                continue;
            }
        };
        let detections = match outcome.result {
            Ok(d) => d,
            Err(e) => {
                skipped += sample.objects.len();
                failed.push(FailedImage {
                    name: sample.name.clone(),
                    code: e.code().to_string(),
                    message: e.message(),
                });
                progress(done, data.samples.len());
                continue;
            }
        };
        let t = outcome.times;
        stages.decode_ms += t.decode_ms;
        stages.preprocess_ms += t.preprocess_ms;
        stages.inference_ms += t.inference_ms;
        stages.postprocess_ms += t.postprocess_ms;
        if sample.size.is_some_and(|s| s != (detections.width, detections.height)) {
            mismatches += 1;
        }
        truth.clear();
        for object in &sample.objects {
            let b = data.pixel_box(object, detections.width, detections.height);
            clamped += usize::from(b.clamped);
            truth.push(coco::Truth { class: object.class, xywh: b.xywh, area: object.area, iscrowd: object.iscrowd });
        }
        found.clear();
        results.clear();
        for o in &detections.objects {
            let Some(class) = classes.to_data.get(o.class_id as usize).copied().flatten() else {
                unscored += 1;
                continue;
            };
            let b = o.bbox;
            let xywh = [f64::from(b.x1), f64::from(b.y1), f64::from(b.x2 - b.x1), f64::from(b.y2 - b.y1)];
            found.push(coco::Found { class, xywh, score: f64::from(o.score) });
            results.push(CocoResult {
                image_id: sample.id,
                category_id: class as u64,
                bbox: xywh,
                score: f64::from(o.score),
            });
        }
        evaluator.add(sample.id, detections.width, detections.height, &truth, &found)?;
        if let Some(t) = task.as_mut() {
            t.add(sample, &truth, &detections, &classes)?;
        }
        sink(&results);
        evaluated += 1;
        objects += sample.objects.len();
        progress(done, data.samples.len());
    }
    let wall_ms = ms_since(start);
    let metrics = evaluator.finish()?;
    let task = task.map(|t| t.finish(&data.names)).transpose()?;
    let n = evaluated.max(1) as f64;
    for v in [&mut stages.decode_ms, &mut stages.preprocess_ms, &mut stages.inference_ms, &mut stages.postprocess_ms] {
        *v /= n;
    }
    let named = |v: &[Option<f64>]| data.names.iter().cloned().zip(v.iter().copied()).collect();
    Ok(Report {
        model_file: spec.file.clone(),
        model: spec.summary(),
        data: data.source.display().to_string(),
        images: data.samples.len(),
        evaluated,
        objects,
        objects_skipped: skipped,
        failed,
        boxes_clamped: clamped,
        unlabelled: data.unlabelled,
        size_mismatches: mismatches,
        detections_unscored: unscored,
        classes,
        thresholds: Thresholds {
            score: spec.score_threshold,
            nms_iou: spec.nms_iou,
            max_detections: spec.max_detections,
            ap_iou: "0.50:0.05:0.95",
            max_dets: [1, 10, 100],
        },
        jpeg_scaled_decode: opts.jpeg_scaled_decode,
        map50_95: metrics.map50_95,
        map50: metrics.map50,
        map75: metrics.map75,
        stats: Metrics::STAT_NAMES.iter().copied().zip(metrics.stats()).collect(),
        per_class: named(&metrics.per_class),
        per_class_ap50: named(&metrics.per_class_ap50),
        ms_per_image: wall_ms / n,
        stages,
        engine: format!(
            "hotcoco {} (pycocotools-compatible COCOeval, bbox{})",
            HOTCOCO_VERSION,
            task.as_ref().map_or(String::new(), |t| match t.iou_type {
                "obb" => "; obb: Ultralytics' probiou matching and AP, src/eval/obb.rs".to_string(),
                kind => format!(" and {kind}"),
            })
        ),
        task,
        metrics,
        names: data.names.clone(),
    })
}

/// The second evaluator of a segment, pose or obb model: its objects with their shapes.
struct TaskEval {
    engine: TaskEngine,
    kind: coco::Kind,
    /// Keypoints per object and values per keypoint (pose).
    keypoints: (usize, usize),
    sigmas: Option<Vec<f64>>,
    truth: Vec<(coco::Truth, coco::Shape)>,
    found: Vec<(coco::Found, coco::Shape)>,
}

/// pycocotools' engine (masks, keypoints), or Ultralytics' OBB metric.
enum TaskEngine {
    Coco(Box<Evaluator>),
    Obb(obb::ObbAp),
}

impl TaskEval {
    fn new(extra: &crate::detector::spec::Extra, names: &[String]) -> Result<Option<Self>, EvalError> {
        use crate::detector::spec::Extra;
        let (kind, keypoints, sigmas) = match extra {
            Extra::None => return Ok(None),
            Extra::Mask { .. } => (coco::Kind::Masks, (0, 0), None),
            // COCO's sigmas for its 17 keypoints; otherwise 1/K each, as Ultralytics' val.
            Extra::Keypoints { count, dims } => {
                (coco::Kind::Keypoints, (*count, *dims), (*count != 17).then(|| vec![1.0 / *count as f64; *count]))
            }
            Extra::Angle => (coco::Kind::Obb, (0, 0), None),
        };
        let engine = match kind {
            coco::Kind::Obb => TaskEngine::Obb(obb::ObbAp::new(names.len())),
            _ => TaskEngine::Coco(Box::new(Evaluator::of(kind, names, sigmas.clone())?)),
        };
        Ok(Some(Self { engine, kind, keypoints, sigmas, truth: Vec::new(), found: Vec::new() }))
    }

    /// The image's objects with their shapes, in pixels: the labels' polygons, keypoints or
    /// corners, and what the model found.
    fn add(
        &mut self,
        sample: &dataset::Sample,
        boxes: &[coco::Truth],
        detections: &crate::detector::Detections,
        classes: &ClassMap,
    ) -> Result<(), EvalError> {
        use coco::Shape;
        let (w, h) = (f64::from(detections.width), f64::from(detections.height));
        let (count, dims) = self.keypoints;
        self.truth.clear();
        for (object, t) in sample.objects.iter().zip(boxes) {
            let p = &object.points;
            let shape = match self.kind {
                coco::Kind::Masks if p.len() >= 6 => {
                    Shape::Polygons(vec![p.chunks(2).flat_map(|v| [v[0] * w, v[1] * h]).collect()])
                }
                coco::Kind::Keypoints if count > 0 && p.len() == count * dims => Shape::Keypoints(
                    p.chunks(dims).flat_map(|v| [v[0] * w, v[1] * h, if dims == 3 { v[2] } else { 2.0 }]).collect(),
                ),
                coco::Kind::Obb if p.len() == 8 => {
                    let c: Vec<(f64, f64)> = p.chunks(2).map(|v| (v[0] * w, v[1] * h)).collect();
                    let (cx, cy) = (c.iter().map(|v| v.0).sum::<f64>() / 4.0, c.iter().map(|v| v.1).sum::<f64>() / 4.0);
                    let side = |a: (f64, f64), b: (f64, f64)| ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
                    let angle = (c[1].1 - c[0].1).atan2(c[1].0 - c[0].0);
                    Shape::Obb([cx, cy, side(c[0], c[1]), side(c[1], c[2]), angle])
                }
                // A label without the task's values: its box stands for it.
                _ => {
                    let [x, y, bw, bh] = t.xywh;
                    match self.kind {
                        coco::Kind::Obb => Shape::Obb([x + bw / 2.0, y + bh / 2.0, bw, bh, 0.0]),
                        _ => Shape::Polygons(vec![vec![x, y, x + bw, y, x + bw, y + bh, x, y + bh]]),
                    }
                }
            };
            self.truth.push((*t, shape));
        }
        self.found.clear();
        for o in &detections.objects {
            let Some(class) = classes.to_data.get(o.class_id as usize).copied().flatten() else { continue };
            let b = o.bbox;
            let xywh = [f64::from(b.x1), f64::from(b.y1), f64::from(b.x2 - b.x1), f64::from(b.y2 - b.y1)];
            let shape = if let Some(m) = &o.mask {
                Shape::Polygons(m.iter().map(|p| p.iter().map(|&v| f64::from(v)).collect()).collect())
            } else if let Some(k) = &o.keypoints {
                Shape::Keypoints(
                    k.iter()
                        .flat_map(|k| [f64::from(k.x), f64::from(k.y), f64::from(k.score.unwrap_or(1.0))])
                        .collect(),
                )
            } else if let Some(r) = &o.rotated_box {
                Shape::Obb([r.cx, r.cy, r.w, r.h, r.angle].map(f64::from))
            } else {
                Shape::None
            };
            self.found.push((coco::Found { class, xywh, score: f64::from(o.score) }, shape));
        }
        match &mut self.engine {
            TaskEngine::Coco(e) => {
                e.add_shaped(sample.id, detections.width, detections.height, &self.truth, &self.found)?;
            }
            TaskEngine::Obb(e) => {
                let rbox = |s: &Shape| match s {
                    Shape::Obb(r) => Some(crate::detector::rotated::Rbox {
                        cx: r[0] as f32,
                        cy: r[1] as f32,
                        w: r[2] as f32,
                        h: r[3] as f32,
                        angle: r[4] as f32,
                    }),
                    _ => None,
                };
                let truth: Vec<_> = self.truth.iter().filter_map(|(t, s)| Some((t.class, rbox(s)?))).collect();
                let found: Vec<_> = self.found.iter().filter_map(|(f, s)| Some((f.class, f.score, rbox(s)?))).collect();
                e.add(&truth, &found);
            }
        }
        Ok(())
    }

    fn finish(self, names: &[String]) -> Result<TaskMetrics, EvalError> {
        let named = |v: &[Option<f64>]| names.iter().cloned().zip(v.iter().copied()).collect();
        let (map50_95, map50, map75, stats, per_class) = match self.engine {
            TaskEngine::Coco(e) => {
                let m = e.finish()?;
                let stats = Metrics::STAT_NAMES.iter().copied().zip(m.stats()).collect();
                (m.map50_95, m.map50, m.map75, stats, named(&m.per_class))
            }
            TaskEngine::Obb(e) => {
                let m = e.finish();
                let stats = [("AP@[.50:.95]", m.map50_95), ("AP@.50", m.map50), ("AP@.75", m.map75)].into();
                (m.map50_95, m.map50, m.map75, stats, named(&m.per_class))
            }
        };
        Ok(TaskMetrics {
            iou_type: self.kind.as_str(),
            map50_95,
            map50,
            map75,
            stats,
            per_class,
            oks_sigmas: self.sigmas,
            note: match self.kind {
                coco::Kind::Masks => "mask IoU of the polygons, rasterised as pycocotools does",
                coco::Kind::Keypoints => "OKS, the truth's area 0.53 of its box as Ultralytics' val",
                _ => "probiou matching and AP as Ultralytics' OBB val computes them",
            },
        })
    }
}

/// The engine's version, as Cargo.lock pins it (reported with every result).
pub const HOTCOCO_VERSION: &str = "1.3.1";

impl Report {
    /// The terminal table.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "model      {}", self.model);
        let _ = writeln!(s, "data       {}", self.data);
        let _ = writeln!(
            s,
            "thresholds score >= {}, NMS IoU {}, at most {} per image; AP over IoU {}, maxDets {:?}; JPEG_SCALED_DECODE={}",
            self.thresholds.score,
            self.thresholds.nms_iou,
            self.thresholds.max_detections,
            self.thresholds.ap_iou,
            self.thresholds.max_dets,
            self.jpeg_scaled_decode
        );
        let _ = writeln!(
            s,
            "images     {} evaluated of {} ({} objects; {:.1} ms per image, inference {:.1} ms, decode {:.1} ms)",
            self.evaluated,
            self.images,
            self.objects,
            self.ms_per_image,
            self.stages.inference_ms,
            self.stages.decode_ms
        );
        let _ = writeln!(s);
        for (name, value) in Metrics::STAT_NAMES.iter().zip(self.metrics.stats()) {
            let _ = writeln!(s, "  {name:<14} {}", fmt_metric(value));
        }
        let _ = writeln!(s);
        let width = self.names.iter().map(|k| k.chars().count()).max().unwrap_or(5).max(5);
        let _ = writeln!(s, "  {:<width$}  AP50-95  AP50", "class");
        let show = |v: Option<f64>| v.map_or_else(|| "    -".to_string(), |v| format!("{v:.3}"));
        for (i, name) in self.names.iter().enumerate() {
            let (ap, ap50) = (
                self.metrics.per_class.get(i).copied().flatten(),
                self.metrics.per_class_ap50.get(i).copied().flatten(),
            );
            let _ = writeln!(s, "  {name:<width$}  {:>7}  {:>5}", show(ap), show(ap50));
        }
        if let Some(t) = &self.task {
            let _ = writeln!(s);
            let _ = writeln!(s, "  {} ({})", t.iou_type, t.note);
            for (name, value) in ["AP@[.50:.95]", "AP@.50", "AP@.75"].iter().zip([t.map50_95, t.map50, t.map75]) {
                let _ = writeln!(s, "  {name:<14} {}", fmt_metric(value));
            }
            for name in &self.names {
                let _ = writeln!(s, "  {name:<width$}  {:>7}", show(t.per_class.get(name).copied().flatten()));
            }
        }
        let mut notes = Vec::new();
        if !self.classes.data_only.is_empty() {
            notes.push(format!(
                "the model has no class named {}",
                crate::error::excerpt(&self.classes.data_only.join(", "))
            ));
        }
        if !self.classes.model_only.is_empty() {
            notes.push(format!(
                "the set has no class named {} ({} detections not scored)",
                crate::error::excerpt(&self.classes.model_only.join(", ")),
                self.detections_unscored
            ));
        }
        if self.classes.matched_by == "position" {
            notes.push("the model has no class names: classes matched by position".into());
        }
        if self.boxes_clamped > 0 {
            notes.push(format!(
                "{} ground-truth boxes reached outside their image and were clamped",
                self.boxes_clamped
            ));
        }
        if self.unlabelled > 0 {
            notes.push(format!("{} images have no label file (background images)", self.unlabelled));
        }
        if self.size_mismatches > 0 {
            notes.push(format!("{} images decode to another size than the file records", self.size_mismatches));
        }
        if !self.failed.is_empty() {
            let names: Vec<String> =
                self.failed.iter().take(5).map(|f| format!("{} ({}: {})", f.name, f.code, f.message)).collect();
            notes.push(format!(
                "{} images failed and were left out ({} objects): {}{}",
                self.failed.len(),
                self.objects_skipped,
                names.join("; "),
                if self.failed.len() > 5 { "; …" } else { "" }
            ));
        }
        if !notes.is_empty() {
            let _ = writeln!(s);
            for n in notes {
                let _ = writeln!(s, "note: {n}");
            }
        }
        s
    }
}

fn fmt_metric(v: f64) -> String {
    if v < 0.0 { "    - (nothing to measure)".into() } else { format!("{v:.3}") }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_reported_engine_version_is_the_locked_one() {
        let lock = include_str!("../../Cargo.lock");
        let at = lock.find("name = \"hotcoco\"").expect("hotcoco in Cargo.lock");
        let version = lock[at..].lines().nth(1).unwrap_or_default();
        assert_eq!(version, format!("version = \"{}\"", super::HOTCOCO_VERSION));
    }
}
