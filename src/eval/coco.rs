//! COCO box mAP exactly as pycocotools computes it, fed one image at a time.
//!
//! The matching and accumulation are the `hotcoco` crate's (MIT): a pycocotools-compatible engine
//! whose `StreamingEval` matches each image as soon as its detections exist and keeps ~20 bytes
//! per detection, so memory does not grow with the images' pixels. Chosen over a hand-written
//! matcher because it reproduces pycocotools bit for bit where the details are easy to get
//! wrong (numpy's `linspace` grids, crowd matching, the per-category `maxDets` cut, the -1
//! sentinels); `tests/eval.rs` holds it to pycocotools' own numbers on stored cases.
//! This module only translates objdet's boxes into its records and its arrays into [`Metrics`].

use std::collections::BTreeMap;

use hotcoco::params::IouType;
use hotcoco::{Annotation, Category, EvalMode, Image, Params, StreamingEval};

/// One ground-truth object of an image, in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Truth {
    /// Category index (into the evaluator's category list).
    pub class: usize,
    /// `[x, y, w, h]` in pixels.
    pub xywh: [f64; 4],
    /// The annotated area (COCO files give a segmentation's); `None`: the box's.
    pub area: Option<f64>,
    /// COCO's `iscrowd`.
    pub iscrowd: bool,
}

/// One detection, in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Found {
    /// Category index.
    pub class: usize,
    /// `[x, y, w, h]` in pixels.
    pub xywh: [f64; 4],
    /// Confidence.
    pub score: f64,
}

/// What a task adds to an object for its own metric (none for boxes), in pixels.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Shape {
    /// Boxes only.
    #[default]
    None,
    /// A mask as polygons (`[x1, y1, x2, y2, …]` each): pycocotools' `segm`.
    Polygons(Vec<Vec<f64>>),
    /// Keypoints `[x, y, v]` each (v: visibility for the truth, the confidence for a detection):
    /// pycocotools' `keypoints` (OKS).
    Keypoints(Vec<f64>),
    /// An oriented box `[cx, cy, w, h, angle]`: hotcoco's rotated-rectangle IoU.
    Obb([f64; 5]),
}

/// Which metric an [`Evaluator`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Box IoU.
    Boxes,
    /// Mask IoU.
    Masks,
    /// Keypoint OKS.
    Keypoints,
    /// Rotated-box IoU.
    Obb,
}

impl Kind {
    /// pycocotools' `iouType` name (hotcoco's for `obb`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Boxes => "bbox",
            Kind::Masks => "segm",
            Kind::Keypoints => "keypoints",
            Kind::Obb => "obb",
        }
    }
}

/// Why the engine refused a batch.
#[derive(Debug, thiserror::Error)]
#[error("the COCO evaluation engine refused the detections: {0}")]
pub struct EngineError(#[source] pub hotcoco::Error);

/// The headline numbers, as pycocotools' `COCOeval.summarize()` prints them (-1: nothing to
/// measure, e.g. no small objects), and AP per category.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Metrics {
    /// AP @[.50:.95], all areas, 100 detections.
    pub map50_95: f64,
    /// AP @ .50.
    pub map50: f64,
    /// AP @ .75.
    pub map75: f64,
    /// AP @[.50:.95] of objects under 32² px.
    pub map_small: f64,
    /// ... between 32² and 96² px.
    pub map_medium: f64,
    /// ... over 96² px.
    pub map_large: f64,
    /// AR @[.50:.95] with 1 detection per image.
    pub ar1: f64,
    /// ... 10.
    pub ar10: f64,
    /// ... 100.
    pub ar100: f64,
    /// AR @100 of small objects.
    pub ar_small: f64,
    /// ... medium.
    pub ar_medium: f64,
    /// ... large.
    pub ar_large: f64,
    /// AP @[.50:.95] per category (`None`: no ground truth of it, pycocotools' -1).
    pub per_class: Vec<Option<f64>>,
    /// AP @ .50 per category.
    pub per_class_ap50: Vec<Option<f64>>,
    /// Precision at the 101 recall points, IoU .50, per category (for the PR plot).
    pub pr50: Vec<Vec<f64>>,
}

/// Feeds images to the engine in batches and computes [`Metrics`] at the end.
pub struct Evaluator {
    stream: StreamingEval,
    kind: Kind,
    categories: usize,
    batch_images: Vec<Image>,
    batch_truth: Vec<Annotation>,
    batch_found: Vec<Annotation>,
}

/// Images matched per engine call (its per-call setup amortized; memory stays small).
const BATCH: usize = 64;

impl Evaluator {
    /// An evaluator over `categories` (named; ids are their positions) with pycocotools' default
    /// parameters for boxes: IoU .50:.05:.95, 101 recall points, maxDets 1/10/100, COCO's areas.
    pub fn new(categories: &[String]) -> Result<Self, EngineError> {
        Self::of(Kind::Boxes, categories, None)
    }

    /// An evaluator of `kind`; for keypoints, OKS with `sigmas` (one per keypoint; `None`:
    /// COCO's 17). Objects are added with their [`Shape`] through [`Evaluator::add_shaped`].
    pub fn of(kind: Kind, categories: &[String], sigmas: Option<Vec<f64>>) -> Result<Self, EngineError> {
        let cats = categories
            .iter()
            .enumerate()
            .map(|(i, name)| Category { id: i as u64 + 1, name: name.clone(), ..Default::default() })
            .collect();
        let iou = match kind {
            Kind::Boxes => IouType::Bbox,
            Kind::Masks => IouType::Segm,
            Kind::Keypoints => IouType::Keypoints,
            Kind::Obb => IouType::Obb,
        };
        let mut params = Params::new(iou);
        if let Some(sigmas) = sigmas {
            params.kpt_oks_sigmas = sigmas;
        }
        let stream = StreamingEval::new(params, EvalMode::Coco, cats).map_err(EngineError)?;
        Ok(Self {
            stream,
            kind,
            categories: categories.len(),
            batch_images: Vec::new(),
            batch_truth: Vec::new(),
            batch_found: Vec::new(),
        })
    }

    /// Adds one image (its id unique in the run) with its objects and what was found in it.
    /// Within an image, detections of equal score rank in the order given.
    pub fn add(
        &mut self,
        id: u64,
        width: u32,
        height: u32,
        truth: &[Truth],
        found: &[Found],
    ) -> Result<(), EngineError> {
        self.batch_images.push(Image { id, width, height, ..Default::default() });
        self.batch_truth.extend(truth.iter().map(|t| Annotation {
            image_id: id,
            category_id: t.class as u64 + 1,
            bbox: Some(t.xywh),
            area: Some(t.area.unwrap_or(t.xywh[2] * t.xywh[3])),
            iscrowd: t.iscrowd,
            ..Default::default()
        }));
        self.batch_found.extend(found.iter().map(|f| Annotation {
            image_id: id,
            category_id: f.class as u64 + 1,
            bbox: Some(f.xywh),
            score: Some(f.score),
            ..Default::default()
        }));
        if self.batch_images.len() >= BATCH { self.flush() } else { Ok(()) }
    }

    /// [`Evaluator::add`] for a task's metric: each object with its [`Shape`] (the truth's
    /// visibility and the detections' confidences in keypoints, a mask's polygons, a rotated box).
    pub fn add_shaped(
        &mut self,
        id: u64,
        width: u32,
        height: u32,
        truth: &[(Truth, Shape)],
        found: &[(Found, Shape)],
    ) -> Result<(), EngineError> {
        let kind = self.kind;
        let shaped = |a: &mut Annotation, shape: &Shape, is_truth: bool| match shape {
            Shape::None => {}
            Shape::Polygons(p) => a.segmentation = Some(hotcoco::Segmentation::Polygon(p.clone())),
            Shape::Keypoints(k) => {
                a.num_keypoints = Some(k.chunks(3).filter(|v| v.get(2).is_some_and(|&v| v > 0.0)).count() as u32);
                a.keypoints = Some(k.clone());
                // Ultralytics' pose val takes the truth's area as 0.53 of its box's.
                if is_truth && kind == Kind::Keypoints {
                    a.area = a.bbox.map(|b| b[2] * b[3] * 0.53);
                }
            }
            Shape::Obb(r) => a.obb = Some(Box::new(*r)),
        };
        self.batch_images.push(Image { id, width, height, ..Default::default() });
        for (t, shape) in truth {
            let mut a = Annotation {
                image_id: id,
                category_id: t.class as u64 + 1,
                bbox: Some(t.xywh),
                area: if kind == Kind::Boxes { Some(t.area.unwrap_or(t.xywh[2] * t.xywh[3])) } else { t.area },
                iscrowd: t.iscrowd,
                ..Default::default()
            };
            shaped(&mut a, shape, true);
            self.batch_truth.push(a);
        }
        for (f, shape) in found {
            let mut a = Annotation {
                image_id: id,
                category_id: f.class as u64 + 1,
                bbox: Some(f.xywh),
                score: Some(f.score),
                ..Default::default()
            };
            shaped(&mut a, shape, false);
            self.batch_found.push(a);
        }
        if self.batch_images.len() >= BATCH { self.flush() } else { Ok(()) }
    }

    fn flush(&mut self) -> Result<(), EngineError> {
        if self.batch_images.is_empty() {
            return Ok(());
        }
        let (images, truth, found) = (
            std::mem::take(&mut self.batch_images),
            std::mem::take(&mut self.batch_truth),
            std::mem::take(&mut self.batch_found),
        );
        self.stream.update(images, truth, found).map_err(EngineError)
    }

    /// The metrics over every image added.
    pub fn finish(mut self) -> Result<Metrics, EngineError> {
        self.flush()?;
        let mut ev = self.stream.finalize();
        ev.accumulate();
        let _ = ev.summarize_lines();
        let mut stats: Vec<f64> = ev.stats().map(<[f64]>::to_vec).unwrap_or_else(|| vec![-1.0; 12]);
        if self.kind == Kind::Keypoints && stats.len() == 10 {
            // pycocotools' keypoint summary has no small objects and AR@1/@10: AP, AP50, AP75,
            // APm, APl, AR, AR50, AR75, ARm, ARl — laid out here as the box summary's twelve.
            let k = stats.clone();
            stats = vec![k[0], k[1], k[2], -1.0, k[3], k[4], -1.0, -1.0, k[5], -1.0, k[8], k[9]];
        }
        let s = |i: usize| stats.get(i).copied().unwrap_or(-1.0);
        let (mut per_class, mut per_class_ap50, mut pr50) =
            (vec![None; self.categories], vec![None; self.categories], vec![Vec::new(); self.categories]);
        if let Some(acc) = ev.accumulated() {
            let shape = acc.shape;
            let m = shape.m.saturating_sub(1);
            let position: BTreeMap<u64, usize> = acc.cat_ids.iter().enumerate().map(|(k, &id)| (id, k)).collect();
            for class in 0..self.categories {
                let Some(&k) = position.get(&(class as u64 + 1)) else { continue };
                let mean = |ts: std::ops::Range<usize>| {
                    let v: Vec<f64> = ts
                        .flat_map(|t| (0..shape.r).map(move |r| (t, r)))
                        .map(|(t, r)| acc.precision[shape.precision_idx(t, r, k, 0, m)])
                        .filter(|&p| p > -1.0)
                        .collect();
                    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
                };
                per_class[class] = mean(0..shape.t);
                per_class_ap50[class] = mean(0..1.min(shape.t));
                pr50[class] = (0..shape.r).map(|r| acc.precision[shape.precision_idx(0, r, k, 0, m)]).collect();
            }
        }
        Ok(Metrics {
            map50_95: s(0),
            map50: s(1),
            map75: s(2),
            map_small: s(3),
            map_medium: s(4),
            map_large: s(5),
            ar1: s(6),
            ar10: s(7),
            ar100: s(8),
            ar_small: s(9),
            ar_medium: s(10),
            ar_large: s(11),
            per_class,
            per_class_ap50,
            pr50,
        })
    }
}

impl Metrics {
    /// The twelve headline numbers in pycocotools' `stats` order.
    pub fn stats(&self) -> [f64; 12] {
        [
            self.map50_95,
            self.map50,
            self.map75,
            self.map_small,
            self.map_medium,
            self.map_large,
            self.ar1,
            self.ar10,
            self.ar100,
            self.ar_small,
            self.ar_medium,
            self.ar_large,
        ]
    }

    /// pycocotools' names for [`Metrics::stats`].
    pub const STAT_NAMES: [&'static str; 12] = [
        "AP@[.50:.95]",
        "AP@.50",
        "AP@.75",
        "AP small",
        "AP medium",
        "AP large",
        "AR@1",
        "AR@10",
        "AR@100",
        "AR small",
        "AR medium",
        "AR large",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(class: usize, x: f64, y: f64, w: f64, h: f64) -> Truth {
        Truth { class, xywh: [x, y, w, h], area: None, iscrowd: false }
    }
    fn f(class: usize, x: f64, y: f64, w: f64, h: f64, score: f64) -> Found {
        Found { class, xywh: [x, y, w, h], score }
    }
    fn run(cats: usize, images: &[(Vec<Truth>, Vec<Found>)]) -> Metrics {
        let names: Vec<String> = (0..cats).map(|i| format!("c{i}")).collect();
        let mut e = Evaluator::new(&names).unwrap();
        for (i, (truth, found)) in images.iter().enumerate() {
            e.add(i as u64, 640, 480, truth, found).unwrap();
        }
        e.finish().unwrap()
    }
    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn perfect_detections_score_one_and_none_score_zero() {
        let truth = vec![t(0, 10.0, 10.0, 100.0, 100.0), t(1, 200.0, 200.0, 50.0, 40.0)];
        let found: Vec<Found> = truth.iter().map(|g| Found { class: g.class, xywh: g.xywh, score: 0.9 }).collect();
        let m = run(2, &[(truth.clone(), found)]);
        assert!(close(m.map50_95, 1.0) && close(m.map50, 1.0) && close(m.ar100, 1.0), "{m:?}");
        assert!(m.per_class.iter().all(|ap| ap.is_some_and(|ap| close(ap, 1.0))), "{m:?}");
        let m = run(2, &[(truth, vec![])]);
        assert!(close(m.map50_95, 0.0) && close(m.ar100, 0.0), "{m:?}");
    }

    #[test]
    fn a_duplicate_is_a_false_positive_and_its_rank_decides() {
        // Two detections of one object: the better-scored one matches; the other is a false
        // positive after it, which does not lower precision at recall 1 → AP 1.
        let truth = vec![t(0, 0.0, 0.0, 100.0, 100.0)];
        let m = run(1, &[(truth.clone(), vec![f(0, 0.0, 0.0, 100.0, 100.0, 0.9), f(0, 1.0, 1.0, 100.0, 100.0, 0.8)])]);
        assert!(close(m.map50, 1.0), "{m:?}");
        // A false positive scored above the match: precision 1/2 at recall 1 → AP 0.5.
        let m = run(1, &[(truth, vec![f(0, 0.0, 0.0, 100.0, 100.0, 0.8), f(0, 300.0, 300.0, 10.0, 10.0, 0.9)])]);
        assert!(close(m.map50, 0.5), "{m:?}");
    }

    #[test]
    fn a_wrong_class_never_matches_and_a_class_without_truth_is_unmeasured() {
        let truth = vec![t(0, 0.0, 0.0, 100.0, 100.0)];
        let m = run(2, &[(truth, vec![f(1, 0.0, 0.0, 100.0, 100.0, 0.9)])]);
        assert!(close(m.map50_95, 0.0), "{m:?}");
        assert_eq!(m.per_class, vec![Some(0.0), None]);
    }

    #[test]
    fn iou_thresholds_are_inclusive_at_their_edges() {
        // A 100x100 box against one shifted so that IoU is exactly 0.5 (pycocotools matches at
        // iou >= threshold) and one just under it.
        // Overlap 100 x w, union 100*100*2 - 100*w: IoU 0.5 at w = 200/3.
        let truth = vec![t(0, 0.0, 0.0, 100.0, 100.0)];
        let shift = 100.0 - 200.0 / 3.0;
        let at = run(1, &[(truth.clone(), vec![f(0, shift, 0.0, 100.0, 100.0, 0.9)])]);
        assert!(close(at.map50, 1.0), "IoU exactly 0.5 matches at .50: {at:?}");
        assert!(close(at.map75, 0.0));
        let under = run(1, &[(truth, vec![f(0, shift + 0.5, 0.0, 100.0, 100.0, 0.9)])]);
        assert!(close(under.map50, 0.0), "{under:?}");
    }

    #[test]
    fn precision_is_interpolated_at_101_recall_points() {
        // Three objects; detections in score order: hit, miss, hit. Recall 1/3 then 2/3 (never
        // on a grid point); the precision envelope is 1 up to 1/3 and 2/3 up to 2/3: recall
        // points 0..=0.33 (34) give 1, 0.34..=0.66 (33) give 2/3, the last 34 give 0.
        let truth: Vec<Truth> = (0..3).map(|i| t(0, i as f64 * 60.0, 0.0, 50.0, 50.0)).collect();
        let found =
            vec![f(0, 0.0, 0.0, 50.0, 50.0, 0.9), f(0, 0.0, 300.0, 50.0, 50.0, 0.8), f(0, 60.0, 0.0, 50.0, 50.0, 0.7)];
        let m = run(1, &[(truth, found)]);
        let want = (34.0 + 33.0 * 2.0 / 3.0) / 101.0;
        assert!(close(m.map50, want), "{} vs {want}", m.map50);
        assert!(close(m.ar100, 2.0 / 3.0));
    }

    #[test]
    fn areas_split_small_medium_large_and_empty_ranges_are_unmeasured() {
        let truth = vec![t(0, 0.0, 0.0, 20.0, 20.0), t(0, 100.0, 100.0, 50.0, 50.0)];
        let found = vec![f(0, 0.0, 0.0, 20.0, 20.0, 0.9)];
        let m = run(1, &[(truth, found)]);
        assert!(close(m.map_small, 1.0) && close(m.map_medium, 0.0), "{m:?}");
        assert!(close(m.map_large, -1.0), "no large object: pycocotools' -1");
    }

    #[test]
    fn crowd_regions_neither_count_as_missed_nor_make_false_positives() {
        let crowd = Truth { iscrowd: true, ..t(0, 300.0, 300.0, 200.0, 100.0) };
        let truth = vec![t(0, 0.0, 0.0, 100.0, 100.0), crowd];
        let found = vec![f(0, 0.0, 0.0, 100.0, 100.0, 0.8), f(0, 320.0, 310.0, 50.0, 50.0, 0.9)];
        let m = run(1, &[(truth, found)]);
        assert!(close(m.map50, 1.0), "{m:?}");
    }
}
