//! Candidates → objects: non-maximum suppression by the model's policy, the boxes mapped back
//! through the exact transform each image went through ([`Transform`]: stretch or letterbox,
//! with padding) and clamped to the image, one place for every head.

use serde::{Deserialize, Serialize};

pub use super::heads::BBox;
use super::heads::{Candidate, Output};
use super::mask::MaskScratch;
use super::rotated::Rbox;
use super::spec::{Extra, Head, ModelSpec, Nms};
pub use super::transform::Transform;

/// One detected object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Object {
    /// Class name (from the model, a labels file, or `class_<id>`).
    pub label: String,
    /// Class id, as the model numbers its classes.
    pub class_id: u32,
    /// Confidence 0..1.
    pub score: f32,
    /// Box in original-image pixels (for a rotated box, the axis-aligned box around it, clamped
    /// to the image).
    #[serde(rename = "box")]
    pub bbox: BBox,
    /// Segment models: the mask as polygons in original pixels, `[x1, y1, x2, y2, …]` each, the
    /// outer contour of each connected part (COCO's `segmentation` form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<Vec<Vec<f32>>>,
    /// Pose models: the keypoints in original pixels, in the model's order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keypoints: Option<Vec<Keypoint>>,
    /// OBB models: the rotated box in original pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_box: Option<RotatedBox>,
}

impl Object {
    /// An object with a box only.
    pub fn boxed(label: String, class_id: u32, score: f32, bbox: BBox) -> Self {
        Object { label, class_id, score, bbox, mask: None, keypoints: None, rotated_box: None }
    }
}

/// One keypoint of a pose model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Keypoint {
    /// x in original pixels (clamped to the image, as the reference clips it).
    pub x: f32,
    /// y in original pixels.
    pub y: f32,
    /// The model's confidence that the point is visible (models with 3 values per keypoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    /// Its name, where known (COCO's 17 person keypoints, or the model's `kpt_names`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// An oriented box in original pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RotatedBox {
    /// Centre x.
    pub cx: f32,
    /// Centre y.
    pub cy: f32,
    /// Width along the box's own x axis.
    pub w: f32,
    /// Height along its own y axis.
    pub h: f32,
    /// Rotation in radians, in [0, π/2) (Ultralytics' `regularize_rboxes`).
    pub angle: f32,
    /// The four corners, `[x, y]` each.
    pub corners: [[f32; 2]; 4],
}

/// Candidates (any order) → objects in image pixels, best first: NMS by `spec.nms` in the head's
/// frame (as the reference implementations do it, before clipping; rotated boxes by their
/// probiou), at most `spec.max_detections`, mapped back through `transform`, clamped, named, with
/// the task's mask, keypoints or rotated box read from `outputs` (the head's, in
/// [`Head::outputs`] order). Boxes that are empty inside the image, and objects whose mask is
/// empty (as the reference drops them), are dropped.
pub fn finish(
    candidates: &mut Vec<Candidate>,
    spec: &ModelSpec,
    transform: &Transform,
    outputs: &[Output<'_>],
    scratch: &mut MaskScratch,
) -> Vec<Object> {
    // Stable: equal scores keep the head's order.
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    candidates.truncate(MAX_NMS_CANDIDATES);
    let extra = spec.head.extra();
    let kept = match extra {
        Extra::Angle => super::rotated::nms(candidates, spec.nms, spec.nms_iou, spec.max_detections),
        _ => nms(candidates, spec.nms, spec.nms_iou, spec.max_detections),
    };
    let frame = spec.head.frame();
    let mut objects = Vec::with_capacity(kept.len());
    for c in kept {
        let mut o = Object::boxed(spec.label(c.class), c.class, c.score, transform.unmap(c.bbox, frame));
        match extra {
            Extra::None => {}
            Extra::Mask { .. } => {
                let (Some(head), Some(protos)) = (outputs.first(), outputs.get(1)) else { continue };
                task_channels(&spec.head, *head, c.index, scratch.coefficients());
                let polygons = scratch.polygons(*protos, c.bbox, transform);
                if polygons.is_empty() {
                    continue;
                }
                o.mask = Some(polygons);
            }
            Extra::Keypoints { count, dims } => {
                let Some(head) = outputs.first() else { continue };
                let values = scratch.coefficients();
                task_channels(&spec.head, *head, c.index, values);
                o.keypoints = Some(keypoints(values, *count, *dims, &spec.keypoint_names, transform));
            }
            Extra::Angle => {
                let r = transform.unmap_rotated(Rbox::of(&c)).regularized();
                let corners = r.corners();
                let (w, h) = (transform.width as f32, transform.height as f32);
                let xs = corners.map(|p| p[0]);
                let ys = corners.map(|p| p[1]);
                let min = |v: [f32; 4]| v.into_iter().fold(f32::INFINITY, f32::min);
                let max = |v: [f32; 4]| v.into_iter().fold(f32::NEG_INFINITY, f32::max);
                o.bbox = BBox {
                    x1: min(xs).clamp(0.0, w),
                    y1: min(ys).clamp(0.0, h),
                    x2: max(xs).clamp(0.0, w),
                    y2: max(ys).clamp(0.0, h),
                };
                o.rotated_box = Some(RotatedBox { cx: r.cx, cy: r.cy, w: r.w, h: r.h, angle: r.angle, corners });
            }
        }
        if o.bbox.area() > 0.0 {
            objects.push(o);
        }
    }
    objects
}

/// The task channels of the detection at `index` of the head's first output, into `out`.
fn task_channels(head: &Head, output: Output<'_>, index: u32, out: &mut Vec<f32>) {
    out.clear();
    let index = index as usize;
    match head {
        Head::Anchors { classes, extra, .. } => {
            let anchors = output.dims.last().copied().unwrap_or(0);
            let base = 4 + classes;
            out.extend((0..extra.channels()).filter_map(|j| output.data.get((base + j) * anchors + index).copied()));
        }
        Head::Rows { extra, .. } => {
            let len = 6 + extra.channels();
            out.extend(output.data.iter().skip(index * len + 6).take(extra.channels()).copied());
        }
        _ => {}
    }
}

/// A pose model's keypoint values (`count` × `dims`, input pixels) → keypoints in the image,
/// clipped to it as Ultralytics' `scale_coords` clips them.
fn keypoints(values: &[f32], count: usize, dims: usize, names: &[String], t: &Transform) -> Vec<Keypoint> {
    values
        .chunks_exact(dims)
        .take(count)
        .enumerate()
        .map(|(i, v)| {
            let [x, y] = t.unmap_point(v[0], v[1]);
            Keypoint { x, y, score: (dims == 3).then(|| v[2]), name: names.get(i).cloned() }
        })
        .collect()
}

/// At most this many candidates enter NMS, the best (Ultralytics' `max_nms`): bounds its
/// quadratic cost whatever the threshold.
pub const MAX_NMS_CANDIDATES: usize = 30_000;

/// Greedy NMS on candidates sorted by descending score, keeping at most `max` of them: a
/// candidate is dropped when it overlaps a kept one (of the same class, for [`Nms::PerClass`]) by
/// more than `iou`.
pub fn nms(sorted: &[Candidate], policy: Nms, iou: f32, max: usize) -> Vec<Candidate> {
    let mut kept: Vec<Candidate> = Vec::with_capacity(sorted.len().min(max));
    for &cand in sorted {
        if kept.len() >= max {
            break;
        }
        let suppressed = match policy {
            Nms::None => false,
            Nms::Agnostic => kept.iter().any(|k| k.bbox.iou(&cand.bbox) > iou),
            Nms::PerClass => kept.iter().any(|k| k.class == cand.class && k.bbox.iou(&cand.bbox) > iou),
        };
        if !suppressed {
            kept.push(cand);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::spec::Frame;

    #[test]
    fn iou_of_known_boxes() {
        let a = BBox { x1: 0.0, y1: 0.0, x2: 10.0, y2: 10.0 };
        let b = BBox { x1: 5.0, y1: 0.0, x2: 15.0, y2: 10.0 };
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(a.iou(&a), 1.0);
        let far = BBox { x1: 20.0, y1: 20.0, x2: 30.0, y2: 30.0 };
        assert_eq!(a.iou(&far), 0.0);
    }

    fn cand(x1: f32, y1: f32, x2: f32, y2: f32, score: f32, class: u32) -> Candidate {
        Candidate { bbox: BBox { x1, y1, x2, y2 }, score, class, index: 0, angle: 0.0 }
    }

    #[test]
    fn nms_policies() {
        let sorted = || {
            vec![
                cand(100.0, 100.0, 300.0, 300.0, 0.9, 0),
                cand(110.0, 110.0, 300.0, 300.0, 0.8, 1), // overlaps the first, other class
                cand(105.0, 105.0, 300.0, 300.0, 0.7, 0), // overlaps the first, same class
                cand(400.0, 0.0, 500.0, 100.0, 0.5, 1),
            ]
        };
        let classes = |v: Vec<Candidate>| v.iter().map(|c| c.score).collect::<Vec<_>>();
        assert_eq!(classes(nms(&sorted(), Nms::Agnostic, 0.4, 300)), vec![0.9, 0.5]);
        assert_eq!(classes(nms(&sorted(), Nms::PerClass, 0.4, 300)), vec![0.9, 0.8, 0.5]);
        assert_eq!(classes(nms(&sorted(), Nms::None, 0.4, 300)), vec![0.9, 0.8, 0.7, 0.5]);
        assert_eq!(classes(nms(&sorted(), Nms::None, 0.4, 2)), vec![0.9, 0.8]);
    }

    fn stretch(width: u32, height: u32) -> Transform {
        Transform {
            gain_x: 512.0 / width as f32,
            gain_y: 512.0 / height as f32,
            pad_x: 0.0,
            pad_y: 0.0,
            input_width: 512,
            input_height: 512,
            width,
            height,
        }
    }

    #[test]
    fn stretch_unmaps_per_axis_and_clamps() {
        let t = stretch(1024, 256);
        let b = t.unmap(BBox { x1: 100.0, y1: 100.0, x2: 300.0, y2: 300.0 }, Frame::InputPixels);
        assert_eq!(b, BBox { x1: 200.0, y1: 50.0, x2: 600.0, y2: 150.0 });
        let b = t.unmap(BBox { x1: 400.0, y1: -5.0, x2: 530.0, y2: 100.0 }, Frame::InputPixels);
        assert_eq!(b, BBox { x1: 800.0, y1: 0.0, x2: 1024.0, y2: 50.0 });
        let b = t.unmap(BBox { x1: 0.25, y1: 0.5, x2: 0.5, y2: 1.0 }, Frame::Normalized);
        assert_eq!(b, BBox { x1: 256.0, y1: 128.0, x2: 512.0, y2: 256.0 });
        let b = t.unmap(BBox { x1: 1.0, y1: 2.0, x2: 3000.0, y2: 4.0 }, Frame::OriginalPixels);
        assert_eq!(b, BBox { x1: 1.0, y1: 2.0, x2: 1024.0, y2: 4.0 });
    }

    fn spec_with(extra: Extra, classes: usize) -> ModelSpec {
        use crate::detector::onnx::{Dim, ModelInfo, Tensor, dtype};
        let t = |name: &str, dims: &[i64]| Tensor {
            name: name.into(),
            elem_type: dtype::FLOAT,
            dims: dims.iter().map(|&d| Dim::Fixed(d)).collect(),
        };
        let info = ModelInfo {
            inputs: vec![t("images", &[1, 3, 320, 320])],
            outputs: vec![t("output0", &[1, (4 + classes + extra.channels()) as i64, 2100])],
            metadata: vec![],
        };
        let mut spec = crate::detector::spec::probe(std::path::Path::new("m.onnx"), &info, &Default::default())
            .expect("a detector");
        spec.head = Head::Anchors { output: "output0".into(), classes, extra };
        spec
    }

    /// 400x300 into 320x320: gain 0.8, 40 px above and below.
    fn letterbox() -> Transform {
        Transform {
            gain_x: 0.8,
            gain_y: 0.8,
            pad_x: 0.0,
            pad_y: 40.0,
            input_width: 320,
            input_height: 320,
            width: 400,
            height: 300,
        }
    }

    #[test]
    fn keypoints_map_back_and_those_in_the_padding_are_clipped() {
        let spec = spec_with(Extra::Keypoints { count: 2, dims: 3 }, 1);
        // One anchor: box, score, keypoint (160, 200, 0.9) and one in the top padding (8, 10, 0.1).
        let data = [160.0, 200.0, 40.0, 40.0, 0.9, 160.0, 200.0, 0.9, 8.0, 10.0, 0.1];
        let out = [Output { dims: &[1, 11, 1], data: &data }];
        let mut c = vec![Candidate {
            bbox: BBox { x1: 140.0, y1: 180.0, x2: 180.0, y2: 220.0 },
            score: 0.9,
            class: 0,
            index: 0,
            angle: 0.0,
        }];
        let objects = finish(&mut c, &spec, &letterbox(), &out, &mut MaskScratch::default());
        let k = objects[0].keypoints.as_ref().unwrap();
        assert_eq!((k[0].x, k[0].y, k[0].score), (200.0, 200.0, Some(0.9)));
        assert_eq!((k[1].x, k[1].y), (10.0, 0.0), "clipped to the image");
        assert_eq!(objects[0].bbox, BBox { x1: 175.0, y1: 175.0, x2: 225.0, y2: 225.0 });
    }

    #[test]
    fn rotated_boxes_map_back_regularized_with_their_axis_aligned_box() {
        let spec = spec_with(Extra::Angle, 1);
        let t = letterbox();
        // A 100x20 bar at a quarter turn, centred at input (160, 160) = photo (200, 150).
        let mut c = vec![Candidate {
            bbox: BBox { x1: 110.0, y1: 150.0, x2: 210.0, y2: 170.0 },
            score: 0.9,
            class: 0,
            index: 0,
            angle: std::f32::consts::FRAC_PI_2,
        }];
        let objects = finish(&mut c, &spec, &t, &[], &mut MaskScratch::default());
        let r = objects[0].rotated_box.unwrap();
        assert!((r.cx - 200.0).abs() < 1e-3 && (r.cy - 150.0).abs() < 1e-3);
        // A quarter turn regularized: angle 0, sides swapped (25 wide, 125 high in the photo).
        assert!(r.angle.abs() < 1e-5 && (r.w - 25.0).abs() < 1e-3 && (r.h - 125.0).abs() < 1e-3, "{r:?}");
        let b = objects[0].bbox;
        assert!((b.x1 - 187.5).abs() < 1e-3 && (b.x2 - 212.5).abs() < 1e-3, "{b:?}");
        assert!((b.y1 - 87.5).abs() < 1e-3 && (b.y2 - 212.5).abs() < 1e-3, "{b:?}");
    }

    #[test]
    fn masks_come_from_the_coefficients_and_empty_masks_drop_their_object() {
        let spec = spec_with(Extra::Mask { protos: "output1".into(), channels: 1 }, 1);
        let t = Transform { pad_y: 0.0, width: 320, height: 320, gain_y: 1.0, gain_x: 1.0, ..letterbox() };
        // Prototypes 80x80: positive left of x = 40 (input x = 160).
        let protos: Vec<f32> = (0..80 * 80).map(|i| if i % 80 < 40 { 1.0 } else { -1.0 }).collect();
        // Two anchors: coefficient +1 (the left half) and −1 on a box inside the left half (empty).
        #[rustfmt::skip]
        let head = [
            160.0, 60.0,   // cx
            160.0, 60.0,   // cy
            320.0, 40.0,   // w
            320.0, 40.0,   // h
            0.9, 0.8,      // score
            1.0, -1.0,     // coefficient
        ];
        let out = [Output { dims: &[1, 6, 2], data: &head }, Output { dims: &[1, 1, 80, 80], data: &protos }];
        let mut c = vec![];
        crate::detector::heads::decode(&spec.head, &out, 0.25, &mut c).unwrap();
        let objects = finish(&mut c, &spec, &t, &out, &mut MaskScratch::default());
        assert_eq!(objects.len(), 1, "the second object's mask is empty");
        let mask = objects[0].mask.as_ref().unwrap();
        assert_eq!(mask, &vec![vec![0.0, 0.0, 160.0, 0.0, 160.0, 320.0, 0.0, 320.0]]);
    }

    #[test]
    fn letterbox_unmaps_through_the_padding() {
        let t = letterbox();
        let b = t.unmap(BBox { x1: 0.0, y1: 40.0, x2: 320.0, y2: 280.0 }, Frame::InputPixels);
        assert_eq!(b, BBox { x1: 0.0, y1: 0.0, x2: 400.0, y2: 300.0 });
        // A box in the padding is empty once clamped.
        let b = t.unmap(BBox { x1: 10.0, y1: 0.0, x2: 50.0, y2: 30.0 }, Frame::InputPixels);
        assert_eq!(b.area(), 0.0);
    }
}
